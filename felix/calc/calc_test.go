package calc

import (
	"encoding/json"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const node = "node-a"

func wep(ns, name, node, iface string, ips ...string) *v1.WorkloadEndpoint {
	return &v1.WorkloadEndpoint{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.WorkloadEndpointSpec{Orchestrator: v1.OrchestratorPod, Workload: name, Node: node,
			InterfaceName: iface, IPNetworks: ips},
	}
}

func block(name, cidr, affinity string) *v1.IPAMBlock {
	b := &v1.IPAMBlock{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.IPAMBlockSpec{CIDR: cidr}}
	if affinity != "" {
		b.Spec.Affinity = &affinity
	}
	return b
}

func learned(prefix string, nhs ...string) LearnedRoute {
	r := LearnedRoute{}
	if prefix != "" {
		r.Prefix = netip.MustParsePrefix(prefix)
	}
	for _, nh := range nhs {
		r.NextHops = append(r.NextHops, netip.MustParseAddr(nh))
	}
	return r
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
func addr(s string) netip.Addr  { return netip.MustParseAddr(s) }

type input struct {
	weps    []*v1.WorkloadEndpoint
	blocks  []*v1.IPAMBlock
	learned []LearnedRoute
}

func build(in input) *Graph {
	g := NewGraph(node, zap.NewNop())
	for _, w := range in.weps {
		g.UpsertEndpoint(w)
	}
	for _, b := range in.blocks {
		g.UpsertBlock(b)
	}
	g.SetLearned(in.learned)
	return g
}

func TestDesired(t *testing.T) {
	deleted := block("b-del", "10.65.3.0/26", "host:"+node)
	deleted.Spec.Deleted = true
	tests := []struct {
		name string
		in   input
		want DesiredState
	}{
		{
			name: "empty",
			want: DesiredState{LocalRoutes: map[netip.Prefix]string{}, Blackholes: []netip.Prefix{},
				Learned: map[netip.Prefix][]netip.Addr{}, Interfaces: []string{}},
		},
		{
			name: "local endpoints and blocks; other nodes ignored",
			in: input{
				weps: []*v1.WorkloadEndpoint{
					wep("default", "a", node, "cali1", "10.65.0.1/32"),
					wep("default", "b", node, "cali2", "10.65.0.2/32", "fd00::2/128"),
					wep("default", "c", "node-b", "cali3", "10.65.1.1/32"),
				},
				blocks: []*v1.IPAMBlock{
					block("b1", "10.65.0.0/26", "host:"+node),
					block("b2", "10.65.1.0/26", "host:node-b"),
					block("b3", "10.65.2.0/26", ""),
					deleted,
				},
			},
			want: DesiredState{
				LocalRoutes: map[netip.Prefix]string{pfx("10.65.0.1/32"): "cali1", pfx("10.65.0.2/32"): "cali2",
					pfx("fd00::2/128"): "cali2"},
				Blackholes: []netip.Prefix{pfx("10.65.0.0/26")},
				Learned:    map[netip.Prefix][]netip.Addr{},
				Interfaces: []string{"cali1", "cali2"},
			},
		},
		{
			name: "learned routes: ECMP sorted and deduplicated, merged, masked, bad ones skipped",
			in: input{learned: []LearnedRoute{
				learned("10.70.0.0/26", "192.168.9.3", "192.168.9.2", "192.168.9.3"),
				learned("10.70.1.0/26", "192.168.9.2"),
				learned("10.70.1.0/26", "192.168.9.4"),
				learned("10.70.2.77/26", "192.168.9.2"),
				learned("10.70.3.0/26", "fd00::1", "192.168.9.5"),
				learned("10.70.4.0/26", "fd00::1"),
				learned("10.70.5.0/26"),
				learned("", "192.168.9.2"),
				learned("10.70.6.0/26", "0.0.0.0"),
			}},
			want: DesiredState{
				LocalRoutes: map[netip.Prefix]string{}, Blackholes: []netip.Prefix{}, Interfaces: []string{},
				Learned: map[netip.Prefix][]netip.Addr{
					pfx("10.70.0.0/26"):  {addr("192.168.9.2"), addr("192.168.9.3")},
					pfx("10.70.1.0/26"):  {addr("192.168.9.2"), addr("192.168.9.4")},
					pfx("10.70.2.64/26"): {addr("192.168.9.2")},
					pfx("10.70.3.0/26"):  {addr("192.168.9.5")},
				},
			},
		},
		{
			name: "precedence: local over blackhole over learned",
			in: input{
				weps:    []*v1.WorkloadEndpoint{wep("ns", "a", node, "cali1", "10.65.0.1/32")},
				blocks:  []*v1.IPAMBlock{block("b1", "10.65.0.0/26", "host:"+node), block("b32", "10.65.9.9/32", "host:"+node)},
				learned: []LearnedRoute{learned("10.65.0.1/32", "192.168.9.2"), learned("10.65.0.0/26", "192.168.9.2"), learned("10.66.0.0/26", "192.168.9.2")},
			},
			want: DesiredState{
				LocalRoutes: map[netip.Prefix]string{pfx("10.65.0.1/32"): "cali1"},
				Blackholes:  []netip.Prefix{pfx("10.65.0.0/26"), pfx("10.65.9.9/32")},
				Learned:     map[netip.Prefix][]netip.Addr{pfx("10.66.0.0/26"): {addr("192.168.9.2")}},
				Interfaces:  []string{"cali1"},
			},
		},
		{
			name: "bad input is skipped, the rest programmed",
			in: input{
				weps: []*v1.WorkloadEndpoint{
					wep("ns", "bad-ips", node, "cali1", "10.65.0.300/32", "10.65.0.0/24", "banana", "0.0.0.0/32", "10.65.0.7/32", "10.65.0.7"),
					wep("ns", "bad-iface", node, "../../etc", "10.65.0.8/32"),
					wep("ns", "all", node, "all", "10.65.0.9/32"),
					wep("ns", "long", node, "cali0123456789abcdef", "10.65.0.10/32"),
				},
				blocks: []*v1.IPAMBlock{block("bad", "10.65.0.0/33", "host:"+node), block("b1", " 10.65.0.0/26", "host:"+node)},
			},
			want: DesiredState{
				LocalRoutes: map[netip.Prefix]string{pfx("10.65.0.7/32"): "cali1"},
				Blackholes:  []netip.Prefix{pfx("10.65.0.0/26")},
				Learned:     map[netip.Prefix][]netip.Addr{},
				Interfaces:  []string{"cali1"},
			},
		},
		{
			name: "two endpoints claim one address: the first by namespace/name wins",
			in: input{weps: []*v1.WorkloadEndpoint{
				wep("ns", "zz", node, "cali2", "10.65.0.1/32"),
				wep("ns", "aa", node, "cali1", "10.65.0.1/32"),
			}},
			want: DesiredState{
				LocalRoutes: map[netip.Prefix]string{pfx("10.65.0.1/32"): "cali1"},
				Blackholes:  []netip.Prefix{}, Learned: map[netip.Prefix][]netip.Addr{},
				Interfaces: []string{"cali1", "cali2"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := build(tc.in).Desired()
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("desired state:\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestBadInputIsLoggedAndReported(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	g := NewGraph(node, zap.New(core))
	g.UpsertEndpoint(wep("ns", "w", node, "cali1", "10.65.0.300/32", "10.65.0.4/32"))
	g.UpsertBlock(block("bad", "nonsense", "host:"+node))
	g.SetLearned([]LearnedRoute{learned("10.70.0.0/26"), learned("10.70.1.0/26"), learned("10.70.2.0/26", "192.168.9.1")})
	ep, ok := g.Endpoint("ns/w")
	if !ok || len(ep.Problems) != 1 || !strings.Contains(ep.Problems[0], "spec.ipNetworks[0]") ||
		!reflect.DeepEqual(ep.IPs, []netip.Addr{addr("10.65.0.4")}) {
		t.Fatalf("endpoint = %+v", ep)
	}
	if n := logs.FilterMessageSnippet("bad").Len(); n < 3 {
		t.Errorf("want warnings for the endpoint, the block and the learned routes; got %d: %v", n, logs.All())
	}
	if g.Desired().LocalRoutes[pfx("10.65.0.4/32")] != "cali1" {
		t.Error("the good address of a partly bad endpoint got no route")
	}
}

func TestIncrementalChanges(t *testing.T) {
	g := NewGraph(node, nil)
	g.UpsertEndpoint(wep("ns", "a", node, "cali1", "10.65.0.1/32"))
	g.UpsertBlock(block("b1", "10.65.0.0/26", "host:"+node))
	c := g.TakeChanges()
	if r := c.Routes[pfx("10.65.0.1/32")]; r == nil || r.Kind != KindLocal || r.Interface != "cali1" {
		t.Fatalf("local route change = %+v", r)
	}
	if r := c.Routes[pfx("10.65.0.0/26")]; r == nil || r.Kind != KindBlackhole {
		t.Fatalf("blackhole change = %+v", r)
	}
	if !c.Interfaces["cali1"] || !c.Endpoints["ns/a"] {
		t.Fatalf("changes = %+v", c)
	}
	if c := g.TakeChanges(); len(c.Routes)+len(c.Interfaces)+len(c.Endpoints) != 0 {
		t.Fatalf("changes not forgotten: %+v", c)
	}
	// An update that changes nothing is no change.
	g.UpsertEndpoint(wep("ns", "a", node, "cali1", "10.65.0.1/32"))
	if c := g.TakeChanges(); len(c.Routes)+len(c.Endpoints) != 0 {
		t.Fatalf("identical update made changes: %+v", c)
	}
	// A second endpoint on the same interface keeps it wanted when the first goes.
	g.UpsertEndpoint(wep("ns", "b", node, "cali1", "10.65.0.2/32"))
	g.RemoveEndpoint("ns", "a")
	c = g.TakeChanges()
	if r, ok := c.Routes[pfx("10.65.0.1/32")]; !ok || r != nil {
		t.Fatalf("deleted endpoint's route not withdrawn: %+v", c.Routes)
	}
	if want, ok := c.Interfaces["cali1"]; ok && !want {
		t.Fatal("interface still used by ns/b was withdrawn")
	}
	// Moving to another node is leaving this one.
	g.UpsertEndpoint(wep("ns", "b", "node-b", "cali1", "10.65.0.2/32"))
	c = g.TakeChanges()
	if r, ok := c.Routes[pfx("10.65.0.2/32")]; !ok || r != nil || c.Interfaces["cali1"] {
		t.Fatalf("endpoint moved away still routed: %+v", c)
	}
	// Learned: only changed prefixes are dirty.
	g.SetLearned([]LearnedRoute{learned("10.70.0.0/26", "192.168.9.2"), learned("10.70.1.0/26", "192.168.9.2")})
	g.TakeChanges()
	g.SetLearned([]LearnedRoute{learned("10.70.0.0/26", "192.168.9.2", "192.168.9.3")})
	c = g.TakeChanges()
	if len(c.Routes) != 2 || c.Routes[pfx("10.70.1.0/26")] != nil ||
		!reflect.DeepEqual(c.Routes[pfx("10.70.0.0/26")].NextHops, []netip.Addr{addr("192.168.9.2"), addr("192.168.9.3")}) {
		t.Fatalf("learned changes = %+v", c.Routes)
	}
	// UpdateLearned: only what the delta changes is dirty; an unchanged route, a
	// withdrawal of what is not there, and a route with no usable next hop (which
	// drops the old one) behave as in SetLearned.
	g.UpdateLearned(map[netip.Prefix][]netip.Addr{
		pfx("10.70.0.0/26"): {addr("192.168.9.3"), addr("192.168.9.2")}, // same set, other order
		pfx("10.70.2.0/26"): {addr("192.168.9.4")},
		pfx("10.70.9.0/26"): nil,
	})
	c = g.TakeChanges()
	if len(c.Routes) != 1 || !reflect.DeepEqual(c.Routes[pfx("10.70.2.0/26")].NextHops, []netip.Addr{addr("192.168.9.4")}) {
		t.Fatalf("learned delta changes = %+v", c.Routes)
	}
	g.UpdateLearned(map[netip.Prefix][]netip.Addr{
		pfx("10.70.2.0/26"): nil,
		pfx("10.70.0.0/26"): {netip.IPv4Unspecified()},
	})
	c = g.TakeChanges()
	if len(c.Routes) != 2 || c.Routes[pfx("10.70.2.0/26")] != nil || c.Routes[pfx("10.70.0.0/26")] != nil {
		t.Fatalf("learned delta withdrawals = %+v", c.Routes)
	}
	if _, ok := g.Route(pfx("10.70.0.0/26")); ok {
		t.Fatal("a route with no usable next hop is still desired")
	}
	// The winner of a contested address going away hands the route to the other.
	g.UpsertEndpoint(wep("ns", "x", node, "cali8", "10.65.0.50/32"))
	g.UpsertEndpoint(wep("ns", "y", node, "cali9", "10.65.0.50/32"))
	g.TakeChanges()
	g.RemoveEndpoint("ns", "x")
	c = g.TakeChanges()
	if r := c.Routes[pfx("10.65.0.50/32")]; r == nil || r.Interface != "cali9" || !c.Endpoints["ns/y"] {
		t.Fatalf("contested address after the winner left: %+v", c)
	}
}

func TestNewestEndpointWinsAnAddress(t *testing.T) {
	g := NewGraph(node, nil)
	old := wep("ns", "aa-old", node, "cali1", "10.65.0.1/32")
	old.CreationTimestamp = metav1.NewTime(time.Unix(1000, 0))
	young := wep("ns", "zz-new", node, "cali2", "10.65.0.1/32")
	young.CreationTimestamp = metav1.NewTime(time.Unix(2000, 0))
	g.UpsertEndpoint(old)
	g.UpsertEndpoint(young)
	if got := g.Desired().LocalRoutes[pfx("10.65.0.1/32")]; got != "cali2" || g.Owner(pfx("10.65.0.1/32")) != "ns/zz-new" {
		t.Fatalf("route goes to %s (owner %s), want the newer endpoint's cali2", got, g.Owner(pfx("10.65.0.1/32")))
	}
	g.RemoveEndpoint("ns", "zz-new")
	if got := g.Desired().LocalRoutes[pfx("10.65.0.1/32")]; got != "cali1" {
		t.Fatalf("after the newer left, route goes to %q", got)
	}
}

func TestReplace(t *testing.T) {
	g := NewGraph(node, nil)
	g.UpsertEndpoint(wep("ns", "a", node, "cali1", "10.65.0.1/32"))
	g.UpsertEndpoint(wep("ns", "b", node, "cali2", "10.65.0.2/32"))
	g.UpsertBlock(block("b1", "10.65.0.0/26", "host:"+node))
	g.UpsertBlock(block("b2", "10.65.1.0/26", "host:"+node))
	g.ReplaceEndpoints([]*v1.WorkloadEndpoint{wep("ns", "b", node, "cali2", "10.65.0.2/32")})
	g.ReplaceBlocks([]*v1.IPAMBlock{block("b2", "10.65.1.0/26", "host:"+node)})
	d := g.Desired()
	want := DesiredState{
		LocalRoutes: map[netip.Prefix]string{pfx("10.65.0.2/32"): "cali2"},
		Blackholes:  []netip.Prefix{pfx("10.65.1.0/26")},
		Learned:     map[netip.Prefix][]netip.Addr{}, Interfaces: []string{"cali2"},
	}
	if !reflect.DeepEqual(d, want) {
		t.Fatalf("after replace: %+v", d)
	}
	// A block whose affinity moves to another node loses its blackhole.
	g.UpsertBlock(block("b2", "10.65.1.0/26", "host:node-b"))
	if d := g.Desired(); len(d.Blackholes) != 0 {
		t.Fatalf("blackholes after the affinity moved: %v", d.Blackholes)
	}
}

// TestGolden checks a whole node's desired state against testdata/golden.json (run
// with -update to rewrite it after an intended change).
func TestGolden(t *testing.T) {
	in := input{
		weps: []*v1.WorkloadEndpoint{
			wep("prod", "web-0", node, "cali0a1b2c3d4e5", "10.65.0.5/32"),
			wep("prod", "web-1", node, "cali1a1b2c3d4e5", "10.65.0.6/32", "fd00:65::6/128"),
			wep("vms", "guest", node, "vnet0", "10.65.0.70/32"),
			wep("prod", "db-0", "node-b", "cali2a1b2c3d4e5", "10.65.1.5/32"),
			wep("prod", "broken", node, "cali3a1b2c3d4e5", "not-an-ip"),
		},
		blocks: []*v1.IPAMBlock{
			block("10-65-0-0-26", "10.65.0.0/26", "host:"+node),
			block("10-65-0-64-26", "10.65.0.64/26", "host:"+node),
			block("10-65-1-0-26", "10.65.1.0/26", "host:node-b"),
		},
		learned: []LearnedRoute{
			learned("10.65.1.0/26", "192.168.10.2"),
			learned("10.65.2.0/26", "192.168.10.3", "192.168.10.2"),
			learned("0.0.0.0/0", "192.168.10.1"),
		},
	}
	got, err := json.MarshalIndent(build(in).Desired(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	path := filepath.Join("testdata", "golden.json")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if string(got) != string(want) {
		t.Errorf("desired state differs from %s:\n%s", path, got)
	}
}

// TestStandbyEndpoint: a standby endpoint's interface gets its sysctls but no route;
// when it leaves standby its addresses are routed to it, and back.
func TestStandbyEndpoint(t *testing.T) {
	g := NewGraph(node, nil)
	w := wep("ns", "vm", node, "tap1", "10.65.0.9/32")
	w.Spec.Standby = true
	g.UpsertEndpoint(w)
	d := g.Desired()
	if _, routed := d.LocalRoutes[pfx("10.65.0.9/32")]; routed || !slices.Contains(d.Interfaces, "tap1") {
		t.Fatalf("standby: routes %v, interfaces %v; want no route and tap1's sysctls", d.LocalRoutes, d.Interfaces)
	}
	w = w.DeepCopy()
	w.Spec.Standby = false
	g.UpsertEndpoint(w)
	if got := g.Desired().LocalRoutes[pfx("10.65.0.9/32")]; got != "tap1" {
		t.Fatalf("after standby: route to %q, want tap1", got)
	}
	w = w.DeepCopy()
	w.Spec.Standby = true
	g.UpsertEndpoint(w)
	if _, routed := g.Desired().LocalRoutes[pfx("10.65.0.9/32")]; routed {
		t.Fatal("back on standby: still routed")
	}
}
