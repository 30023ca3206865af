package dataplane_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/felix/dataplane"
	"github.com/tabbynet/tabby/felix/internal/nettest"
	"github.com/tabbynet/tabby/felix/routes"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

// kernel returns Tabby's IPv4 routes in the node by destination.
func kernel(t *testing.T, n *nettest.Node) map[string]netlink.Route {
	t.Helper()
	out := map[string]netlink.Route{}
	for _, r := range n.Routes(0) {
		if routes.IsTabbys(r) && r.Dst != nil {
			out[r.Dst.String()] = r
		}
	}
	return out
}

func mustApply(t *testing.T, rt *dataplane.RouteTable) dataplane.ApplyResult {
	t.Helper()
	res := rt.Apply()
	if res.Err != nil {
		t.Fatalf("apply: %v", res.Err)
	}
	return res
}

// TestRouteTable runs with routes written one at a time and with new routes batched.
func TestRouteTable(t *testing.T) {
	t.Run("single", func(t *testing.T) { testRouteTable(t, false) })
	t.Run("batched", func(t *testing.T) { testRouteTable(t, true) })
}

func testRouteTable(t *testing.T, batched bool) {
	nettest.Require(t)
	n := nettest.NewNode(t)
	cali1 := n.AddVeth("cali1", "cali1p", "")
	cali2 := n.AddVeth("cali2", "cali2p", "")
	n.AddVeth("uplink0", "uplink1", "192.168.77.1/24")
	n.IP("route", "add", "10.99.0.5/32", "dev", "cali1", "proto", "static")               // someone else's
	n.IP("route", "add", "10.99.0.6/32", "dev", "cali1", "scope", "link", "proto", "116") // a stray of ours
	n.IP("route", "add", "10.99.0.1/32", "dev", "cali2", "scope", "link", "proto", "116") // ours, wrong interface

	rt := dataplane.NewRouteTable(n.H, zaptest.NewLogger(t))
	if batched {
		rt.SetBatcher(newBatcher(t, n))
	}
	rt.Set(pfx("10.99.0.1/32"), dataplane.Target{Kind: dataplane.KindLocal, Interface: "cali1"})
	rt.Set(pfx("10.99.0.2/32"), dataplane.Target{Kind: dataplane.KindLocal, Interface: "cali2"})
	rt.Set(pfx("10.99.0.0/26"), dataplane.Target{Kind: dataplane.KindBlackhole})
	rt.Set(pfx("10.98.0.0/24"), dataplane.Target{Kind: dataplane.KindLearned, NextHops: []netip.Addr{addr("192.168.77.2"), addr("192.168.77.3")}})
	rt.Set(pfx("10.98.1.0/24"), dataplane.Target{Kind: dataplane.KindLearned, NextHops: []netip.Addr{addr("192.168.77.2")}})

	// Deletes not allowed yet (restart safety): only what is missing is added.
	res := rt.Apply()
	if res.Err != nil || !res.Resynced || res.Written != 4 || res.Pending != 2 {
		t.Fatalf("first apply = %+v", res)
	}
	k := kernel(t, n)
	if r := k["10.99.0.6/32"]; r.LinkIndex != cali1 {
		t.Fatal("a stray was deleted before deletes were allowed")
	}
	if r := k["10.99.0.1/32"]; r.LinkIndex != cali2 {
		t.Fatal("a route was replaced before deletes were allowed")
	}
	if ok, why := rt.Programmed(pfx("10.99.0.1/32")); ok || !strings.Contains(why, "in sync") {
		t.Fatalf("Programmed(10.99.0.1) = %v %q", ok, why)
	}

	rt.SetAllowDeletes(true, true)
	res = mustApply(t, rt)
	if res.Written != 2 || res.Pending != 0 {
		t.Fatalf("apply with deletes = %+v", res)
	}
	k = kernel(t, n)
	if _, ok := k["10.99.0.6/32"]; ok {
		t.Fatal("stray route of ours not removed")
	}
	if r := k["10.99.0.1/32"]; r.LinkIndex != cali1 || r.Scope != netlink.SCOPE_LINK || r.Protocol != routes.ProtocolLocal {
		t.Fatalf("local route = %+v", r)
	}
	if r := k["10.99.0.2/32"]; r.LinkIndex != cali2 {
		t.Fatalf("local route = %+v", r)
	}
	if r := k["10.99.0.0/26"]; r.Type != unix.RTN_BLACKHOLE || r.Protocol != routes.ProtocolLocal {
		t.Fatalf("blackhole = %+v", r)
	}
	if r := k["10.98.0.0/24"]; len(r.MultiPath) != 2 || r.Protocol != routes.ProtocolLearned {
		t.Fatalf("ECMP route = %+v", r)
	}
	if r := k["10.98.1.0/24"]; r.Gw.String() != "192.168.77.2" || r.Protocol != routes.ProtocolLearned {
		t.Fatalf("learned route = %+v", r)
	}
	foreign := false
	for _, r := range n.Routes(int(unix.RTPROT_STATIC)) {
		foreign = foreign || r.Dst.String() == "10.99.0.5/32"
	}
	if !foreign {
		t.Fatal("a route with another protocol was touched")
	}
	if c := rt.Counts(); c[dataplane.KindLocal] != 2 || c[dataplane.KindBlackhole] != 1 || c[dataplane.KindLearned] != 2 {
		t.Fatalf("counts = %v", c)
	}

	// A resync of an untouched kernel writes nothing: the cache reads the kernel right.
	rt.QueueResync()
	if res := mustApply(t, rt); res.Written != 0 || !res.Resynced {
		t.Fatalf("resync of a clean table = %+v", res)
	}

	// Drift: deleted by hand, back after a resync; and after a route event alone.
	n.IP("route", "del", "10.99.0.1/32")
	n.IP("route", "del", "10.98.0.0/24")
	rt.QueueResync()
	if res := mustApply(t, rt); res.Written != 2 {
		t.Fatalf("repair = %+v", res)
	}
	n.IP("route", "del", "10.99.0.2/32")
	rt.OnRouteUpdate(netlink.RouteUpdate{Type: unix.RTM_DELROUTE, Route: routes.WorkloadRoute(addr("10.99.0.2"), cali2)})
	if res := mustApply(t, rt); res.Written != 1 {
		t.Fatalf("repair from a route event = %+v", res)
	}
	if len(kernel(t, n)) != 5 {
		t.Fatalf("kernel after repairs: %v", kernel(t, n))
	}

	// Another daemon's route in the way: reported, never replaced.
	rt.Set(pfx("10.99.0.5/32"), dataplane.Target{Kind: dataplane.KindLocal, Interface: "cali2"})
	res = rt.Apply()
	if res.Failed != 1 || res.Err == nil || !strings.Contains(res.Err.Error(), "not Tabby's") {
		t.Fatalf("apply over a foreign route = %+v", res)
	}
	rt.Delete(pfx("10.99.0.5/32"))
	mustApply(t, rt)
	if len(n.Routes(int(unix.RTPROT_STATIC))) != 1 {
		t.Fatal("the foreign route went")
	}

	// An interface that does not exist yet: pending, then programmed when it appears.
	rt.Set(pfx("10.99.0.9/32"), dataplane.Target{Kind: dataplane.KindLocal, Interface: "cali9"})
	if res := mustApply(t, rt); res.Pending != 1 {
		t.Fatalf("route to a missing interface = %+v", res)
	}
	if ok, why := rt.Programmed(pfx("10.99.0.9/32")); ok || !strings.Contains(why, "cali9 not found") {
		t.Fatalf("Programmed = %v %q", ok, why)
	}
	n.AddVeth("cali9", "cali9p", "")
	l, err := n.H.LinkByName("cali9")
	if err != nil {
		t.Fatal(err)
	}
	rt.OnLinkUpdate(netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_NEWLINK}, Link: l})
	if res := mustApply(t, rt); res.Written != 1 || res.Pending != 0 {
		t.Fatalf("after the interface appeared = %+v", res)
	}
	if ok, _ := rt.Programmed(pfx("10.99.0.9/32")); !ok {
		t.Fatal("route to cali9 not programmed")
	}
	// The interface is recreated (same name, new index): the kernel dropped the route.
	n.IP("link", "del", "cali9")
	rt.OnLinkUpdate(netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_DELLINK}, Link: l})
	n.AddVeth("cali9", "cali9p", "")
	l2, _ := n.H.LinkByName("cali9")
	rt.OnLinkUpdate(netlink.LinkUpdate{Header: unix.NlMsghdr{Type: unix.RTM_NEWLINK}, Link: l2})
	mustApply(t, rt)
	if r := kernel(t, n)["10.99.0.9/32"]; r.LinkIndex != l2.Attrs().Index {
		t.Fatalf("route after the interface was recreated = %+v", r)
	}

	// Withdrawn routes go.
	rt.Delete(pfx("10.99.0.2/32"))
	rt.Delete(pfx("10.98.0.0/24"))
	mustApply(t, rt)
	k = kernel(t, n)
	if _, ok := k["10.99.0.2/32"]; ok {
		t.Fatal("withdrawn local route still there")
	}
	if _, ok := k["10.98.0.0/24"]; ok {
		t.Fatal("withdrawn learned route still there")
	}

	list, err := dataplane.ListRoutes(n.H)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range list {
		got = append(got, r.Kind.String()+" "+r.Dst.String()+" "+r.Dev)
	}
	want := []string{"local 10.99.0.1/32 cali1", "local 10.99.0.9/32 cali9", "blackhole 10.99.0.0/26 ",
		"learned 10.98.1.0/24 uplink0"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("ListRoutes = %q, want %q", got, want)
	}
}

func TestRouteTableIPv6(t *testing.T) {
	nettest.Require(t)
	n := nettest.NewNode(t)
	n.AddVeth("cali1", "cali1p", "")
	rt := dataplane.NewRouteTable(n.H, zaptest.NewLogger(t))
	rt.SetAllowDeletes(true, true)
	rt.Set(pfx("fd00:99::1/128"), dataplane.Target{Kind: dataplane.KindLocal, Interface: "cali1"})
	rt.Set(pfx("fd00:99::/122"), dataplane.Target{Kind: dataplane.KindBlackhole})
	if res := mustApply(t, rt); res.Written != 2 {
		t.Fatalf("apply = %+v", res)
	}
	rt.QueueResync()
	if res := mustApply(t, rt); res.Written != 0 {
		t.Fatalf("resync rewrote IPv6 routes (cache misreads the kernel): %+v", res)
	}
	if ok, why := rt.Programmed(pfx("fd00:99::1/128")); !ok {
		t.Fatal(why)
	}
}

func TestSysctls(t *testing.T) {
	nettest.Require(t)
	n := nettest.NewNode(t)
	n.AddVeth("cali1", "cali1p", "")
	thr, err := dataplane.NewNSThread(n.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer thr.Close()
	s := dataplane.NewSysctls(thr, "", zaptest.NewLogger(t))
	n.WriteSysctl("net/ipv4/conf/cali1/forwarding", "0") // new interfaces inherit ip_forward
	s.Set("cali1", true)
	s.Set("cali7", true)
	written, pending, err := s.Apply()
	if err != nil || written != 4 || pending != 1 { // forwarding was 0: all four
		t.Fatalf("apply = %d written, %d pending, %v", written, pending, err)
	}
	for _, sc := range dataplane.WorkloadSysctls {
		p := strings.ReplaceAll(sc.Path, "%s", "cali1")
		if v, err := n.ReadSysctl(p); err != nil || v != sc.Value {
			t.Errorf("%s = %q, %v; want %s", p, v, err, sc.Value)
		}
	}
	if ok, why := s.Programmed("cali7"); ok || !strings.Contains(why, "not found") {
		t.Fatalf("Programmed(cali7) = %v %q", ok, why)
	}
	s.QueueResync()
	if written, _, _ := s.Apply(); written != 0 {
		t.Fatalf("resync rewrote %d settings that were right", written)
	}
	n.WriteSysctl("net/ipv4/conf/cali1/proxy_arp", "0")
	n.AddVeth("cali7", "cali7p", "")
	n.WriteSysctl("net/ipv4/conf/cali7/forwarding", "0")
	s.OnLink("cali7")
	s.QueueResync()
	if written, pending, err := s.Apply(); written != 5 || pending != 0 || err != nil {
		t.Fatalf("repair = %d written, %d pending, %v", written, pending, err)
	}
}

func TestSubscribe(t *testing.T) {
	nettest.Require(t)
	n := nettest.NewNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var links []string
	var rts []string
	err := dataplane.Subscribe(ctx, n.Path, dataplane.Handlers{
		Link: func(u netlink.LinkUpdate) {
			mu.Lock()
			links = append(links, u.Attrs().Name)
			mu.Unlock()
		},
		Route: func(u netlink.RouteUpdate) {
			mu.Lock()
			rts = append(rts, u.Dst.String())
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	n.AddVeth("cali1", "cali1p", "")
	n.IP("route", "add", "10.99.0.7/32", "dev", "cali1", "proto", "static")
	n.IP("route", "add", "10.99.0.8/32", "dev", "cali1", "proto", "116")
	nettest.Eventually(t, 5*time.Second, "events", func() string {
		mu.Lock()
		defer mu.Unlock()
		has := strings.Contains(strings.Join(links, ","), "cali1")
		if !has || len(rts) == 0 {
			return "links " + strings.Join(links, ",") + " routes " + strings.Join(rts, ",")
		}
		return ""
	})
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(rts, ",") != "10.99.0.8/32" {
		t.Fatalf("route events = %v, want only Tabby's route", rts)
	}
}

// TestDeletesWaitForTheirSource: ProtocolLocal routes are removed only once local
// deletes are allowed, learned ones only once learned deletes are; a local route nothing
// wants gets its grace period; a route stays while the interface its endpoint names is
// missing.
func TestDeletesWaitForTheirSource(t *testing.T) {
	nettest.Require(t)
	n := nettest.NewNode(t)
	n.AddVeth("cali1", "cali1p", "")
	n.AddVeth("uplink0", "uplink1", "192.168.77.1/24")
	n.IP("route", "add", "10.99.1.0/24", "via", "192.168.77.2", "proto", "117")
	n.IP("route", "add", "10.99.0.1/32", "dev", "cali1", "scope", "link", "proto", "116")
	n.IP("route", "add", "10.99.0.2/32", "dev", "cali1", "scope", "link", "proto", "116")

	rt := dataplane.NewRouteTable(n.H, zaptest.NewLogger(t))
	const grace = 200 * time.Millisecond
	rt.SetGracePeriod(grace)
	// 10.99.0.2's endpoint names an interface that is not there (yet).
	rt.Set(pfx("10.99.0.2/32"), dataplane.Target{Kind: dataplane.KindLocal, Interface: "cali7"})
	rt.SetAllowDeletes(true, false)
	start := time.Now()
	res := mustApply(t, rt)
	if res.RetryIn <= 0 || res.RetryIn > grace {
		t.Fatalf("apply = %+v, want a retry within the grace period", res)
	}
	if len(kernel(t, n)) != 3 {
		t.Fatalf("routes deleted too early: %v", kernel(t, n))
	}
	// Apply again when the table asks (as felix does) until the route goes: not before
	// the grace period ends. The learned route still waits for its source.
	for deadline := time.Now().Add(5 * time.Second); ; {
		<-time.After(res.RetryIn)
		res = mustApply(t, rt)
		if _, ok := kernel(t, n)["10.99.0.1/32"]; !ok {
			break
		}
		if res.RetryIn <= 0 || time.Now().After(deadline) {
			t.Fatalf("unwanted local route kept after its grace period (apply %+v)", res)
		}
	}
	if since := time.Since(start); since < grace {
		t.Fatalf("unwanted local route deleted after %v, inside its grace period", since)
	}
	k := kernel(t, n)
	if _, ok := k["10.99.0.1/32"]; ok {
		t.Fatal("unwanted local route kept after its grace period")
	}
	if _, ok := k["10.99.1.0/24"]; !ok {
		t.Fatal("learned route deleted before learned deletes were allowed")
	}
	if _, ok := k["10.99.0.2/32"]; !ok {
		t.Fatal("route deleted while its endpoint's interface is missing")
	}
	rt.SetAllowDeletes(true, true)
	mustApply(t, rt)
	if _, ok := kernel(t, n)["10.99.1.0/24"]; ok {
		t.Fatal("learned route kept after learned deletes were allowed")
	}
}

// TestWithdrawnRouteSkipsGrace: the grace period covers routes felix has not seen
// wanted yet; a route that was wanted and is withdrawn (its endpoint deleted) goes on
// the next apply.
func TestWithdrawnRouteSkipsGrace(t *testing.T) {
	nettest.Require(t)
	n := nettest.NewNode(t)
	n.AddVeth("cali1", "cali1p", "")
	rt := dataplane.NewRouteTable(n.H, zaptest.NewLogger(t))
	rt.SetGracePeriod(time.Hour)
	rt.SetAllowDeletes(true, true)
	rt.Set(pfx("10.99.0.5/32"), dataplane.Target{Kind: dataplane.KindLocal, Interface: "cali1"})
	mustApply(t, rt)
	if _, ok := kernel(t, n)["10.99.0.5/32"]; !ok {
		t.Fatal("wanted route not written")
	}
	rt.Delete(pfx("10.99.0.5/32"))
	res := mustApply(t, rt)
	if _, ok := kernel(t, n)["10.99.0.5/32"]; ok {
		t.Fatalf("withdrawn route kept for the grace period (apply %+v)", res)
	}
}

func newBatcher(t *testing.T, n *nettest.Node) *dataplane.Batcher {
	t.Helper()
	b, err := dataplane.NewBatcher(n.Path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// TestBatchedAdds: 600 new routes go in batches (several sendmsgs), each with its own
// result: two whose prefixes another daemon's routes hold are refused and named (one
// in the middle of a batch: only a batch's last message asks for an ack, so its
// failure must still be told apart), one out of a missing interface waits, the rest
// are in the kernel.
func TestBatchedAdds(t *testing.T) {
	nettest.Require(t)
	n := nettest.NewNode(t)
	n.AddVeth("cali1", "cali1p", "")
	n.AddVeth("uplink0", "uplink1", "192.168.77.1/24")
	n.IP("route", "add", "10.97.1.5/32", "dev", "cali1", "proto", "static")  // someone else's
	n.IP("route", "add", "10.96.1.44/32", "dev", "cali1", "proto", "static") // in the 2nd batch

	rt := dataplane.NewRouteTable(n.H, zaptest.NewLogger(t))
	rt.SetBatcher(newBatcher(t, n))
	rt.SetAllowDeletes(true, true)
	for i := range 600 {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 96, byte(i / 256), byte(i % 256)}), 32)
		rt.Set(p, dataplane.Target{Kind: dataplane.KindLearned, NextHops: []netip.Addr{addr("192.168.77.2")}})
	}
	rt.Set(pfx("10.97.1.5/32"), dataplane.Target{Kind: dataplane.KindLocal, Interface: "cali1"})
	rt.Set(pfx("10.97.1.6/32"), dataplane.Target{Kind: dataplane.KindLocal, Interface: "cali9"})
	res := rt.Apply()
	if res.Written != 599 || res.Failed != 2 || res.Pending != 1 || res.Err == nil ||
		!strings.Contains(res.Err.Error(), "in the way") || !strings.Contains(res.Err.Error(), "10.96.1.44/32") {
		t.Fatalf("apply = %+v", res)
	}
	if got := len(n.Routes(int(routes.ProtocolLearned))); got != 599 {
		t.Fatalf("%d learned routes in the kernel, want 599", got)
	}
	// A second Apply finds nothing to write but the refused routes.
	if res := rt.Apply(); res.Written != 0 || res.Failed != 2 {
		t.Fatalf("second apply = %+v", res)
	}
}

// TestRouteEventFilter: the route subscription's socket filter lets through every event
// of a local (116) route and the deletes of learned (117) ones, with the fields the
// netlink library reads from a dump, and drops the adds of learned routes (felix's own
// writes) and everything of other protocols.
func TestRouteEventFilter(t *testing.T) {
	nettest.Require(t)
	n := nettest.NewNode(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var got []netlink.RouteUpdate
	if err := dataplane.Subscribe(ctx, n.Path, dataplane.Handlers{Route: func(u netlink.RouteUpdate) {
		mu.Lock()
		got = append(got, u)
		mu.Unlock()
	}}); err != nil {
		t.Fatal(err)
	}
	n.AddVeth("cali1", "cali1p", "")
	n.AddVeth("uplink0", "uplink1", "192.168.77.1/24")
	n.IP("addr", "add", "192.168.77.3/24", "dev", "uplink0")
	n.IP("route", "add", "10.99.2.0/26", "via", "192.168.77.2", "proto", "117")
	n.IP("route", "add", "10.99.3.0/26", "proto", "117", "nexthop", "via", "192.168.77.2", "nexthop", "via", "192.168.77.4")
	n.IP("route", "add", "10.99.4.0/26", "via", "192.168.77.2", "proto", "static")
	n.IP("route", "add", "10.99.0.9/32", "dev", "cali1", "scope", "link", "proto", "116", "metric", "7")
	want := map[string]netlink.Route{}
	for _, r := range append(n.Routes(116), n.Routes(117)...) {
		want[r.Dst.String()] = r
	}
	n.IP("route", "del", "10.99.2.0/26", "proto", "117")
	n.IP("route", "del", "10.99.3.0/26", "proto", "117")
	n.IP("route", "del", "10.99.4.0/26", "proto", "static")
	events := func() []string {
		mu.Lock()
		defer mu.Unlock()
		var out []string
		for _, u := range got {
			op := "add"
			if u.Type == unix.RTM_DELROUTE {
				op = "del"
			}
			out = append(out, op+" "+u.Dst.String())
		}
		return out
	}
	// The kernel queues events in order, so the learned adds and the static route,
	// made before the deletes that are seen, would be seen first had they passed.
	wantEvents := "add 10.99.0.9/32,del 10.99.2.0/26,del 10.99.3.0/26"
	nettest.Eventually(t, 5*time.Second, "route events", func() string {
		if e := strings.Join(events(), ","); e != wantEvents {
			return e
		}
		return ""
	})
	mu.Lock()
	defer mu.Unlock()
	for _, u := range got {
		w := want[u.Dst.String()]
		if u.Protocol != w.Protocol || u.Table != w.Table || u.Route.Type != w.Type || u.Scope != w.Scope ||
			u.Priority != w.Priority || u.LinkIndex != w.LinkIndex || !u.Gw.Equal(w.Gw) || len(u.MultiPath) != len(w.MultiPath) {
			t.Errorf("event %v\n  got  %+v\n  want %+v (the library's dump)", u.Dst, u.Route, w)
			continue
		}
		for i := range w.MultiPath {
			if !u.MultiPath[i].Gw.Equal(w.MultiPath[i].Gw) || u.MultiPath[i].LinkIndex != w.MultiPath[i].LinkIndex {
				t.Errorf("event %v next hop %d: got %+v, want %+v", u.Dst, i, u.MultiPath[i], w.MultiPath[i])
			}
		}
	}
}

// TestSysctlsOtherRoot: with the host's /proc/sys/net bind-mounted elsewhere (as an
// unprivileged container gets it), the settings written there land in the network
// namespace of the writing thread: the node's.
func TestSysctlsOtherRoot(t *testing.T) {
	nettest.Require(t)
	n := nettest.NewNode(t)
	n.AddVeth("cali2", "cali2p", "")
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("/proc/sys/net", filepath.Join(root, "net"), "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind-mount /proc/sys/net: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(filepath.Join(root, "net"), unix.MNT_DETACH) })
	thr, err := dataplane.NewNSThread(n.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer thr.Close()
	s := dataplane.NewSysctls(thr, root, zaptest.NewLogger(t))
	n.WriteSysctl("net/ipv4/conf/cali2/proxy_arp", "0")
	s.Set("cali2", true)
	if _, pending, err := s.Apply(); err != nil || pending != 0 {
		t.Fatalf("apply under %s: %d pending, %v", root, pending, err)
	}
	if v, err := n.ReadSysctl("net/ipv4/conf/cali2/proxy_arp"); err != nil || v != "1" {
		t.Fatalf("the node's cali2 proxy_arp = %q, %v; want 1", v, err)
	}
}
