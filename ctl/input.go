package ctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
)

// item is one object read from the input, with where it came from.
type item struct {
	source string
	obj    v1.Object
	res    v1.Resource
	kind   datastore.Kind
}

// id names the item in messages: IPPool "pool1" or WorkloadEndpoint "ns/wep1".
func (it item) id() string { return objectID(it.res, it.obj.GetNamespace(), it.obj.GetName()) }

func objectID(res v1.Resource, ns, name string) string {
	if res.Namespaced && ns != "" {
		return fmt.Sprintf("%s %q", res.Kind, ns+"/"+name)
	}
	return fmt.Sprintf("%s %q", res.Kind, name)
}

// ref is how kubectl names an object in its output: ippool.tabby.dev/pool1.
func ref(res v1.Resource, name string) string {
	return res.Singular + "." + v1.Group + "/" + name
}

// problem is one thing wrong with the input; index is the item's, or -1.
type problem struct {
	index int
	err   error
}

// readInputs reads and strictly decodes every -f argument, in order. A file that cannot
// be read is returned as err; decode errors are problems (every file is still read).
func readInputs(files []string, stdin io.Reader) ([]item, []problem, error) {
	var items []item
	var probs []problem
	for _, f := range files {
		srcs, err := expand(f)
		if err != nil {
			return nil, nil, err
		}
		for _, src := range srcs {
			var data []byte
			name := src
			if src == "-" {
				name = "<stdin>"
				data, err = io.ReadAll(stdin)
			} else {
				data, err = os.ReadFile(src)
			}
			if err != nil {
				return nil, nil, fmt.Errorf("read %s: %w", name, err)
			}
			objs, err := v1.Decode(data)
			if err != nil {
				probs = append(probs, problem{index: -1, err: fmt.Errorf("%s: %w", name, err)})
				continue
			}
			for _, o := range objs {
				res, ok := v1.ResourceOf(o)
				if !ok {
					probs = append(probs, problem{index: -1, err: fmt.Errorf("%s: %T is not a Tabby resource", name, o)})
					continue
				}
				k, err := datastore.TabbyKind(res.Kind)
				if err != nil {
					return nil, nil, err
				}
				items = append(items, item{source: name, obj: o, res: res, kind: k})
			}
		}
	}
	return items, probs, nil
}

// expand turns a -f argument into the files to read: a directory gives its *.yaml,
// *.yml and *.json files (not recursive), sorted.
func expand(f string) ([]string, error) {
	if f == "-" {
		return []string{"-"}, nil
	}
	fi, err := os.Stat(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f, err)
	}
	if !fi.IsDir() {
		return []string{f}, nil
	}
	entries, err := os.ReadDir(f)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", f, err)
	}
	var out []string
	for _, e := range entries {
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".yaml", ".yml", ".json":
			if !e.IsDir() {
				out = append(out, filepath.Join(f, e.Name()))
			}
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		return nil, fmt.Errorf("read %s: no *.yaml, *.yml or *.json files in the directory", f)
	}
	return out, nil
}

// scopeItems gives namespaced objects the default namespace and refuses an object whose
// namespace differs from an explicit -n, like kubectl.
func scopeItems(items []item, ns string, explicit bool) []problem {
	var probs []problem
	for i, it := range items {
		if !it.res.Namespaced {
			continue
		}
		switch got := it.obj.GetNamespace(); {
		case got == "":
			it.obj.SetNamespace(ns)
		case explicit && got != ns:
			probs = append(probs, problem{index: i, err: fmt.Errorf("%s: the namespace from the input (%q) does not match --namespace %q", it.id(), got, ns)})
		}
	}
	return probs
}

// checkItems defaults and validates every item, refuses duplicates, and checks that no
// two IPPools of the input overlap. It needs no store.
func checkItems(items []item) []problem {
	var probs []problem
	seen := map[string]int{}
	var pools []v1.Object
	for i, it := range items {
		key := it.res.Kind + "/" + it.obj.GetNamespace() + "/" + it.obj.GetName()
		if j, dup := seen[key]; dup {
			probs = append(probs, problem{index: i, err: fmt.Errorf("%s appears twice in the input (%s and %s)", it.id(), items[j].source, it.source)})
		}
		seen[key] = i
		v1.Default(it.obj)
		if err := v1.Validate(it.obj); err != nil {
			probs = append(probs, problem{index: i, err: err})
		}
		if _, ok := it.obj.(*v1.IPPool); ok {
			pools = append(pools, it.obj)
		}
	}
	return append(probs, checkOverlap(items, pools)...)
}

// checkStored checks the input's IPPools against the stored pools that the input does
// not replace.
func checkStored(ctx context.Context, items []item, store datastore.Store) ([]problem, error) {
	inInput := map[string]bool{}
	for _, it := range items {
		if _, ok := it.obj.(*v1.IPPool); ok {
			inInput[it.obj.GetName()] = true
		}
	}
	if len(inInput) == 0 {
		return nil, nil
	}
	stored, err := store.List(ctx, datastore.KindIPPool, datastore.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list ippools for the overlap check: %w", err)
	}
	var others []v1.Object
	for _, p := range stored {
		if !inInput[p.GetName()] {
			others = append(others, p)
		}
	}
	return checkOverlap(items, others), nil
}

// checkOverlap reports every IPPool of items that overlaps one of others.
func checkOverlap(items []item, others []v1.Object) []problem {
	if len(others) == 0 {
		return nil
	}
	var probs []problem
	for i, it := range items {
		if _, ok := it.obj.(*v1.IPPool); !ok {
			continue
		}
		if err := v1.ValidateAgainst(it.obj, others); err != nil {
			probs = append(probs, problem{index: i, err: err})
		}
	}
	return probs
}

// reportProblems prints every problem and a closing line saying what it means, and
// returns the error that makes the command exit 1. tail, if any, is added to the closing
// line, e.g. "nothing was written".
func reportProblems(w io.Writer, probs []problem, total int, tail string) error {
	sort.SliceStable(probs, func(a, b int) bool { return probs[a].index < probs[b].index })
	bad := map[int]bool{}
	decode := false
	for _, p := range probs {
		fmt.Fprintf(w, "error: %v\n", p.err)
		if p.index < 0 {
			decode = true
		} else {
			bad[p.index] = true
		}
	}
	msg := fmt.Sprintf("%d of %d resources invalid", len(bad), total)
	if decode {
		msg = "the input could not be decoded"
	}
	if tail != "" {
		msg += "; " + tail
	}
	fmt.Fprintf(w, "error: %s\n", msg)
	return errReported
}

// loadChecked reads the input, puts namespaced objects in their namespace, and checks
// everything before anything is written; it prints the problems itself. Offline, no
// store is used (pools are checked against each other only); otherwise the store is
// made once the input decodes, the pools are also checked against the stored ones, and
// the store is returned.
func loadChecked(ctx context.Context, g *globals, files []string, offline bool) ([]item, datastore.Store, error) {
	items, probs, err := readInputs(files, g.opts.Stdin)
	if err != nil {
		return nil, nil, err
	}
	tail := "nothing was written"
	if offline {
		tail = ""
	}
	if len(probs) > 0 {
		return nil, nil, reportProblems(g.stderr, probs, len(items), tail)
	}
	if len(items) == 0 {
		return nil, nil, errors.New("no resources in the input")
	}
	probs = scopeItems(items, g.defaultNamespace(offline), g.namespaceFlagSet())
	probs = append(probs, checkItems(items)...)
	var store datastore.Store
	if !offline {
		// Problems found so far are printed even when the store cannot be reached.
		store, err = g.getStore()
		var more []problem
		if err == nil {
			more, err = checkStored(ctx, items, store)
		}
		if err != nil {
			if len(probs) > 0 {
				_ = reportProblems(g.stderr, probs, len(items), tail)
			}
			return nil, nil, err
		}
		probs = append(probs, more...)
	}
	if len(probs) > 0 {
		return nil, nil, reportProblems(g.stderr, probs, len(items), tail)
	}
	return items, store, nil
}
