package ebpf

import (
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/tabbynet/tabby/ebpf/ebpftest"
	"github.com/vishvananda/netlink"
)

// tcxCount counts the programs attached with TCX to ifindex, both directions.
func tcxCount(t *testing.T, ifindex int) int {
	t.Helper()
	n := 0
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		res, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
		if err != nil {
			t.Fatalf("query %v programs: %v", at, err)
		}
		n += len(res.Programs)
	}
	return n
}

// TestRemove: what an agent with policy off does to an earlier run's datapath. Both
// attach modes come off, the pins go, and a filter of someone else stays.
func TestRemove(t *testing.T) {
	for _, tc := range []struct {
		name  string
		force bool
	}{{"tcx", false}, {"tc", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ebpftest.Require(t)
			e := newVethEnv(t, "rm"+tc.name)
			dir := ebpftest.PinDir(t)
			d, err := Load(Options{PinDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := d.Attach(e.hostIfindex, AttachOptions{ForceTC: tc.force}); err != nil {
				t.Fatal(err)
			}
			_ = d.Close() // the agent exits; its pins keep the programs on
			if got, err := d.Attached(e.hostIfindex); err != nil || got == "" {
				t.Fatalf("after the agent's exit: Attached = %q, %v; want attached", got, err)
			}
			// Someone else's filter on the same hook must survive.
			l, err := netlink.LinkByIndex(e.hostIfindex)
			if err != nil {
				t.Fatal(err)
			}
			other := &netlink.U32{FilterAttrs: netlink.FilterAttrs{LinkIndex: e.hostIfindex,
				Parent: netlink.HANDLE_MIN_INGRESS, Priority: 0x100, Protocol: 0x0003}}
			if tc.force {
				if err := netlink.FilterAdd(other); err != nil {
					t.Fatalf("add a foreign filter: %v", err)
				}
			}

			n, err := Remove(dir, []string{"tabbyh"})
			if err != nil || n != 1 {
				t.Fatalf("Remove = %d, %v; want 1 interface", n, err)
			}
			if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("pin dir still there: %v", err)
			}
			if c := tcxCount(t, e.hostIfindex); c != 0 {
				t.Fatalf("%d TCX programs still attached", c)
			}
			fs, _ := netlink.FilterList(l, netlink.HANDLE_MIN_INGRESS)
			foreign := 0
			for _, f := range fs {
				if _, ok := f.(*netlink.BpfFilter); ok {
					t.Fatalf("a cls_bpf filter is left: %+v", f)
				}
				if f.Attrs().Priority == 0x100 {
					foreign++
				}
			}
			if tc.force && foreign == 0 {
				t.Fatal("Remove deleted someone else's filter")
			}
			if n, err := Remove(dir, []string{"tabbyh"}); err != nil || n != 0 {
				t.Fatalf("second Remove = %d, %v; want 0, nil", n, err)
			}
		})
	}
}
