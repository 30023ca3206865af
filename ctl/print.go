package ctl

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	v1 "github.com/tabbynet/tabby/api/v1"
	"sigs.k8s.io/yaml"
)

// format is an output format of get.
type format string

const (
	formatTable format = "table"
	formatWide  format = "wide"
	formatYAML  format = "yaml"
	formatJSON  format = "json"
)

func parseFormat(s string) (format, error) {
	switch f := format(strings.ToLower(s)); f {
	case formatTable, formatWide, formatYAML, formatJSON:
		return f, nil
	case "":
		return formatTable, nil
	}
	return "", usageErrorf("unknown output format %q: use table, wide, yaml or json", s)
}

// printer prints objects of one kind.
type printer struct {
	format        format
	res           v1.Resource
	showNamespace bool
}

// print writes objs; single prints one object alone in yaml and json (get KIND NAME).
func (p printer) print(w io.Writer, objs []v1.Object, single bool) error {
	switch p.format {
	case formatYAML, formatJSON:
		var doc any
		if single && len(objs) == 1 {
			doc = forOutput(objs[0])
		} else {
			items := make([]v1.Object, 0, len(objs))
			for _, o := range objs {
				items = append(items, forOutput(o))
			}
			doc = list{APIVersion: "v1", Items: items, Kind: "List", Metadata: listMeta{}}
		}
		return writeDoc(w, p.format, doc)
	default:
		return p.table(w, objs)
	}
}

// list is kubectl's kind: List.
type list struct {
	APIVersion string      `json:"apiVersion"`
	Items      []v1.Object `json:"items"`
	Kind       string      `json:"kind"`
	Metadata   listMeta    `json:"metadata"`
}

type listMeta struct {
	ResourceVersion string `json:"resourceVersion"`
}

func writeDoc(w io.Writer, f format, doc any) error {
	var b []byte
	var err error
	if f == formatYAML {
		b, err = yaml.Marshal(doc)
	} else {
		b, err = sortedJSON(doc)
	}
	if err != nil {
		return fmt.Errorf("encode %s: %w", f, err)
	}
	_, err = w.Write(b)
	return err
}

// sortedJSON encodes doc with 4-space indentation and every object's keys sorted, as
// kubectl prints JSON (and as the YAML printer orders keys).
func sortedJSON(doc any) ([]byte, error) {
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false) // selectors hold && and <
	enc.SetIndent("", "    ")
	if err := enc.Encode(generic); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}

// forOutput is a copy of o with apiVersion and kind set and managedFields dropped, as
// kubectl shows it.
func forOutput(o v1.Object) v1.Object {
	c := o.DeepCopyObject().(v1.Object)
	if res, ok := v1.ResourceOf(c); ok {
		c.GetObjectKind().SetGroupVersionKind(res.GVK())
	}
	c.SetManagedFields(nil)
	return c
}

// table prints the kind's columns with a tabwriter, as kubectl does.
func (p printer) table(w io.Writer, objs []v1.Object) error {
	cols := columnsFor(p.res.Kind, p.format == formatWide)
	tw := tabwriter.NewWriter(w, 6, 4, 3, ' ', 0)
	var head []string
	if p.showNamespace {
		head = append(head, "NAMESPACE")
	}
	for _, c := range cols {
		head = append(head, c.header)
	}
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, o := range objs {
		var row []string
		if p.showNamespace {
			row = append(row, o.GetNamespace())
		}
		for _, c := range cols {
			row = append(row, cell(c.value(o)))
		}
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// cell shows an empty value as <none>, and keeps tabs and newlines out of the table.
func cell(s string) string {
	if s == "" {
		return "<none>"
	}
	return strings.NewReplacer("\t", " ", "\n", " ").Replace(s)
}

// sortObjects sorts by namespace, then name.
func sortObjects(objs []v1.Object) {
	sort.SliceStable(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		if a.GetNamespace() != b.GetNamespace() {
			return a.GetNamespace() < b.GetNamespace()
		}
		return a.GetName() < b.GetName()
	})
}
