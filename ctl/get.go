package ctl

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
)

func newGetCmd(g *globals) *cobra.Command {
	var output, selector string
	var allNamespaces bool
	cmd := &cobra.Command{
		Use:   "get KIND [NAME...]",
		Short: "Print resources as a table, yaml or json",
		Long: `Print the resources of one kind, all of them or those named, sorted by namespace and
name. KIND is a plural (ippools), a singular (ippool), the kind (IPPool) or a short
name (pool). Kinds: ` + kindList() + `.

Output formats (-o): table (default), wide (more columns), yaml, json. yaml and json
print one object alone when one NAME is given, and a "kind: List" otherwise.`,
		Example: "  tabbyctl get ippools\n  tabbyctl get pool pool1 -o yaml\n  tabbyctl get weps -A -o wide\n  tabbyctl get nodes -l zone=a",
	}
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", "table", "output format: table, wide, yaml or json")
	f.BoolVarP(&allNamespaces, "all-namespaces", "A", false, "list namespaced kinds across every namespace")
	f.StringVarP(&selector, "selector", "l", "", "label selector, e.g. zone=a,tier!=db (lists only)")
	cmd.RunE = runE(func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return usageErrorf("get needs a KIND; kinds: %s", kindList())
		}
		res, err := lookupKind(args[0])
		if err != nil {
			return err
		}
		format, err := parseFormat(output)
		if err != nil {
			return err
		}
		names := args[1:]
		if allNamespaces && len(names) > 0 {
			return usageErrorf("a resource cannot be retrieved by name across all namespaces")
		}
		if selector != "" && len(names) > 0 {
			return usageErrorf("--selector cannot be combined with names")
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
		if res.Namespaced && !allNamespaces {
			ns = g.defaultNamespace(false)
		}
		ctx := cmd.Context()
		var objs []v1.Object
		failed := false
		if len(names) == 0 {
			objs, err = store.List(ctx, k, datastore.ListOptions{Namespace: ns, LabelSelector: selector})
			if err != nil {
				return err
			}
		} else {
			for _, name := range names {
				o, err := store.Get(ctx, k, ns, name)
				switch {
				case errors.Is(err, datastore.ErrNotFound):
					fmt.Fprintf(g.stderr, "error: %s not found\n", objectID(res, ns, name))
					failed = true
				case err != nil:
					return err
				default:
					objs = append(objs, o)
				}
			}
		}
		sortObjects(objs)
		p := printer{format: format, res: res, showNamespace: res.Namespaced && allNamespaces}
		if len(objs) == 0 && (format == formatTable || format == formatWide) {
			if !failed {
				if ns != "" {
					fmt.Fprintf(g.stderr, "No resources found in %s namespace.\n", ns)
				} else {
					fmt.Fprintln(g.stderr, "No resources found.")
				}
			}
		} else if len(objs) > 0 || len(names) == 0 {
			if err := p.print(g.stdout, objs, len(names) == 1); err != nil {
				return err
			}
		}
		if failed {
			return errReported
		}
		return nil
	})
	return cmd
}

// kindList lists every kind's plural name for help texts and errors.
func kindList() string { return strings.Join(v1.ResourceNames(), ", ") }
