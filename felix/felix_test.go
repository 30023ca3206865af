package felix_test

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix"
	"github.com/tabbynet/tabby/felix/dataplane"
	"github.com/tabbynet/tabby/felix/internal/nettest"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var env *k8senv.Env

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	k8senv.Main(m, k8senv.Options{CRDDir: "../charts/tabby/crds"}, &env)
}

const node = "node-a"

// Addresses only these tests use, inside their own namespaces.
const (
	uplink             = "192.168.88.1/24" // the node's side of a veth; learned next hops are .2 and .3
	nextHop1, nextHop2 = "192.168.88.2", "192.168.88.3"
)

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestFelixProgramsTheNode(t *testing.T) {
	nettest.Require(t)
	n := nettest.NewNode(t)
	for i := 1; i <= 3; i++ {
		n.AddVeth(fmt.Sprintf("cali%d", i), fmt.Sprintf("cali%dp", i), "")
	}
	n.AddVeth("uplink0", "uplink1", uplink)
	n.IP("route", "add", "10.97.0.99/32", "dev", "cali1", "proto", "static")               // not Tabby's
	n.IP("route", "add", "10.97.0.98/32", "dev", "cali1", "scope", "link", "proto", "116") // a leftover of ours

	s := datastore.NewMemory()
	create(t, s, mkWEP("default", "a", node, "cali1", "10.97.0.1/32"))
	create(t, s, mkWEP("default", "b", node, "cali2", "10.97.0.2/32"))
	create(t, s, mkWEP("default", "c", "node-b", "cali3", "10.97.0.3/32"))
	create(t, s, mkWEP("default", "d", node, "cali4", "10.97.0.4/32"))
	create(t, s, mkBlock("10.97.0.0/26", node))
	create(t, s, mkBlock("10.97.1.0/26", "node-b"))

	// A resync period of an hour: every repair below comes from kernel events.
	r := startFelix(t, n, node, s, time.Hour)
	local1 := "10.97.0.1/32 proto 116 dev cali1 scope link"
	local2 := "10.97.0.2/32 proto 116 dev cali2 scope link"
	hole := "10.97.0.0/26 proto 116 blackhole"
	wantRoutes(t, n, "first programming (the leftover removed)", hole, local1, local2)
	for _, name := range []string{"a", "b"} {
		if err := r.f.WaitEndpointProgrammed(ctxFor(t, 10*time.Second), "default", name); err != nil {
			t.Fatal(err)
		}
	}
	if !r.f.Ready() {
		t.Fatal("not Ready after endpoints were programmed")
	}
	for _, iface := range []string{"cali1", "cali2"} {
		for _, sc := range dataplane.WorkloadSysctls {
			p := strings.ReplaceAll(sc.Path, "%s", iface)
			if v, err := n.ReadSysctl(p); err != nil || v != sc.Value {
				t.Errorf("%s = %q (%v), want %s", p, v, err, sc.Value)
			}
		}
	}
	if v, _ := n.ReadSysctl("net/ipv4/conf/cali3/proxy_arp"); v != "0" {
		t.Errorf("another node's interface got proxy_arp=%s", v)
	}

	// An endpoint whose interface does not exist yet waits for it.
	err := r.f.WaitEndpointProgrammed(ctxFor(t, 200*time.Millisecond), "default", "d")
	if err == nil || !strings.Contains(err.Error(), "cali4 not found") {
		t.Fatalf("wait for an endpoint without its interface: %v", err)
	}
	n.AddVeth("cali4", "cali4p", "")
	if err := r.f.WaitEndpointProgrammed(ctxFor(t, 10*time.Second), "default", "d"); err != nil {
		t.Fatal(err)
	}
	local4 := "10.97.0.4/32 proto 116 dev cali4 scope link"
	wantRoutes(t, n, "route once the interface appeared", hole, local1, local2, local4)

	// Drift: a route deleted by hand comes back; a stray of ours goes; others' stay.
	n.IP("route", "del", "10.97.0.1/32")
	n.IP("route", "add", "10.97.0.50/32", "dev", "cali2", "scope", "link", "proto", "116")
	wantRoutes(t, n, "repair", hole, local1, local2, local4)

	// A workload goes: its route goes.
	if err := s.Delete(ctxFor(t, 10*time.Second), datastore.KindWorkloadEndpoint, "default", "b", datastore.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, n, "endpoint deleted", hole, local1, local4)

	// Learned routes: two next hops make one multipath route.
	r.f.SetLearnedRoutes([]felix.LearnedRoute{{Prefix: netip.MustParsePrefix("10.96.0.0/24"),
		NextHops: []netip.Addr{netip.MustParseAddr(nextHop2), netip.MustParseAddr(nextHop1)}}})
	ecmp := "10.96.0.0/24 proto 117 via " + nextHop1 + "," + nextHop2
	wantRoutes(t, n, "learned ECMP route", hole, local1, local4, ecmp)

	// Changes only: one route added, then withdrawn again, the others untouched.
	r.f.UpdateLearnedRoutes([]felix.LearnedRoute{{Prefix: netip.MustParsePrefix("10.96.1.0/24"),
		NextHops: []netip.Addr{netip.MustParseAddr(nextHop1)}}}, nil)
	wantRoutes(t, n, "learned route added by a delta", hole, local1, local4, ecmp, "10.96.1.0/24 proto 117 via "+nextHop1)
	r.f.UpdateLearnedRoutes(nil, []netip.Prefix{netip.MustParsePrefix("10.96.1.0/24")})
	wantRoutes(t, n, "learned route withdrawn by a delta", hole, local1, local4, ecmp)

	foreign := false
	for _, rt := range n.Routes(unix.RTPROT_STATIC) {
		foreign = foreign || rt.Dst.String() == "10.97.0.99/32"
	}
	if !foreign {
		t.Fatal("a route with another protocol was removed")
	}

	nettest.Eventually(t, 10*time.Second, "status", func() string {
		st := r.f.Status()
		if !st.InSync || st.Routes != (felix.RouteCounts{Local: 2, Blackhole: 1, Learned: 1}) || len(st.Endpoints) != 2 {
			return fmt.Sprintf("%+v", st)
		}
		return ""
	})
	list, err := r.f.Routes()
	if err != nil || len(list) != 4 {
		t.Fatalf("Routes() = %+v, %v", list, err)
	}
	if l := list[3]; l.Kind != "learned" || l.Protocol != "117" || len(l.Via) != 2 || l.Dev != "uplink0" {
		t.Fatalf("learned route info = %+v", l)
	}
	checkMetrics(t, r)

	// Stopping leaves the kernel alone.
	before := tabbyRoutes(t, n)
	r.stop()
	if after := tabbyRoutes(t, n); strings.Join(after, "|") != strings.Join(before, "|") {
		t.Fatalf("routes changed on stop:\n%v\n%v", before, after)
	}
}

func checkMetrics(t *testing.T, r *running) {
	t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			switch {
			case m.Gauge != nil:
				got[name] = m.Gauge.GetValue()
			case m.Counter != nil:
				got[name] = m.Counter.GetValue()
			case m.Histogram != nil:
				got[name] = float64(m.Histogram.GetSampleCount())
			}
		}
	}
	want := map[string]float64{"tabby_felix_routes{kind=local}": 2, "tabby_felix_routes{kind=blackhole}": 1,
		"tabby_felix_routes{kind=learned}": 1, "tabby_felix_endpoints": 2}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("metric %s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	if got["tabby_felix_resyncs_total"] < 1 || got["tabby_felix_route_apply_seconds"] < 1 {
		t.Errorf("resyncs or applies not counted: %v", got)
	}
	if _, ok := got["tabby_felix_apply_errors_total"]; !ok {
		t.Error("tabby_felix_apply_errors_total missing")
	}
}

// TestRestartAdoptsWithoutDeleting restarts felix on a programmed node while the
// datastore is slow to sync: nothing of Tabby's is deleted until it has synced, then
// only what the datastore no longer wants; learned routes stay until the BGP speaker
// gives its table.
func TestRestartAdoptsWithoutDeleting(t *testing.T) {
	nettest.Require(t)
	n := nettest.NewNode(t)
	for i := 1; i <= 3; i++ {
		n.AddVeth(fmt.Sprintf("cali%d", i), fmt.Sprintf("cali%dp", i), "")
	}
	n.AddVeth("uplink0", "uplink1", uplink)
	s := datastore.NewMemory()
	for i := 1; i <= 3; i++ {
		create(t, s, mkWEP("default", fmt.Sprintf("w%d", i), node, fmt.Sprintf("cali%d", i), fmt.Sprintf("10.97.0.%d/32", i)))
	}
	create(t, s, mkBlock("10.97.0.0/26", node))
	learned := []felix.LearnedRoute{{Prefix: netip.MustParsePrefix("10.96.0.0/24"),
		NextHops: []netip.Addr{netip.MustParseAddr(nextHop1), netip.MustParseAddr(nextHop2)}}}

	first := startFelix(t, n, node, s, time.Hour)
	first.f.SetLearnedRoutes(learned)
	all := []string{"10.97.0.0/26 proto 116 blackhole", "10.97.0.1/32 proto 116 dev cali1 scope link",
		"10.97.0.2/32 proto 116 dev cali2 scope link", "10.97.0.3/32 proto 116 dev cali3 scope link",
		"10.96.0.0/24 proto 117 via " + nextHop1 + "," + nextHop2}
	wantRoutes(t, n, "before the restart", all...)

	// From here on, record every deletion of a route of Tabby's, and the fewest routes
	// of Tabby's seen at any moment.
	var mu sync.Mutex
	var deleted []string
	subCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	err := dataplane.Subscribe(subCtx, n.Path, dataplane.Handlers{Route: func(u netlink.RouteUpdate) {
		if u.Type == unix.RTM_DELROUTE {
			mu.Lock()
			deleted = append(deleted, u.Dst.String())
			mu.Unlock()
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	deletions := func() string {
		mu.Lock()
		defer mu.Unlock()
		return strings.Join(deleted, ",")
	}
	fewest := watchCount(t, subCtx, n)

	first.stop()
	// While felix was down, workload w2 went away.
	if err := s.Delete(ctxFor(t, 10*time.Second), datastore.KindWorkloadEndpoint, "default", "w2", datastore.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	gs := &gatedStore{Store: s, kind: datastore.KindWorkloadEndpoint, open: make(chan struct{})}
	second := startFelix(t, n, node, gs, time.Hour)
	nettest.Eventually(t, 10*time.Second, "first apply of the restarted felix", func() string {
		if second.f.Status().LastApply.IsZero() {
			return "no apply yet"
		}
		return ""
	})
	// More applies while the datastore is still syncing: a new block of the node's
	// (the block watch is not held back) is added; nothing is deleted.
	create(t, s, mkBlock("10.97.2.0/26", node))
	hole2 := "10.97.2.0/26 proto 116 blackhole"
	all = append(all, hole2)
	wantRoutes(t, n, "routes adopted, untouched, one added", all...)
	if second.f.Ready() {
		t.Fatal("Ready before the datastore synced")
	}
	if d := deletions(); d != "" {
		t.Fatalf("deleted before the datastore synced: %s", d)
	}
	if m := fewest(); m < len(all)-1 {
		t.Fatalf("the kernel had %d routes of Tabby's at one point during the restart, want at least %d", m, len(all)-1)
	}

	close(gs.open)
	withoutW2 := []string{all[0], all[1], all[3], hole2, all[4]}
	wantRoutes(t, n, "after the datastore synced", withoutW2...)
	nettest.Eventually(t, 10*time.Second, "ready", func() string {
		if !second.f.Ready() {
			return "not ready"
		}
		return ""
	})
	if err := second.f.WaitEndpointProgrammed(ctxFor(t, 10*time.Second), "default", "w1"); err != nil {
		t.Fatal(err)
	}
	// The monitor reads the kernel's delete events on its own goroutine: wait for them.
	nettest.Eventually(t, 10*time.Second, "only w2's route deleted after the sync", func() string {
		if d := deletions(); d != "10.97.0.2/32" {
			return fmt.Sprintf("deletions after sync = %q, want only w2's route", d)
		}
		return ""
	})
	// The BGP speaker has not given its table yet: the learned route stays.
	wantRoutes(t, n, "learned route kept", withoutW2...)
	second.f.SetLearnedRoutes(nil)
	wantRoutes(t, n, "learned route withdrawn", withoutW2[:4]...)
}

// TestKubeDatastore runs felix against the real kube-apiserver.
func TestKubeDatastore(t *testing.T) {
	nettest.Require(t)
	k8senv.Require(t, env)
	s, err := datastore.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	n := nettest.NewNode(t)
	n.AddVeth("cali1", "cali1p", "")
	nodeName := n.Name // unique per run
	ns := "felix-" + strings.TrimPrefix(n.Name, "tfx-")
	create(t, s, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	t.Cleanup(func() {
		_ = s.Delete(context.Background(), datastore.KindNamespace, "", ns, datastore.DeleteOptions{})
	})
	create(t, s, mkBlock("10.95.0.0/26", nodeName))
	t.Cleanup(func() {
		_ = s.Delete(context.Background(), datastore.KindIPAMBlock, "", mkBlock("10.95.0.0/26", nodeName).Name, datastore.DeleteOptions{})
	})
	r := startFelix(t, n, nodeName, s, time.Hour)
	create(t, s, mkWEP(ns, "pod-1", nodeName, "cali1", "10.95.0.1/32"))
	if err := r.f.WaitEndpointProgrammed(ctxFor(t, 30*time.Second), ns, "pod-1"); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, n, "routes from the real datastore", "10.95.0.0/26 proto 116 blackhole",
		"10.95.0.1/32 proto 116 dev cali1 scope link")
	if err := s.Delete(ctxFor(t, 10*time.Second), datastore.KindWorkloadEndpoint, ns, "pod-1", datastore.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wantRoutes(t, n, "route withdrawn", "10.95.0.0/26 proto 116 blackhole")
}

// TestRouteWrittenBeforeItsEndpointSurvives plays the CNI plugin: it writes a new pod's
// route (protocol 116) and only then the pod's WorkloadEndpoint. Felix must not delete
// the route in between, and then adopts it.
func TestRouteWrittenBeforeItsEndpointSurvives(t *testing.T) {
	nettest.Require(t)
	n := nettest.NewNode(t)
	s := datastore.NewMemory()
	create(t, s, mkBlock("10.97.0.0/26", node))
	r := startFelix(t, n, node, s, time.Hour)
	nettest.Eventually(t, 10*time.Second, "ready", func() string {
		if !r.f.Ready() {
			return "not ready"
		}
		return ""
	})
	var mu sync.Mutex
	var deleted []string
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := dataplane.Subscribe(ctx, n.Path, dataplane.Handlers{Route: func(u netlink.RouteUpdate) {
		if u.Type == unix.RTM_DELROUTE {
			mu.Lock()
			deleted = append(deleted, u.Dst.String())
			mu.Unlock()
		}
	}}); err != nil {
		t.Fatal(err)
	}
	n.AddVeth("cali5", "cali5p", "")
	n.IP("route", "add", "10.97.0.5/32", "dev", "cali5", "scope", "link", "proto", "116")
	create(t, s, mkWEP("default", "new-pod", node, "cali5", "10.97.0.5/32"))
	if err := r.f.WaitEndpointProgrammed(ctxFor(t, 10*time.Second), "default", "new-pod"); err != nil {
		t.Fatal(err)
	}
	// Past the grace period the route is still there, untouched.
	time.Sleep(2 * grace) // the grace period is the behaviour under test
	wantRoutes(t, n, "adopted", "10.97.0.0/26 proto 116 blackhole", "10.97.0.5/32 proto 116 dev cali5 scope link")
	mu.Lock()
	defer mu.Unlock()
	if len(deleted) != 0 {
		t.Fatalf("routes deleted: %v", deleted)
	}
}
