package routes

import (
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func TestProtocolNumbersAvoidOthers(t *testing.T) {
	taken := map[netlink.RouteProtocol]bool{2: true, 3: true, 4: true, 11: true, 12: true, 16: true,
		17: true, 18: true, 42: true, 80: true, 99: true, 186: true, 187: true, 188: true, 189: true,
		190: true, 191: true, 192: true}
	for _, p := range []netlink.RouteProtocol{ProtocolLocal, ProtocolLearned} {
		if taken[p] {
			t.Errorf("protocol %d is used by another routing daemon", p)
		}
	}
	if ProtocolLocal == ProtocolLearned {
		t.Error("local and learned routes must use distinct protocol numbers")
	}
}

func TestWorkloadRoute(t *testing.T) {
	r := WorkloadRoute(netip.MustParseAddr("10.65.0.9"), 7)
	if r.Dst.String() != "10.65.0.9/32" || r.LinkIndex != 7 || r.Scope != netlink.SCOPE_LINK || r.Protocol != ProtocolLocal {
		t.Fatalf("unexpected route %+v", r)
	}
	if !IsWorkloadRoute(r, netip.MustParseAddr("10.65.0.9"), 7) {
		t.Fatal("IsWorkloadRoute false for its own route")
	}
	if IsWorkloadRoute(r, netip.MustParseAddr("10.65.0.9"), 8) {
		t.Fatal("IsWorkloadRoute true for another interface")
	}
	r6 := WorkloadRoute(netip.MustParseAddr("fd00::5"), 3)
	if r6.Dst.String() != "fd00::5/128" || r6.Family != netlink.FAMILY_V6 {
		t.Fatalf("unexpected v6 route %+v", r6)
	}
}

// TestAddDelInNamespace writes and deletes a workload route in a throw-away network
// namespace (root only).
func TestAddDelInNamespace(t *testing.T) {
	if testing.Short() || os.Geteuid() != 0 {
		t.Skip("needs root and a network namespace (not in -short)")
	}
	tns, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tns.Close(); _ = testutils.UnmountNS(tns) })
	nsh, err := netns.GetFromPath(tns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "calitest0"}, PeerName: "calitest1"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	link, err := h.LinkByName("calitest0")
	if err != nil {
		t.Fatal(err)
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr("10.65.200.7")
	if err := AddWorkload(h, ip, link.Attrs().Index); err != nil {
		t.Fatal(err)
	}
	if err := AddWorkload(h, ip, link.Attrs().Index); err != nil {
		t.Fatalf("second add (replace) failed: %v", err)
	}
	// Someone else's route must survive our deletes.
	other := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &net.IPNet{IP: net.IPv4(10, 65, 200, 8), Mask: net.CIDRMask(32, 32)},
		Scope: netlink.SCOPE_LINK, Protocol: 4}
	if err := h.RouteAdd(other); err != nil {
		t.Fatal(err)
	}
	rs, err := ListLocal(h)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || !IsWorkloadRoute(rs[0], ip, link.Attrs().Index) {
		t.Fatalf("ListLocal = %+v, want just the workload route", rs)
	}
	if err := DelWorkload(h, netip.MustParseAddr("10.65.200.8"), 0); err != nil {
		t.Fatal(err)
	}
	if err := DelWorkload(h, ip, link.Attrs().Index+100); err != nil {
		t.Fatal(err)
	}
	if rs, _ := Lookup(h, ip); len(rs) != 1 {
		t.Fatalf("route through another interface deleted: %+v", rs)
	}
	if err := DelWorkload(h, ip, link.Attrs().Index); err != nil {
		t.Fatal(err)
	}
	if err := DelWorkload(h, ip, 0); err != nil {
		t.Fatalf("deleting a missing route: %v", err)
	}
	if rs, _ := ListLocal(h); len(rs) != 0 {
		t.Fatalf("routes left: %+v", rs)
	}
	all, err := h.RouteList(link, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range all {
		if r.Protocol == 4 {
			found = true
		}
	}
	if !found {
		t.Fatal("a route that is not Tabby's was deleted")
	}
}
