package helm

import (
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// schemaNode is the part of a JSON schema the walk needs.
type schemaNode struct {
	Properties map[string]*schemaNode `json:"properties"`
	Items      *schemaNode            `json:"items"`
}

// valueNames lists every value the schema knows, as docs/reference/helm-values.md
// names them: a.b, and a[].b for the fields of list items.
func valueNames(prefix string, n *schemaNode, out *[]string) {
	for name, p := range n.Properties {
		full := prefix + name
		if p.Properties == nil { // sections are documented by their values
			*out = append(*out, full)
		}
		if p.Properties != nil {
			valueNames(full+".", p, out)
		}
		if p.Items != nil && p.Items.Properties != nil {
			valueNames(full+"[].", p.Items, out)
		}
	}
}

// TestValuesDocumented checks that docs/reference/helm-values.md has a row for every
// value in values.schema.json (which, with additionalProperties false, is every value
// the chart accepts), or for the object value it is a field of.
func TestValuesDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(chartDir, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var root schemaNode
	if err := json.Unmarshal(b, &root); err != nil {
		t.Fatalf("values.schema.json: %v", err)
	}
	doc, err := os.ReadFile("../../docs/reference/helm-values.md")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	valueNames("", &root, &names)
	sort.Strings(names)
	documented := func(n string) bool {
		// A value or, for the fields of an object value, the object itself.
		for {
			if strings.Contains(string(doc), "| `"+n+"` |") {
				return true
			}
			i := strings.LastIndex(n, ".")
			if i < 0 {
				return false
			}
			n = strings.TrimSuffix(n[:i], "[]")
		}
	}
	for _, n := range names {
		if !documented(n) {
			t.Errorf("docs/reference/helm-values.md has no row for `%s`", n)
		}
	}
}
