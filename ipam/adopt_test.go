package ipam_test

import (
	"context"
	"testing"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
)

// TestAdopt: a VM's address moves to the node it now runs on (the allocation's node
// attribute), and only that allocation changes; the handle keeps its address.
func TestAdopt(t *testing.T) {
	s := datastore.NewMemory()
	ctx := context.Background()
	mkPool(t, s, "p", "10.70.0.0/24", 28)
	a := ipam.New(s, ipam.Options{})
	vm := ipam.VMHandle("6f1c-uuid", "52:54:00:00:00:01")
	mine, err := a.Assign(ctx, ipam.Request{HandleID: vm, Node: "node-a", Attrs: map[string]string{ipam.AttrNode: "node-a"}})
	if err != nil {
		t.Fatal(err)
	}
	other, err := a.Assign(ctx, ipam.Request{HandleID: "pod.ns.p.c1", Node: "node-a", Attrs: map[string]string{ipam.AttrNode: "node-a"}})
	if err != nil {
		t.Fatal(err)
	}
	moved, err := a.Adopt(ctx, vm, "node-b")
	if err != nil || len(moved) != 1 || moved[0] != mine.IP {
		t.Fatalf("Adopt = %v, %v; want [%s]", moved, err, mine.IP)
	}
	for _, c := range []struct {
		ip   ipam.Allocation
		node string
	}{{mine, "node-b"}, {other, "node-a"}} {
		info, err := a.Lookup(ctx, c.ip.IP)
		if err != nil {
			t.Fatal(err)
		}
		if info.Attrs[ipam.AttrNode] != c.node {
			t.Errorf("%s: node %q, want %q (%+v)", c.ip.IP, info.Attrs[ipam.AttrNode], c.node, info)
		}
	}
	if held, err := a.AddressesOf(ctx, vm); err != nil || len(held) != 1 || held[0] != mine.IP {
		t.Fatalf("the handle holds %v, %v; want [%s]", held, err, mine.IP)
	}
	if moved, err := a.Adopt(ctx, vm, "node-b"); err != nil || len(moved) != 0 {
		t.Fatalf("second Adopt = %v, %v; want nothing to do", moved, err)
	}
	if moved, err := a.Adopt(ctx, "vm.none.none", "node-b"); err != nil || len(moved) != 0 {
		t.Fatalf("Adopt of an unknown handle = %v, %v", moved, err)
	}
}
