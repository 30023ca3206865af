package ctl

import (
	"context"
	"errors"
	"fmt"
	"reflect"

	"github.com/spf13/cobra"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
)

// writeMode is create, apply or replace.
type writeMode int

const (
	modeCreate writeMode = iota
	modeApply
	modeReplace
)

func newWriteCmd(g *globals, mode writeMode) *cobra.Command {
	var files []string
	cmd := &cobra.Command{Args: noArgs}
	switch mode {
	case modeCreate:
		cmd.Use = "create -f FILENAME"
		cmd.Short = "Create resources from files; fail if any already exists"
		cmd.Long = `Create the resources of the files. Every object is decoded, defaulted and validated,
and IP pools are checked against each other and against the stored pools, before
anything is written; if any object is invalid or already exists, every error is
printed and nothing is written.`
		cmd.Example = "  tabbyctl create -f pools.yaml\n  cat pool.yaml | tabbyctl create -f -"
	case modeApply:
		cmd.Use = "apply -f FILENAME"
		cmd.Short = "Create resources, or update those that exist"
		cmd.Long = `Create the resources of the files that do not exist yet, and update those that do: the
stored object keeps its metadata (uid, creation time, resourceVersion for the
compare-and-swap) and takes the file's spec, labels and annotations.

Every object is decoded, defaulted and validated, and IP pools are checked against
each other and against the stored pools, before anything is written; if any object is
invalid, every error is printed and nothing is written.`
		cmd.Example = "  tabbyctl apply -f pools.yaml\n  tabbyctl apply -f manifests/"
	case modeReplace:
		cmd.Use = "replace -f FILENAME"
		cmd.Short = "Replace existing resources; fail if any does not exist"
		cmd.Long = `Replace the spec, labels and annotations of existing resources with those of the
files. Every object is checked first; if any is invalid or does not exist, every error
is printed and nothing is written.`
		cmd.Example = "  tabbyctl replace -f pool.yaml"
	}
	fileFlag(cmd.Flags(), &files, "the resources to "+map[writeMode]string{modeCreate: "create", modeApply: "apply", modeReplace: "replace"}[mode])
	cmd.RunE = runE(func(cmd *cobra.Command, _ []string) error {
		if len(files) == 0 {
			return usageErrorf("%s needs -f FILENAME", cmd.Name())
		}
		return runWrite(cmd.Context(), g, files, mode)
	})
	return cmd
}

func runWrite(ctx context.Context, g *globals, files []string, mode writeMode) error {
	items, store, err := loadChecked(ctx, g, files, false)
	if err != nil {
		return err
	}
	// Look every object up before writing any, so that create and replace are
	// all-or-nothing too.
	existing := make([]v1.Object, len(items))
	var probs []problem
	for i, it := range items {
		cur, err := store.Get(ctx, it.kind, it.obj.GetNamespace(), it.obj.GetName())
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			if mode == modeReplace {
				probs = append(probs, problem{index: i, err: fmt.Errorf("%s not found: replace only updates existing resources", it.id())})
			}
		case err != nil:
			return err
		default:
			existing[i] = cur
			if mode == modeCreate {
				probs = append(probs, problem{index: i, err: fmt.Errorf("%s already exists: use apply or replace to change it", it.id())})
			}
		}
	}
	if len(probs) > 0 {
		for _, p := range probs {
			fmt.Fprintf(g.stderr, "error: %v\n", p.err)
		}
		fmt.Fprintln(g.stderr, "error: nothing was written")
		return errReported
	}
	failed := 0
	for _, i := range writeOrder(items, existing) {
		it := items[i]
		var err error
		var verb string
		if existing[i] == nil {
			_, err = store.Create(ctx, it.obj)
			verb = "created"
		} else {
			_, err = store.Update(ctx, merge(existing[i], it.obj))
			verb = map[writeMode]string{modeApply: "configured", modeReplace: "replaced"}[mode]
		}
		if err != nil {
			fmt.Fprintf(g.stderr, "error: %v\n", err)
			failed++
			continue
		}
		fmt.Fprintf(g.stdout, "%s %s\n", ref(it.res, it.obj.GetName()), verb)
	}
	if failed > 0 {
		return &exitError{code: ExitFailure, err: fmt.Errorf("%d of %d resources were not written", failed, len(items))}
	}
	return nil
}

// writeOrder is input order, except that updates of IPPools go first: the datastore
// checks each pool it writes against the stored ones, so a pool moved away must be
// stored before a new pool takes its old range.
func writeOrder(items []item, existing []v1.Object) []int {
	var first, rest []int
	for i, it := range items {
		if _, pool := it.obj.(*v1.IPPool); pool && existing[i] != nil {
			first = append(first, i)
		} else {
			rest = append(rest, i)
		}
	}
	return append(first, rest...)
}

// merge returns the stored object with the new one's spec, labels and annotations; the
// rest of its metadata (resourceVersion included) and any status stay as stored.
func merge(stored, in v1.Object) v1.Object {
	out := stored.DeepCopyObject().(v1.Object)
	src := in.DeepCopyObject().(v1.Object)
	dv := reflect.ValueOf(out).Elem().FieldByName("Spec")
	sv := reflect.ValueOf(src).Elem().FieldByName("Spec")
	if dv.IsValid() && sv.IsValid() && dv.Type() == sv.Type() {
		dv.Set(sv)
	}
	out.SetLabels(src.GetLabels())
	out.SetAnnotations(src.GetAnnotations())
	return out
}
