package router_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/router"
)

const suite = "test/router" // in skip messages

// nsPrefix starts every namespace this suite makes.
const nsPrefix = "tabbyr-"

// fastRetry keeps the tests quick: a router started before its peer retries soon.
const fastRetry = 2 * time.Second

var sweepOnce sync.Once

// require skips (fails under CI=true) unless we are root with ip and the kinds' programs.
func require(t *testing.T, kinds ...router.Kind) {
	t.Helper()
	netnode.RequireNetns(t, suite, "ip")
	for _, k := range kinds {
		netnode.Require(t, suite, string(k), router.Available(k))
	}
	sweepOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := netnode.SweepNetns(ctx, nsPrefix, t.Logf); err != nil {
			t.Logf("sweep namespaces of killed runs: %v", err)
		}
		entries, _ := os.ReadDir(os.TempDir())
		for _, e := range entries {
			if netnode.LeftByDeadRun(nsPrefix, e.Name()) {
				t.Logf("removing %s left by a killed run", e.Name())
				_ = os.RemoveAll(filepath.Join(os.TempDir(), e.Name()))
			}
		}
	})
}

// fabric is a namespace with a bridge, br0, that the routers' namespaces hang off.
type fabric struct {
	t      *testing.T
	prefix string // of its namespaces' names
}

func newFabric(t *testing.T) *fabric {
	t.Helper()
	id, err := netnode.RunID(nsPrefix)
	if err != nil {
		t.Fatal(err)
	}
	f := &fabric{t: t, prefix: id}
	br := f.prefix + "-br"
	netnode.MustRun(t, "ip", "netns", "add", br)
	t.Cleanup(func() { _, _ = netnode.Run(context.Background(), "ip", "netns", "del", br) })
	netnode.MustRun(t, "ip", "-n", br, "link", "add", "br0", "type", "bridge")
	netnode.MustRun(t, "ip", "-n", br, "link", "set", "br0", "up")
	return f
}

// addr is member i's address on the fabric, 10.75.0.i/24.
func addr(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 75, 0, byte(i)}) }

// member makes namespace <prefix>-<i> with eth0 on the bridge at addr(i); it is deleted
// when the test ends (after the routers in it, which are stopped first).
func (f *fabric) member(i int) string {
	t := f.t
	t.Helper()
	ns := fmt.Sprintf("%s-%d", f.prefix, i)
	port := "p" + strconv.Itoa(i)
	netnode.MustRun(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _, _ = netnode.Run(context.Background(), "ip", "netns", "del", ns) })
	netnode.MustRun(t, "ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", f.prefix+"-br")
	netnode.MustRun(t, "ip", "-n", f.prefix+"-br", "link", "set", port, "master", "br0", "up")
	netnode.MustRun(t, "ip", "-n", ns, "addr", "add", addr(i).String()+"/24", "dev", "eth0")
	netnode.MustRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
	netnode.MustRun(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	return ns
}

// start starts a router for the test; it is stopped when the test ends, its logs shown
// if the test failed.
func start(t *testing.T, cfg router.Config) *router.Router {
	t.Helper()
	if cfg.ConnectRetry == 0 {
		cfg.ConnectRetry = fastRetry
	}
	if cfg.Dir == "" {
		cfg.Dir = shortDir(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	r, err := router.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s router in %s:\n%s", r.Kind, r.Netns, r.Logs())
		}
		if err := r.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if _, err := os.Stat(r.Dir); !os.IsNotExist(err) {
			t.Errorf("router directory %s left behind (%v)", r.Dir, err)
		}
		if err := leftBehind(r); err != nil {
			t.Error(err)
		}
	})
	return r
}

// leftBehind reports processes and kernel routes a stopped router left.
func leftBehind(r *router.Router) error {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), r.Dir) {
			return fmt.Errorf("%s router: process %s left behind: %q", r.Kind, filepath.Dir(p), b)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, cmd := range [][]string{{"-4", "route", "show", "proto", "75"}, {"-4", "route", "show", "proto", "bgp"}, {"-4", "route", "show", "proto", "bird"}, {"nexthop", "show"}} {
		out, err := netnode.Run(ctx, "ip", append([]string{"-n", r.Netns}, cmd...)...)
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("%s router: left behind in %s (ip %v): %s", r.Kind, r.Netns, cmd, out)
		}
	}
	return nil
}

// shortDir is a directory for routers, short enough for unix socket paths.
func shortDir(t *testing.T) string {
	id, err := netnode.RunID(nsPrefix)
	if err != nil {
		t.Fatal(err)
	}
	d, err := os.MkdirTemp("", id+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// within is how long the tests wait for a condition.
const within = 30 * time.Second

func waitEstablished(t *testing.T, r *router.Router, peers ...netip.Addr) {
	t.Helper()
	netnode.WaitFor(t, fmt.Sprintf("%s in %s: sessions with %v established", r.Kind, r.Netns, peers), within, 100*time.Millisecond, func() error {
		for _, a := range peers {
			p, err := r.Peer(context.Background(), a)
			if err != nil {
				return err
			}
			if !p.Established() {
				return fmt.Errorf("%v: %s (%s)", a, p.State, p.Info)
			}
		}
		return nil
	})
}

// waitRoutes waits until r's learned routes are exactly want (prefix -> next hops).
func waitRoutes(t *testing.T, r *router.Router, want map[netip.Prefix][]netip.Addr) []router.Route {
	t.Helper()
	var got []router.Route
	netnode.WaitFor(t, fmt.Sprintf("%s in %s: routes %v", r.Kind, r.Netns, want), within, 100*time.Millisecond, func() error {
		var err error
		if got, err = r.Routes(context.Background()); err != nil {
			return err
		}
		return sameRoutes(got, want)
	})
	return got
}

func sameRoutes(got []router.Route, want map[netip.Prefix][]netip.Addr) error {
	if len(got) != len(want) {
		return fmt.Errorf("got %d routes %v, want %d", len(got), got, len(want))
	}
	for _, rt := range got {
		nhs, ok := want[rt.Prefix]
		if !ok {
			return fmt.Errorf("unexpected route %v", rt)
		}
		if !sameAddrs(rt.NextHops, nhs) {
			return fmt.Errorf("route %v: next hops %v, want %v", rt.Prefix, rt.NextHops, nhs)
		}
	}
	return nil
}

func sameAddrs(a, b []netip.Addr) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.SortFunc(a, netip.Addr.Compare)
	slices.SortFunc(b, netip.Addr.Compare)
	return slices.Equal(a, b)
}

// kernelRoutes are the IPv4 routes of protocol proto (bgp, bird) in ns's main table,
// prefix -> gateways.
func kernelRoutes(t *testing.T, ns, proto string) map[netip.Prefix][]netip.Addr {
	t.Helper()
	out := netnode.MustRun(t, "ip", "-n", ns, "-j", "-4", "route", "show", "proto", proto)
	var rs []struct {
		Dst      string `json:"dst"`
		Gateway  string `json:"gateway"`
		Nexthops []struct {
			Gateway string `json:"gateway"`
		} `json:"nexthops"`
	}
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("parse ip -j route: %v: %s", err, out)
	}
	m := map[netip.Prefix][]netip.Addr{}
	for _, r := range rs {
		p, err := netip.ParsePrefix(r.Dst)
		if err != nil {
			p, err = netip.ParsePrefix(r.Dst + "/32")
		}
		if err != nil {
			t.Fatalf("route %q: %v", r.Dst, err)
		}
		gws := []string{r.Gateway}
		for _, nh := range r.Nexthops {
			gws = append(gws, nh.Gateway)
		}
		for _, g := range gws {
			if a, err := netip.ParseAddr(g); err == nil {
				m[p] = append(m[p], a)
			}
		}
	}
	return m
}

// md5Failures is the TCPMD5Failure counter of namespace ns.
func md5Failures(ctx context.Context, ns string) (int, error) {
	out, err := netnode.Run(ctx, "ip", "netns", "exec", ns, "cat", "/proc/net/netstat")
	if err != nil {
		return 0, err
	}
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for j, n := range names {
			if n == "TCPMD5Failure" && j < len(vals) {
				return strconv.Atoi(vals[j])
			}
		}
	}
	return 0, fmt.Errorf("no TCPMD5Failure in %s's /proc/net/netstat", ns)
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }
