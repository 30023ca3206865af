package router_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/router"
)

// kernelProto is the `ip route` protocol of the routes a kind installs.
var kernelProto = map[router.Kind]string{router.KindFRR: "bgp", router.KindBIRD: "bird"}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]router.Kind{"frr": router.KindFRR, "BIRD": router.KindBIRD, "gobgp": router.KindGoBGP, "gobgpd": router.KindGoBGP} {
		if k, err := router.ParseKind(in); err != nil || k != want {
			t.Errorf("ParseKind(%q) = %q, %v; want %q", in, k, err, want)
		}
	}
	if _, err := router.ParseKind("quagga"); err == nil {
		t.Error("ParseKind(quagga) succeeded")
	}
}

func TestConfigErrors(t *testing.T) {
	good := router.Config{Kind: router.KindGoBGP, Netns: "x", AS: 65000, RouterID: addr(1)}
	for name, mod := range map[string]func(*router.Config){
		"gobgpd install": func(c *router.Config) { c.InstallKernel = true },
		"no AS":          func(c *router.Config) { c.AS = 0 },
		"IPv6 prefix":    func(c *router.Config) { c.Originate = []netip.Prefix{pfx("fd00::/64")} },
		"neighbor twice": func(c *router.Config) {
			c.Neighbors = []router.Neighbor{{Addr: addr(2), AS: 1}, {Addr: addr(2), AS: 1}}
		},
		"blank password": func(c *router.Config) { c.Neighbors = []router.Neighbor{{Addr: addr(2), AS: 1, Password: "a b"}} },
	} {
		c := good
		mod(&c)
		if _, err := router.Start(context.Background(), c); err == nil {
			t.Errorf("%s: Start succeeded", name)
		}
	}
}

// TestInterop peers each kind with each other over eBGP: both originate prefixes and
// learn the other's, with the right next hop, in their RIB and (FRR, BIRD) kernel. The
// second router starts without neighbors and gets one with AddNeighbor; the first
// then announces and withdraws a prefix; RemoveNeighbor ends the session.
func TestInterop(t *testing.T) {
	for _, pair := range [][2]router.Kind{
		{router.KindFRR, router.KindBIRD},
		{router.KindBIRD, router.KindGoBGP},
		{router.KindGoBGP, router.KindFRR},
	} {
		t.Run(string(pair[0])+"-"+string(pair[1]), func(t *testing.T) {
			t.Parallel()
			testPair(t, pair[0], pair[1])
		})
	}
}

func testPair(t *testing.T, ka, kb router.Kind) {
	require(t, ka, kb)
	f := newFabric(t)
	nsA, nsB := f.member(1), f.member(2)
	pa := []netip.Prefix{pfx("10.75.0.128/29"), pfx("10.75.0.136/29")}
	pb := []netip.Prefix{pfx("10.75.0.192/29"), pfx("10.75.0.200/29")}
	a := start(t, router.Config{
		Kind: ka, Netns: nsA, AS: 65000, RouterID: addr(1), FastUpdates: true,
		Neighbors:     []router.Neighbor{{Addr: addr(2), AS: 64512}},
		Originate:     pa,
		InstallKernel: ka != router.KindGoBGP,
	})
	b := start(t, router.Config{
		Kind: kb, Netns: nsB, AS: 64512, RouterID: addr(2), FastUpdates: true,
		Originate:     pb,
		InstallKernel: kb != router.KindGoBGP,
	})
	ctx := netnode.Context(t, 2*time.Minute)
	if err := b.AddNeighbor(ctx, router.Neighbor{Addr: addr(1), AS: 65000}); err != nil {
		t.Fatal(err)
	}
	waitEstablished(t, a, addr(2))
	waitEstablished(t, b, addr(1))

	viaA := map[netip.Prefix][]netip.Addr{pa[0]: {addr(1)}, pa[1]: {addr(1)}}
	viaB := map[netip.Prefix][]netip.Addr{pb[0]: {addr(2)}, pb[1]: {addr(2)}}
	for _, rt := range waitRoutes(t, a, viaB) {
		if !slices.Equal(rt.ASPath, []uint32{64512}) || rt.Stale {
			t.Errorf("%s: route %+v: want AS path [64512], not stale", ka, rt)
		}
	}
	for _, rt := range waitRoutes(t, b, viaA) {
		if !slices.Equal(rt.ASPath, []uint32{65000}) || rt.Stale {
			t.Errorf("%s: route %+v: want AS path [65000], not stale", kb, rt)
		}
	}
	for _, r := range []*router.Router{a, b} {
		ps, err := r.Peers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) != 1 || ps[0].PrefixesReceived != 2 || !ps[0].Established() {
			t.Errorf("%s peers: %+v, want one Established with 2 prefixes", r.Kind, ps)
		}
		if n, err := r.RouteCount(ctx); err != nil || n != 2 {
			t.Errorf("%s route count: %d, %v; want 2", r.Kind, n, err)
		}
	}
	checkKernel(t, a, viaB)
	checkKernel(t, b, viaA)

	// Changes while running.
	extra := pfx("10.75.0.144/29")
	if err := a.Announce(ctx, extra); err != nil {
		t.Fatal(err)
	}
	if err := a.Withdraw(ctx, pa[0]); err != nil {
		t.Fatal(err)
	}
	waitRoutes(t, b, map[netip.Prefix][]netip.Addr{pa[1]: {addr(1)}, extra: {addr(1)}})

	if err := b.RemoveNeighbor(ctx, addr(1)); err != nil {
		t.Fatal(err)
	}
	netnode.WaitFor(t, fmt.Sprintf("%s: session down after RemoveNeighbor", ka), within, 100*time.Millisecond, func() error {
		if ps, err := b.Peers(ctx); err != nil || len(ps) != 0 {
			return fmt.Errorf("%s peers %+v, %v; want none", kb, ps, err)
		}
		if p, err := a.Peer(ctx, addr(2)); err != nil || p.Established() {
			return fmt.Errorf("%s peer %+v, %v; want not Established", ka, p, err)
		}
		return nil
	})
	waitRoutes(t, b, nil)
}

// checkKernel checks that r installed want in its namespace's kernel.
func checkKernel(t *testing.T, r *router.Router, want map[netip.Prefix][]netip.Addr) {
	t.Helper()
	proto, ok := kernelProto[r.Kind]
	if !ok {
		return
	}
	netnode.WaitFor(t, fmt.Sprintf("%s: routes in %s's kernel", r.Kind, r.Netns), within, 100*time.Millisecond, func() error {
		got := kernelRoutes(t, r.Netns, proto)
		if len(got) != len(want) {
			return fmt.Errorf("kernel routes %v, want %v", got, want)
		}
		for p, nhs := range want {
			if !sameAddrs(got[p], nhs) {
				return fmt.Errorf("kernel routes %v, want %v", got, want)
			}
		}
		if n, err := r.InstalledRoutes(context.Background()); err != nil || n != len(want) {
			return fmt.Errorf("InstalledRoutes: %d, %v; want %d", n, err, len(want))
		}
		return nil
	})
}

// TestMD5 peers FRR with gobgpd on a matching TCP MD5 password (the session comes up)
// and with BIRD on a mismatching one (the kernels drop its segments: no session).
func TestMD5(t *testing.T) {
	require(t, router.KindFRR, router.KindBIRD, router.KindGoBGP)
	t.Parallel()
	f := newFabric(t)
	nsF, nsG, nsB := f.member(1), f.member(2), f.member(3)
	tor := start(t, router.Config{
		Kind: router.KindFRR, Netns: nsF, AS: 65000, RouterID: addr(1),
		Neighbors: []router.Neighbor{
			{Addr: addr(2), AS: 64512, Password: "tabby-md5"},
			{Addr: addr(3), AS: 64513, Password: "tabby-md5"},
		},
		Originate: []netip.Prefix{pfx("10.75.0.128/29")},
	})
	gob := start(t, router.Config{
		Kind: router.KindGoBGP, Netns: nsG, AS: 64512, RouterID: addr(2),
		Neighbors: []router.Neighbor{{Addr: addr(1), AS: 65000, Password: "tabby-md5"}},
	})
	brd := start(t, router.Config{
		Kind: router.KindBIRD, Netns: nsB, AS: 64513, RouterID: addr(3),
		Neighbors: []router.Neighbor{{Addr: addr(1), AS: 65000, Password: "not-the-same"}},
	})
	waitEstablished(t, tor, addr(2))
	waitEstablished(t, gob, addr(1))
	waitRoutes(t, gob, map[netip.Prefix][]netip.Addr{pfx("10.75.0.128/29"): {addr(1)}})
	ctx := netnode.Context(t, time.Minute)
	netnode.WaitFor(t, "TCP MD5 failures between FRR and BIRD", within, 100*time.Millisecond, func() error {
		n1, err := md5Failures(ctx, nsF)
		if err != nil {
			return err
		}
		n2, err := md5Failures(ctx, nsB)
		if err != nil {
			return err
		}
		if n1+n2 == 0 {
			return errors.New("no TCPMD5Failure yet")
		}
		return nil
	})
	for _, c := range []struct {
		r    *router.Router
		peer netip.Addr
	}{{tor, addr(3)}, {brd, addr(1)}} {
		p, err := c.r.Peer(ctx, c.peer)
		if err != nil {
			t.Fatal(err)
		}
		if p.Established() {
			t.Errorf("%s: session with %v up despite mismatching passwords: %+v", c.r.Kind, c.peer, p)
		}
		t.Logf("%s: mismatching password: %+v", c.r.Kind, p)
	}
}

// TestMaxPrefixes has FRR originate four prefixes to one router of each kind that
// accepts at most two: each ends the session, and says why. (FRR checks the limit
// before it counts a prefix, so it lets one more in: three would not do.)
func TestMaxPrefixes(t *testing.T) {
	require(t, router.Kinds...)
	t.Parallel()
	f := newFabric(t)
	start(t, router.Config{
		Kind: router.KindFRR, Netns: f.member(1), AS: 65000, RouterID: addr(1), FastUpdates: true,
		Neighbors: []router.Neighbor{{Addr: addr(2), AS: 64512}, {Addr: addr(3), AS: 64513}, {Addr: addr(4), AS: 64514}},
		Originate: []netip.Prefix{pfx("10.75.0.128/29"), pfx("10.75.0.136/29"), pfx("10.75.0.144/29"), pfx("10.75.0.152/29")},
	})
	var limited []*router.Router
	for i, k := range router.Kinds {
		limited = append(limited, start(t, router.Config{
			Kind: k, Netns: f.member(i + 2), AS: 64512 + uint32(i), RouterID: addr(i + 2),
			Neighbors: []router.Neighbor{{Addr: addr(1), AS: 65000, MaxPrefixes: 2}},
		}))
	}
	ctx := netnode.Context(t, time.Minute)
	for _, r := range limited {
		netnode.WaitFor(t, fmt.Sprintf("%s: prefix limit hit", r.Kind), within, 100*time.Millisecond, func() error {
			p, err := r.Peer(ctx, addr(1))
			if err != nil {
				return err
			}
			if p.Established() || !strings.Contains(strings.ToLower(p.Info), "limit") {
				return fmt.Errorf("peer %+v", p)
			}
			t.Logf("%s: %+v", r.Kind, p)
			return nil
		})
	}
}

// TestGracefulRestart kills routers (SIGKILL, as in a crash) and checks that their
// graceful restart helpers keep the routes, marked stale: BIRD and gobgpd when FRR
// between them dies, FRR when BIRD and gobgpd around it die.
func TestGracefulRestart(t *testing.T) {
	require(t, router.Kinds...)
	t.Parallel()
	f := newFabric(t)
	gr := func(k router.Kind, i int, originate string, peers ...int) *router.Router {
		cfg := router.Config{
			Kind: k, Netns: f.member(i), AS: 65000 + uint32(i), RouterID: addr(i), FastUpdates: true,
			GracefulRestart: true, RestartTime: time.Minute,
			Originate: []netip.Prefix{pfx(originate)},
		}
		for _, p := range peers {
			cfg.Neighbors = append(cfg.Neighbors, router.Neighbor{Addr: addr(p), AS: 65000 + uint32(p)})
		}
		return start(t, cfg)
	}
	// Chain 1: BIRD (2) - FRR (1) - gobgpd (3); FRR dies.
	frr1 := gr(router.KindFRR, 1, "10.75.0.128/29", 2, 3)
	bird1 := gr(router.KindBIRD, 2, "10.75.0.136/29", 1)
	gob1 := gr(router.KindGoBGP, 3, "10.75.0.144/29", 1)
	// Chain 2: BIRD (5) - FRR (4) - gobgpd (6); BIRD and gobgpd die.
	frr2 := gr(router.KindFRR, 4, "10.75.0.152/29", 5, 6)
	bird2 := gr(router.KindBIRD, 5, "10.75.0.160/29", 4)
	gob2 := gr(router.KindGoBGP, 6, "10.75.0.168/29", 4)

	// On the shared subnet FRR passes the originator's next hop on (third party).
	waitRoutes(t, bird1, map[netip.Prefix][]netip.Addr{pfx("10.75.0.128/29"): {addr(1)}, pfx("10.75.0.144/29"): {addr(3)}})
	waitRoutes(t, gob1, map[netip.Prefix][]netip.Addr{pfx("10.75.0.128/29"): {addr(1)}, pfx("10.75.0.136/29"): {addr(2)}})
	waitRoutes(t, frr2, map[netip.Prefix][]netip.Addr{pfx("10.75.0.160/29"): {addr(5)}, pfx("10.75.0.168/29"): {addr(6)}})
	waitRoutes(t, bird2, map[netip.Prefix][]netip.Addr{pfx("10.75.0.152/29"): {addr(4)}, pfx("10.75.0.168/29"): {addr(6)}})
	waitRoutes(t, gob2, map[netip.Prefix][]netip.Addr{pfx("10.75.0.152/29"): {addr(4)}, pfx("10.75.0.160/29"): {addr(5)}})

	for _, r := range []*router.Router{frr1, bird2, gob2} {
		if err := r.Kill(); err != nil {
			t.Fatal(err)
		}
	}
	ctx := netnode.Context(t, time.Minute)
	for _, c := range []struct {
		r     *router.Router
		peers []netip.Addr
		want  []netip.Prefix
	}{
		{bird1, []netip.Addr{addr(1)}, []netip.Prefix{pfx("10.75.0.128/29"), pfx("10.75.0.144/29")}},
		{gob1, []netip.Addr{addr(1)}, []netip.Prefix{pfx("10.75.0.128/29"), pfx("10.75.0.136/29")}},
		{frr2, []netip.Addr{addr(5), addr(6)}, []netip.Prefix{pfx("10.75.0.160/29"), pfx("10.75.0.168/29")}},
	} {
		netnode.WaitFor(t, fmt.Sprintf("%s in %s: routes of its dead peers stale", c.r.Kind, c.r.Netns), within, 100*time.Millisecond, func() error {
			for _, a := range c.peers {
				p, err := c.r.Peer(ctx, a)
				if err != nil {
					return err
				}
				if p.Established() {
					return fmt.Errorf("session with %v still up", a)
				}
			}
			rs, err := c.r.Routes(ctx)
			if err != nil {
				return err
			}
			var stale []netip.Prefix
			for _, rt := range rs {
				if rt.Stale {
					stale = append(stale, rt.Prefix)
				}
			}
			if !slices.Equal(stale, c.want) {
				return fmt.Errorf("stale routes %v, want %v (routes %+v)", stale, c.want, rs)
			}
			return nil
		})
	}
}

// TestMultipath has two gobgpd nodes in different ASes originate the same prefix to an
// FRR and a BIRD ToR with Multipath: each ToR uses both next hops, in its RIB and as a
// multipath route in its kernel.
func TestMultipath(t *testing.T) {
	require(t, router.Kinds...)
	t.Parallel()
	f := newFabric(t)
	anycast := pfx("10.75.0.240/29")
	var tors []*router.Router
	for i, k := range []router.Kind{router.KindFRR, router.KindBIRD} {
		tors = append(tors, start(t, router.Config{
			Kind: k, Netns: f.member(i + 1), AS: 65000, RouterID: addr(i + 1), FastUpdates: true,
			Multipath: true, InstallKernel: true,
			Neighbors: []router.Neighbor{{Addr: addr(3), AS: 64512}, {Addr: addr(4), AS: 64513}},
		}))
	}
	for i := 3; i <= 4; i++ {
		start(t, router.Config{
			Kind: router.KindGoBGP, Netns: f.member(i), AS: 64509 + uint32(i), RouterID: addr(i),
			Neighbors: []router.Neighbor{{Addr: addr(1), AS: 65000}, {Addr: addr(2), AS: 65000}},
			Originate: []netip.Prefix{anycast},
		})
	}
	want := map[netip.Prefix][]netip.Addr{anycast: {addr(3), addr(4)}}
	for _, tor := range tors {
		waitRoutes(t, tor, want)
		checkKernel(t, tor, want)
	}
}

// TestScale has FRR originate 100,000 prefixes to BIRD and logs how long they take.
func TestScale(t *testing.T) {
	require(t, router.KindFRR, router.KindBIRD)
	t.Parallel()
	const n = 100_000
	// Host routes in 198.18.0.0/15 (the benchmarking range), only inside this
	// test's namespaces.
	ps := make([]netip.Prefix, n)
	for i := range ps {
		ps[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 18 + byte(i>>16), byte(i >> 8), byte(i)}), 32)
	}
	f := newFabric(t)
	nsF, nsB := f.member(1), f.member(2)
	t0 := time.Now()
	start(t, router.Config{
		Kind: router.KindFRR, Netns: nsF, AS: 65000, RouterID: addr(1), FastUpdates: true,
		Neighbors: []router.Neighbor{{Addr: addr(2), AS: 64512}},
		Originate: ps,
	})
	t.Logf("FRR with %d blackholes to originate up in %v", n, time.Since(t0))
	t1 := time.Now()
	brd := start(t, router.Config{
		Kind: router.KindBIRD, Netns: nsB, AS: 64512, RouterID: addr(2),
		Neighbors: []router.Neighbor{{Addr: addr(1), AS: 65000}},
	})
	ctx := netnode.Context(t, time.Minute)
	var up time.Duration
	netnode.WaitFor(t, fmt.Sprintf("BIRD has %d routes", n), 45*time.Second, 100*time.Millisecond, func() error {
		c, err := brd.RouteCount(ctx)
		if err != nil {
			return err
		}
		if up == 0 {
			if p, err := brd.Peer(ctx, addr(1)); err == nil && p.Established() {
				up = time.Since(t1)
			}
		}
		if c != n {
			return fmt.Errorf("%d routes", c)
		}
		return nil
	})
	t.Logf("BIRD: session up %v after its start, %d routes %v after its start", up, n, time.Since(t1))
}
