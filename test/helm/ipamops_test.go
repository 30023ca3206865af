package helm

import (
	"context"
	"testing"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
)

// runIPAM performs, as tabby-cni, what an ADD and a DEL do with IPAM (Warm, Assign,
// AddressesOf, ReleaseHandle), and as tabby-node what VM endpoints do (Assign, Lookup,
// Adopt, ReleaseHandle, the list of handles) and what the empty-block GC does
// (ReleaseEmptyBlocks).
func runIPAM(ctx context.Context, t *testing.T, nodeStore, cniStore datastore.Store, node string) {
	t.Helper()
	cni := ipam.New(cniStore, ipam.Options{})
	if err := cni.Warm(ctx, node); err != nil {
		t.Errorf("tabby-cni: ipam warm: %v", err)
	}
	pod := ipam.PodHandle("default", "helm-test-pod", "c0ffee")
	alloc, err := cni.Assign(ctx, ipam.Request{HandleID: pod, Node: node,
		Attrs: map[string]string{ipam.AttrNode: node, ipam.AttrNamespace: "default"}})
	if err != nil {
		t.Errorf("tabby-cni: ipam assign: %v", err)
		return
	}
	t.Logf("tabby-cni got %v from block %v", alloc.IP, alloc.Block)
	if got, err := cni.AddressesOf(ctx, pod); err != nil || len(got) != 1 {
		t.Errorf("tabby-cni: addresses of the pod: %v, %v", got, err)
	}

	n := ipam.New(nodeStore, ipam.Options{})
	vm := ipam.VMHandle("5a3c0d1e-0000-4000-8000-000000000001", "52:54:00:00:00:01")
	va, err := n.Assign(ctx, ipam.Request{HandleID: vm, Node: node,
		Attrs: map[string]string{ipam.AttrNode: node, ipam.AttrType: "vm"}})
	if err != nil {
		t.Errorf("tabby-node: ipam assign for a VM: %v", err)
	} else {
		if info, err := n.Lookup(ctx, va.IP); err != nil || info.Handle != vm {
			t.Errorf("tabby-node: ipam lookup %v: %+v, %v", va.IP, info, err)
		}
		if _, err := n.Adopt(ctx, vm, node); err != nil {
			t.Errorf("tabby-node: ipam adopt: %v", err)
		}
		if _, err := datastore.List[*v1.IPAMHandle](ctx, nodeStore, datastore.ListOptions{}); err != nil {
			t.Errorf("tabby-node: list IPAM handles: %v", err)
		}
		if _, err := n.ReleaseHandle(ctx, vm); err != nil {
			t.Errorf("tabby-node: ipam release a VM's handle: %v", err)
		}
	}
	if _, err := cni.ReleaseHandle(ctx, pod); err != nil {
		t.Errorf("tabby-cni: ipam release: %v", err)
	}

	// The block is empty now (release stamps it so): a pass with grace 0 releases it
	// (a second pass covers a stamp the first one had to write).
	total := 0
	for pass := 1; pass <= 2 && total == 0; pass++ {
		released, err := n.ReleaseEmptyBlocks(ctx, node, 0)
		if err != nil {
			t.Errorf("tabby-node: release empty blocks, pass %d: %v", pass, err)
			return
		}
		total += released
	}
	if total == 0 {
		t.Errorf("tabby-node: release empty blocks released nothing")
	}
	left, err := datastore.List[*v1.IPAMBlock](ctx, nodeStore, datastore.ListOptions{LabelSelector: ipam.LabelNode + "=" + node})
	if err != nil || len(left) != 0 {
		t.Errorf("tabby-node: blocks of %s after the GC: %d, %v; want none", node, len(left), err)
	}
}
