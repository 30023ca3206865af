package felix_test

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix"
	"github.com/tabbynet/tabby/felix/internal/nettest"
	"github.com/tabbynet/tabby/felix/routes"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap/zaptest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// grace is the tests' route cleanup grace period: short, but long enough to matter.
const grace = 300 * time.Millisecond

// running is a Felix started by a test.
type running struct {
	f    *felix.Felix
	reg  *prometheus.Registry
	stop func() // cancels Run and waits for it to return nil
}

func startFelix(t *testing.T, n *nettest.Node, node string, s datastore.Store, resync time.Duration) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	f, err := felix.New(felix.Config{NodeName: node, Store: s, Logger: zaptest.NewLogger(t), Registry: reg,
		ResyncInterval: resync, NetlinkHandle: n.H, NetNSPath: n.Path, RouteCleanupGracePeriod: grace})
	if err != nil {
		t.Fatal(err)
	}
	return &running{f: f, reg: reg, stop: runFelix(t, f)}
}

// runFelix runs f until the returned stop (also run at cleanup) cancels it and sees
// Run return nil.
func runFelix(t *testing.T, f *felix.Felix) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func mkWEP(ns, name, node, iface string, ips ...string) *v1.WorkloadEndpoint {
	return &v1.WorkloadEndpoint{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1.APIVersion, Kind: "WorkloadEndpoint"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.WorkloadEndpointSpec{Orchestrator: v1.OrchestratorPod, Workload: name, Node: node,
			InterfaceName: iface, IPNetworks: ips},
	}
}

func mkBlock(cidr, node string) *v1.IPAMBlock {
	p := netip.MustParsePrefix(cidr)
	size := 1 << (32 - p.Bits())
	aff := "host:" + node
	b := &v1.IPAMBlock{
		TypeMeta: metav1.TypeMeta{APIVersion: v1.APIVersion, Kind: "IPAMBlock"},
		ObjectMeta: metav1.ObjectMeta{Name: strings.NewReplacer(".", "-", "/", "-").Replace(cidr),
			Labels: map[string]string{"tabby.dev/node": node}},
		Spec: v1.IPAMBlockSpec{CIDR: cidr, Affinity: &aff, Allocations: make([]int, size),
			Unallocated: make([]int, size), Attributes: []v1.AllocationAttribute{}},
	}
	for i := range size {
		b.Spec.Allocations[i], b.Spec.Unallocated[i] = -1, i
	}
	return b
}

func create(t *testing.T, s datastore.Store, obj datastore.Object) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
}

// tabbyRoutes describes Tabby's IPv4 routes in the node, one string per route, sorted:
// "10.97.0.1/32 proto 116 dev cali1 scope link", "... blackhole", "... via a,b".
func tabbyRoutes(t *testing.T, n *nettest.Node) []string {
	t.Helper()
	var out []string
	for _, r := range n.Routes(0) {
		if !routes.IsTabbys(r) || r.Dst == nil {
			continue
		}
		s := fmt.Sprintf("%s proto %d", r.Dst, r.Protocol)
		switch {
		case r.Type == 6:
			s += " blackhole"
		case len(r.MultiPath) > 0:
			var gws []string
			for _, nh := range r.MultiPath {
				gws = append(gws, nh.Gw.String())
			}
			sort.Strings(gws)
			s += " via " + strings.Join(gws, ",")
		case r.Gw != nil:
			s += " via " + r.Gw.String()
		default:
			l, err := n.H.LinkByIndex(r.LinkIndex)
			if err != nil {
				t.Fatal(err)
			}
			s += " dev " + l.Attrs().Name + " scope " + r.Scope.String()
		}
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// wantRoutes waits until the node's routes of Tabby's are exactly want.
func wantRoutes(t *testing.T, n *nettest.Node, what string, want ...string) {
	t.Helper()
	want = append([]string(nil), want...)
	sort.Strings(want)
	nettest.Eventually(t, 10*time.Second, what, func() string {
		got := tabbyRoutes(t, n)
		if strings.Join(got, "\n") == strings.Join(want, "\n") {
			return ""
		}
		return fmt.Sprintf("routes\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	})
}

// gatedStore holds back the Synced event (and what follows) of every watch of one kind
// until open is closed: a datastore that is slow to sync after an agent restart.
type gatedStore struct {
	datastore.Store
	kind datastore.Kind
	open chan struct{}
}

func (g *gatedStore) Watch(ctx context.Context, k datastore.Kind, opts datastore.WatchOptions) (<-chan datastore.Event, error) {
	in, err := g.Store.Watch(ctx, k, opts)
	if err != nil || k.Name != g.kind.Name {
		return in, err
	}
	out := make(chan datastore.Event)
	go func() {
		defer close(out)
		gated := true
		for ev := range in {
			if gated && ev.Type == datastore.Synced {
				select {
				case <-g.open:
				case <-ctx.Done():
					return
				}
				gated = false
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// watchCount polls the number of Tabby's IPv4 routes in the node until ctx ends and
// returns a function that reports the fewest seen so far.
func watchCount(t *testing.T, ctx context.Context, n *nettest.Node) func() int {
	var mu sync.Mutex
	fewest := -1
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			c := 0
			rs, err := n.H.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: 254}, netlink.RT_FILTER_TABLE)
			if err == nil {
				for _, r := range rs {
					if routes.IsTabbys(r) {
						c++
					}
				}
				mu.Lock()
				if fewest < 0 || c < fewest {
					fewest = c
				}
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { <-done })
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return fewest
	}
}
