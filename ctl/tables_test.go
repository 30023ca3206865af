package ctl

import (
	"bytes"
	"strings"
	"testing"

	v1 "github.com/tabbynet/tabby/api/v1"
)

// Every kind has a table, and a wide one with at least its columns; a zero object
// prints one cell per header.
func TestEveryKindHasATable(t *testing.T) {
	for _, res := range v1.Resources {
		if len(tables[res.Kind]) == 0 {
			t.Errorf("%s has no table columns", res.Kind)
			continue
		}
		for _, f := range []format{formatTable, formatWide} {
			o := res.New()
			o.SetName("x")
			o.SetNamespace("ns")
			var b bytes.Buffer
			p := printer{format: f, res: res, showNamespace: res.Namespaced}
			if err := p.print(&b, []v1.Object{o}, false); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(b.String()), "\n")
			if len(lines) != 2 {
				t.Fatalf("%s %s: %q", res.Kind, f, b.String())
			}
			head, row := strings.Fields(lines[0]), strings.Fields(lines[1])
			if len(head) != len(row) {
				t.Errorf("%s %s: %d headers, %d cells:\n%s", res.Kind, f, len(head), len(row), b.String())
			}
			if head[0] == "NAMESPACE" != res.Namespaced {
				t.Errorf("%s %s: NAMESPACE column: %v", res.Kind, f, head)
			}
		}
	}
	for kind := range tables {
		if _, ok := v1.LookupResource(kind); !ok {
			t.Errorf("table for unknown kind %s", kind)
		}
	}
}

func TestIPAMBlockUsed(t *testing.T) {
	b := &v1.IPAMBlock{Spec: v1.IPAMBlockSpec{CIDR: "10.0.0.0/30", Allocations: make([]int, 4), Unallocated: []int{1, 2, 3}}}
	if got := usedAddresses(b); got != 1 {
		t.Errorf("used %d, want 1", got)
	}
}
