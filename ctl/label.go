package ctl

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/spf13/cobra"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"k8s.io/apimachinery/pkg/util/validation"
)

// labelRetries bounds the read-modify-write loop of label on conflicts.
const labelRetries = 5

// labelChanges is what label was asked to do.
type labelChanges struct {
	set    map[string]string
	remove []string
}

func newLabelCmd(g *globals) *cobra.Command {
	var overwrite bool
	cmd := &cobra.Command{
		Use:   "label KIND NAME... KEY=VALUE... [KEY-...]",
		Short: "Add, change or remove labels of resources",
		Long: `Set the labels KEY=VALUE and remove the labels KEY- of the named resources. Changing the
value of a label that exists needs --overwrite. Each object is read, changed and written
back with a compare-and-swap, retried when another writer got there first.`,
		Example: "  tabbyctl label ippool pool1 zone=a\n  tabbyctl label ippool pool1 zone=b --overwrite\n  tabbyctl label ippool pool1 zone-",
	}
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "allow changing the value of labels that exist")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return usageErrorf("label needs KIND NAME... KEY=VALUE...; kinds: %s", kindList())
		}
		res, err := lookupKind(args[0])
		if err != nil {
			return err
		}
		var names, specs []string
		for _, a := range args[1:] {
			if strings.Contains(a, "=") || strings.HasSuffix(a, "-") {
				specs = append(specs, a)
			} else {
				names = append(names, a)
			}
		}
		if len(names) == 0 {
			return usageErrorf("label %s needs at least one NAME", args[0])
		}
		if len(specs) == 0 {
			return usageErrorf("label needs at least one KEY=VALUE or KEY- to change")
		}
		ch, err := parseLabelSpecs(specs)
		if err != nil {
			return err
		}
		k, err := datastore.TabbyKind(res.Kind)
		if err != nil {
			return err
		}
		store, err := g.getStore()
		if err != nil {
			return err
		}
		ns := ""
		if res.Namespaced {
			ns = g.defaultNamespace(false)
		}
		failed := false
		for _, name := range names {
			msg, err := labelOne(cmd.Context(), g, store, k, res, ns, name, ch, overwrite)
			if err != nil {
				fmt.Fprintf(g.stderr, "error: %v\n", err)
				failed = true
				if errors.Is(err, datastore.ErrUnavailable) {
					break
				}
				continue
			}
			fmt.Fprintf(g.stdout, "%s %s\n", ref(res, name), msg)
		}
		if failed {
			return errReported
		}
		return nil
	})
	return cmd
}

// parseLabelSpecs parses KEY=VALUE and KEY- arguments, checking keys and values.
func parseLabelSpecs(specs []string) (labelChanges, error) {
	ch := labelChanges{set: map[string]string{}}
	removed := map[string]bool{}
	for _, s := range specs {
		if key, val, ok := strings.Cut(s, "="); ok {
			if errs := validation.IsQualifiedName(key); len(errs) > 0 {
				return ch, fmt.Errorf("invalid label key %q: %s", key, strings.Join(errs, "; "))
			}
			if errs := validation.IsValidLabelValue(val); len(errs) > 0 {
				return ch, fmt.Errorf("invalid value %q of label %q: %s", val, key, strings.Join(errs, "; "))
			}
			if old, dup := ch.set[key]; dup && old != val {
				return ch, fmt.Errorf("label %q is given twice, as %q and %q", key, old, val)
			}
			ch.set[key] = val
			continue
		}
		key := strings.TrimSuffix(s, "-")
		if errs := validation.IsQualifiedName(key); len(errs) > 0 {
			return ch, fmt.Errorf("invalid label key %q: %s", key, strings.Join(errs, "; "))
		}
		if !removed[key] {
			ch.remove = append(ch.remove, key)
			removed[key] = true
		}
	}
	for _, key := range ch.remove {
		if _, ok := ch.set[key]; ok {
			return ch, fmt.Errorf("label %q is both set and removed", key)
		}
	}
	return ch, nil
}

// labelOne applies the changes to one object and says what happened: labeled,
// unlabeled or not labeled.
func labelOne(ctx context.Context, g *globals, store datastore.Store, k datastore.Kind, res v1.Resource, ns, name string, ch labelChanges, overwrite bool) (string, error) {
	for attempt := 0; ; attempt++ {
		cur, err := store.Get(ctx, k, ns, name)
		if errors.Is(err, datastore.ErrNotFound) {
			return "", fmt.Errorf("%s not found", objectID(res, ns, name))
		}
		if err != nil {
			return "", err
		}
		labels := maps.Clone(cur.GetLabels())
		if labels == nil {
			labels = map[string]string{}
		}
		added, removed := false, false
		for _, key := range sortedKeys(ch.set) {
			val := ch.set[key]
			old, exists := labels[key]
			if exists && old == val {
				continue
			}
			if exists && !overwrite {
				return "", fmt.Errorf("%s: label %q already has a value (%q), and --overwrite is false", objectID(res, ns, name), key, old)
			}
			labels[key] = val
			added = true
		}
		for _, key := range ch.remove {
			if _, exists := labels[key]; !exists {
				if attempt == 0 {
					fmt.Fprintf(g.stderr, "label %q not found on %s\n", key, objectID(res, ns, name))
				}
				continue
			}
			delete(labels, key)
			removed = true
		}
		if !added && !removed {
			return "not labeled", nil
		}
		if len(labels) == 0 {
			labels = nil
		}
		cur.SetLabels(labels)
		_, err = store.Update(ctx, cur)
		if errors.Is(err, datastore.ErrConflict) && attempt+1 < labelRetries {
			continue
		}
		if err != nil {
			return "", err
		}
		if added {
			return "labeled", nil
		}
		return "unlabeled", nil
	}
}
