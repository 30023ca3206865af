package ctl

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
)

func newDeleteCmd(g *globals) *cobra.Command {
	var files []string
	var ignoreNotFound bool
	cmd := &cobra.Command{
		Use:   "delete (-f FILENAME | KIND NAME...)",
		Short: "Delete resources named in files or by kind and name",
		Long: `Delete resources, either those of the files (only their kind, namespace and name are
used) or those named on the command line. A resource that does not exist is an error
(exit 1) unless --ignore-not-found; the others are still deleted.`,
		Example: "  tabbyctl delete -f pools.yaml\n  tabbyctl delete ippool pool1 pool2\n  tabbyctl delete wep -n prod web-eth0",
	}
	fileFlag(cmd.Flags(), &files, "the resources to delete")
	cmd.Flags().BoolVar(&ignoreNotFound, "ignore-not-found", false, "treat a resource that does not exist as deleted")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		var targets []item
		switch {
		case len(files) > 0 && len(args) > 0:
			return usageErrorf("delete takes -f FILENAME or KIND NAME..., not both")
		case len(files) > 0:
			items, probs, err := readInputs(files, g.opts.Stdin)
			if err != nil {
				return err
			}
			if len(probs) > 0 {
				return reportProblems(g.stderr, probs, len(items), "nothing was deleted")
			}
			if len(items) == 0 {
				return errors.New("no resources in the input")
			}
			if probs := scopeItems(items, g.defaultNamespace(false), g.namespaceFlagSet()); len(probs) > 0 {
				return reportProblems(g.stderr, probs, len(items), "nothing was deleted")
			}
			targets = items
		case len(args) == 0:
			return usageErrorf("delete needs -f FILENAME or KIND NAME...; kinds: %s", kindList())
		default:
			res, err := lookupKind(args[0])
			if err != nil {
				return err
			}
			if len(args) < 2 {
				return usageErrorf("delete %s needs at least one NAME", args[0])
			}
			k, err := datastore.TabbyKind(res.Kind)
			if err != nil {
				return err
			}
			ns := ""
			if res.Namespaced {
				ns = g.defaultNamespace(false)
			}
			for _, name := range args[1:] {
				o := res.New()
				o.SetName(name)
				o.SetNamespace(ns)
				targets = append(targets, item{source: "<args>", obj: o, res: res, kind: k})
			}
		}
		return runDelete(cmd.Context(), g, targets, ignoreNotFound)
	})
	return cmd
}

func runDelete(ctx context.Context, g *globals, targets []item, ignoreNotFound bool) error {
	store, err := g.getStore()
	if err != nil {
		return err
	}
	failed := 0
	for _, it := range targets {
		err := store.Delete(ctx, it.kind, it.obj.GetNamespace(), it.obj.GetName(), datastore.DeleteOptions{})
		switch {
		case errors.Is(err, datastore.ErrNotFound):
			if ignoreNotFound {
				continue
			}
			fmt.Fprintf(g.stderr, "error: %s not found\n", it.id())
			failed++
		case err != nil:
			fmt.Fprintf(g.stderr, "error: %v\n", err)
			failed++
			if errors.Is(err, datastore.ErrUnavailable) {
				return errReported
			}
		default:
			fmt.Fprintf(g.stdout, "%s deleted\n", ref(it.res, it.obj.GetName()))
		}
	}
	if failed > 0 {
		return errReported
	}
	return nil
}

// lookupKind finds a kind by plural, singular, kind or short name; unknown is a usage
// error.
func lookupKind(name string) (v1.Resource, error) {
	res, ok := v1.LookupResource(name)
	if !ok {
		return v1.Resource{}, usageErrorf("unknown resource type %q; kinds: %s", name, kindList())
	}
	return res, nil
}
