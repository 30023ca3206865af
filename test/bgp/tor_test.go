package bgp_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/router"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestToR: for each router we did not write (FRR bgpd, BIRD 2, gobgpd) as the
// top-of-rack router, AS 65000 on the fabric, two nodes peer eBGP with it (a global
// BGPPeer) and iBGP with each other (the mesh). Checked with the router's own CLI
// (vtysh, birdc, gobgp through test/router): both sessions Established, and each
// node's /26 in its RIB with AS path [64512] and the owner's fabric address as its only
// next hop. From the nodes' local APIs: the ToR session Established of type global
// and the mesh session Established. In each node's kernel: exactly the other node's
// block over BGP (protocol 117) via the other's fabric address. The pods ping across
// both ways.
//
// What the nodes learn from the router: it passes every node's block on to the other
// node with AS path [65000 64512]; a node finds its own AS, 64512, in it and drops the
// route as an AS-path loop (no numAllowedLocalASNumbers on the BGPPeer), so the ToR
// session's accepted prefixes are 0 (how many it received varies with the router and
// the timing; what it accepted does not). The mesh carries the blocks. Were such a
// route accepted, the mesh path would still win (a shorter AS path), so the kernel
// check holds either way.
//
// What the router learns: each node advertises its own block, next hop itself, and
// also passes on the block it learned over the mesh (a pool prefix, exported to the
// global peer) with the owner's address as next hop: a third-party next hop on the
// shared subnet (RFC 4271 5.1.3), as BIRD does for Calico. So the router may hold two
// paths to a block, both via the owner; with multipath on, the route must list the
// owner and nothing else (a next hop of the other node would cost every packet an
// extra hop through it).
func TestToR(t *testing.T) {
	for _, kind := range router.Kinds {
		t.Run(string(kind), func(t *testing.T) { testToRInterop(t, kind) })
	}
}

func testToRInterop(t *testing.T, kind router.Kind) {
	tc := newToR(t, torSpec{kind: kind, nodes: 2, pods: true,
		routerCfg: func(c *router.Config) { c.Multipath = true }})
	waitFor(t, fmt.Sprintf("%s: sessions with both nodes Established", kind), 60*time.Second, tc.torEstablished)
	for i, n := range tc.nodes {
		other := tc.nodes[1-i]
		waitFor(t, n.Name+": the ToR (global) and mesh sessions Established", 60*time.Second, func() error {
			if err := established(n, tc.torIP, "global"); err != nil {
				return err
			}
			return established(n, other.IP, "mesh")
		})
	}

	waitFor(t, fmt.Sprintf("%s: each node's block in the RIB via its owner", kind), 30*time.Second, func() error {
		for i, n := range tc.nodes {
			rt, err := tc.torRoute(tc.blocks[i])
			if err != nil {
				return err
			}
			if !slices.Equal(rt.ASPath, []uint32{nodeAS}) || !slices.Equal(rt.NextHops, []netip.Addr{n.IP}) {
				return fmt.Errorf("%s: route %+v: want AS path [%d] and the owner %s as the only next hop", kind, rt, nodeAS, n.IP)
			}
		}
		return nil
	})
	if rs, err := tc.tor.Routes(ctxT(t)); err == nil {
		t.Logf("%s RIB: %+v", kind, rs)
	}

	for i, n := range tc.nodes {
		waitFor(t, n.Name+" learns exactly the other node's block via its owner", 30*time.Second, func() error {
			return tc.learnedExactly(i)
		})
		// Every route the router passed on carries 64512: none is accepted.
		p, err := bgpPeer(n, tc.torIP)
		if err != nil {
			t.Fatal(err)
		}
		if p.PrefixesAccepted != 0 {
			t.Errorf("%s -> %s: %d prefixes accepted, want 0 (AS-path loop): %+v", n.Name, kind, p.PrefixesAccepted, p)
		}
		t.Logf("%s -> %s: received %d, accepted %d, advertised %d", n.Name, kind, p.PrefixesReceived, p.PrefixesAccepted, p.PrefixesAdvertised)
	}
	for i, p := range tc.pods {
		dst := tc.pods[1-i].IP
		waitFor(t, fmt.Sprintf("ping %s -> %s", p.IP, dst), 30*time.Second, func() error { return pingWithin(p, dst) })
	}
}

// torPassword is what the router expects on the MD5 test's session.
const torPassword = "tabby-md5-right"

// TestToRPassword: TCP MD5 with FRR. The BGPPeer names a Secret (in the namespace
// given to tabby-node as --bgp-secret-namespace) holding FRR's password: the session
// comes up, without a message. The Secret then changes to a wrong password: the
// session is re-created and stays down for an observation window of several
// connection retries (both ends retry every 5 s) while FRR's kernel drops our
// segments (its TCPMD5Failure counter rises), and the status (local API, and tabbyctl
// bgp peers from the NodeStatus) says what to check.
func TestToRPassword(t *testing.T) {
	var secret string
	tc := newToR(t, torSpec{kind: router.KindFRR, nodes: 1,
		routerCfg: func(c *router.Config) { c.Neighbors[0].Password = torPassword },
		setup: func(tc *torCluster, s *v1.BGPPeerSpec) {
			secret = "tabbyb-" + tc.id + "-bgp"
			tc.createObject(t, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secret, Namespace: tc.ns},
				Data: map[string][]byte{"password": []byte(torPassword)}})
			s.Password = &v1.BGPPassword{SecretKeyRef: &corev1.SecretKeySelector{
				LocalObjectReference: corev1.LocalObjectReference{Name: secret}, Key: "password"}}
		}})
	n := tc.nodes[0]
	up := func() error {
		if err := tc.torEstablished(); err != nil {
			return err
		}
		return established(n, tc.torIP, "global")
	}
	waitFor(t, "the session with the right password Established", 60*time.Second, up)
	if p, err := bgpPeer(n, tc.torIP); err != nil || p.LastError != "" {
		t.Errorf("the session with the right password: %+v, %v; want no last error", p, err)
	}

	failures := md5Failures(t, tc.tor.Netns)
	tc.setPassword(t, secret, "tabby-md5-wrong")
	waitFor(t, "the session down once the password is wrong", 30*time.Second, func() error {
		if up() == nil {
			return errors.New("still Established")
		}
		return nil
	})
	// Down, and it stays down: FRR (connect retry 5 s) and tabby-node (5 s) retry
	// at least twice each meanwhile.
	stayDown(t, "the session with a wrong password", 12*time.Second, func() error {
		if p, err := tc.tor.Peer(context.Background(), n.IP); err != nil || p.Established() {
			return fmt.Errorf("FRR: %+v, %v", p, err)
		}
		if p, err := bgpPeer(n, tc.torIP); err != nil || p.State == "Established" {
			return fmt.Errorf("%s: %+v, %v", n.Name, p, err)
		}
		return nil
	})
	if after := md5Failures(t, tc.tor.Netns); after <= failures {
		t.Errorf("FRR's TCPMD5Failure counter %d, was %d: want it to rise (our segments signed with the wrong password)", after, failures)
	}
	// The status says what to check, on the node and in the NodeStatus.
	want := []string{fmt.Sprintf("no TCP connection with %s:179", tc.torIP), "TCP MD5 password is set"}
	p, err := bgpPeer(n, tc.torIP)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("local API: %s -> %s: %s, last error %q", n.Name, tc.torIP, p.State, p.LastError)
	if !containsAll(p.LastError, want) {
		t.Errorf("local API: last error %q, want it to say %q", p.LastError, want)
	}
	waitFor(t, "tabbyctl bgp peers says why the session is down", 30*time.Second, func() error {
		r, err := tc.ctlPeer(n, tc.torIP)
		if err != nil {
			return err
		}
		if r.State == "Established" || !containsAll(r.Message, want) {
			return fmt.Errorf("tabbyctl bgp peers: %s %q, want not Established and a message saying %q", r.State, r.Message, want)
		}
		return nil
	})
	if table, err := tc.tabbyctl("bgp", "peers"); err == nil {
		t.Logf("tabbyctl bgp peers:\n%s", table)
	}
}

// setPassword writes password into the Secret (compare-and-swap, again on a conflict).
func (tc *torCluster) setPassword(t *testing.T, secret, password string) {
	t.Helper()
	waitFor(t, "update Secret "+secret, 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s, err := datastore.Get[*corev1.Secret](ctx, tc.store, tc.ns, secret)
		if err != nil {
			return err
		}
		s.Data = map[string][]byte{"password": []byte(password)}
		s.StringData = nil
		_, err = datastore.Update(ctx, tc.store, s)
		return err
	})
}

// TestToRMaxPrefixes: the BGPPeer allows FRR 5 prefixes (maxPrefixes) and FRR
// originates 10, all inside the IPPool, which the default import takes from a global
// peer. The node tears the session down and holds it down (it stays down past FRR's
// connection retries), keeps none of FRR's routes in its kernel, and the local API
// (last error, admin down) and tabbyctl bgp peers say the limit was exceeded.
func TestToRMaxPrefixes(t *testing.T) {
	const limit = 5
	var originate []netip.Prefix
	for i := range 2 * limit {
		originate = append(originate, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 74, 255, byte(16 * i)}), 28))
	}
	tc := newToR(t, torSpec{kind: router.KindFRR, nodes: 1,
		routerCfg: func(c *router.Config) { c.Originate = originate },
		setup:     func(_ *torCluster, s *v1.BGPPeerSpec) { s.MaxPrefixes = new(uint32(limit)) }})
	n := tc.nodes[0]
	want := fmt.Sprintf("maximum prefixes exceeded: more than %d received", limit)
	waitFor(t, "the session held down over its prefix limit", 60*time.Second, func() error {
		p, err := bgpPeer(n, tc.torIP)
		if err != nil {
			return err
		}
		if p.State == "Established" || !p.AdminDown || !strings.Contains(p.LastError, want) {
			return fmt.Errorf("%s -> %s: %+v; want down, admin down, last error %q", n.Name, tc.torIP, p, want)
		}
		return nil
	})
	stayDown(t, "the session over its prefix limit", 7*time.Second, func() error {
		if p, err := tc.tor.Peer(context.Background(), n.IP); err != nil || p.Established() {
			return fmt.Errorf("FRR: %+v, %v", p, err)
		}
		if p, err := bgpPeer(n, tc.torIP); err != nil || p.State == "Established" || !p.AdminDown {
			return fmt.Errorf("%s: %+v, %v", n.Name, p, err)
		}
		return nil
	})
	if p, err := tc.tor.Peer(ctxT(t), n.IP); err == nil {
		t.Logf("FRR's side: %s (%s)", p.State, p.Info)
	}
	out, err := n.Net.IP(ctxT(t), "route", "show", "proto", "117")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "" {
		t.Errorf("protocol-117 routes on %s after the session was held down:\n%s", n.Name, out)
	}
	waitFor(t, "tabbyctl bgp peers says the limit was exceeded", 30*time.Second, func() error {
		r, err := tc.ctlPeer(n, tc.torIP)
		if err != nil {
			return err
		}
		if r.State == "Established" || !strings.Contains(r.Message, "held down: "+want) {
			return fmt.Errorf("tabbyctl bgp peers: %s %q, want not Established and %q", r.State, r.Message, "held down: "+want)
		}
		return nil
	})
	if table, err := tc.tabbyctl("bgp", "peers"); err == nil {
		t.Logf("tabbyctl bgp peers:\n%s", table)
	}
}

// stayDown polls cond every 250 ms for d; t fails at once when it fails (the session
// came up). An observation window, not a wait.
func stayDown(t *testing.T, what string, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if err := cond(); err != nil {
			t.Fatalf("%s: not down for %v: %v", what, d, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// md5Failures is the TCPMD5Failure counter of network namespace ns.
func md5Failures(t *testing.T, ns string) int {
	t.Helper()
	out := netnode.MustRun(t, "ip", "netns", "exec", ns, "cat", "/proc/net/netstat")
	lines := strings.Split(out, "\n")
	for i := 0; i+1 < len(lines); i += 2 {
		names, vals := strings.Fields(lines[i]), strings.Fields(lines[i+1])
		for j, name := range names {
			if name == "TCPMD5Failure" && j < len(vals) {
				v, err := strconv.Atoi(vals[j])
				if err != nil {
					t.Fatalf("TCPMD5Failure %q: %v", vals[j], err)
				}
				return v
			}
		}
	}
	t.Fatalf("no TCPMD5Failure in %s's /proc/net/netstat", ns)
	return 0
}

// frrPath is one path of a prefix in FRR's RIB (show bgp ipv4 unicast json).
type frrPath struct {
	Valid  bool   `json:"valid"`
	Stale  bool   `json:"stale"`
	PeerID string `json:"peerId"`
}

// frrPathFrom is the path to p FRR has from the neighbor at from. test/router's
// Routes reports the best path only, and FRR has two to each block (see TestToR):
// this reads every path with the router's own CLI.
func frrPathFrom(r *router.Router, p netip.Prefix, from netip.Addr) (frrPath, error) {
	out, err := r.Exec(context.Background(), "show bgp ipv4 unicast json")
	if err != nil {
		return frrPath{}, err
	}
	var rib struct {
		Routes map[string][]frrPath `json:"routes"`
	}
	if err := json.Unmarshal([]byte(out), &rib); err != nil {
		return frrPath{}, fmt.Errorf("parse show bgp ipv4 unicast json: %w", err)
	}
	for _, path := range rib.Routes[p.String()] {
		if path.PeerID == from.String() {
			return path, nil
		}
	}
	return frrPath{}, fmt.Errorf("FRR has no path to %s from %s: %+v", p, from, rib.Routes[p.String()])
}

// TestToRGracefulRestart: FRR with graceful restart on (restart time 120 s) and the
// BGPPeer's maxRestartTime 120 s; pods on nodes A and B. Two pings run for the whole
// test, every 10 ms from B's pod to A's pod (B's kernel route to A's block) and every
// 20 ms from the router's namespace to A's pod (FRR's route, installed in its kernel).
// A's tabby-node is killed with SIGKILL (no NOTIFICATION, no Cease): FRR keeps A's
// path to A's block, marked stale; B keeps the route to A's block via A (B is a
// graceful-restart helper on the mesh); both pings go on. A's agent starts again: the
// sessions are Established again, FRR's path from A is no longer stale, the kernels
// hold exactly the blocks via their owners, and neither ping lost a single request
// (counted by sequence number up to the last answer: A's data plane (the pod's veth
// and routes) is untouched by the agent's death, and every route towards it is kept,
// so any loss is a failure).
func TestToRGracefulRestart(t *testing.T) {
	restart := 120 * time.Second
	tc := newToR(t, torSpec{kind: router.KindFRR, nodes: 2, pods: true,
		routerCfg: func(c *router.Config) {
			c.GracefulRestart, c.RestartTime, c.InstallKernel = true, restart, true
		},
		setup: func(_ *torCluster, s *v1.BGPPeerSpec) { s.MaxRestartTime = &metav1.Duration{Duration: restart} }})
	a, b := tc.nodes[0], tc.nodes[1]
	allUp := func() error {
		if err := tc.torEstablished(); err != nil {
			return err
		}
		for i, n := range tc.nodes {
			if err := established(n, tc.torIP, "global"); err != nil {
				return err
			}
			if err := established(n, tc.nodes[1-i].IP, "mesh"); err != nil {
				return err
			}
			if err := tc.learnedExactly(i); err != nil {
				return err
			}
		}
		return nil
	}
	freshFromA := func() error {
		p, err := frrPathFrom(tc.tor, tc.blocks[0], a.IP)
		if err != nil {
			return err
		}
		if !p.Valid || p.Stale {
			return fmt.Errorf("FRR's path to %s from %s: %+v, want valid, not stale", tc.blocks[0], a.IP, p)
		}
		return nil
	}
	waitFor(t, "all sessions Established and the blocks learned", 60*time.Second, allUp)
	waitFor(t, "FRR has A's block from A", 30*time.Second, freshFromA)

	podPing := startPing(t, tc.pods[1].Netns, tc.pods[0].IP, 10*time.Millisecond)
	torPing := startPing(t, tc.tor.Netns, tc.pods[0].IP, 20*time.Millisecond)
	pings := []*pinger{podPing, torPing}
	// progress waits until each ping has answers beyond those it had.
	progress := func(what string) {
		t.Helper()
		marks := []int{podPing.lastReply(), torPing.lastReply()}
		waitFor(t, what, 15*time.Second, func() error {
			for i, p := range pings {
				if p.lastReply() < marks[i]+20 {
					return fmt.Errorf("ping %d: last answer %d, had %d:\n%s", i, p.lastReply(), marks[i], p.output())
				}
			}
			return nil
		})
	}
	progress("both pings answered")

	start := time.Now()
	if err := a.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "FRR keeps A's block, stale, and B keeps its route to it", 20*time.Second, func() error {
		if p, err := tc.tor.Peer(context.Background(), a.IP); err != nil || p.Established() {
			return fmt.Errorf("FRR's session with A: %+v, %v; want down", p, err)
		}
		p, err := frrPathFrom(tc.tor, tc.blocks[0], a.IP)
		if err != nil {
			return err
		}
		if !p.Valid || !p.Stale {
			return fmt.Errorf("FRR's path to %s from %s: %+v, want kept, stale", tc.blocks[0], a.IP, p)
		}
		if p, err := bgpPeer(b, a.IP); err != nil || p.State == "Established" {
			return fmt.Errorf("B's mesh session with A: %+v, %v; want down", p, err)
		}
		return tc.learnedExactly(1)
	})
	if rs, err := tc.tor.Routes(ctxT(t)); err == nil {
		t.Logf("FRR's RIB with A's agent dead (%v after the kill): %+v", time.Since(start).Round(time.Millisecond), rs)
	}
	progress("both pings answered with A's agent dead")

	// A restarts at once, as a crash loop or a quick upgrade would: B still holds its
	// dropped session idle (gobgp refuses connections for 5 s after a reset), and A
	// must keep its kernel routes until the mesh is back (it waits for every peer's
	// End-of-RIB after a graceful restart).
	a.start(t, "--bgp-secret-namespace", tc.ns)
	waitFor(t, "A's agent restarts gracefully", 30*time.Second, func() error {
		if !strings.Contains(a.LogTail(2000), "found learned routes of an earlier run") {
			return fmt.Errorf("no restart in the log of %s", a.Name)
		}
		return nil
	})
	waitFor(t, "all sessions Established again and the blocks learned", 60*time.Second, allUp)
	waitFor(t, "FRR's path from A refreshed (not stale)", 30*time.Second, freshFromA)
	t.Logf("A back, FRR's path refreshed %v after the kill", time.Since(start).Round(time.Millisecond))
	if rt, err := tc.torRoute(tc.blocks[0]); err != nil || rt.Stale {
		t.Errorf("FRR's route to %s: %+v, %v; want not stale", tc.blocks[0], rt, err)
	}
	progress("both pings answered after the restart")

	for i, p := range pings {
		sent, lost, err := p.stop()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("ping %d: %d requests up to the last answer, %d lost", i, sent, len(lost))
		if len(lost) > 0 {
			t.Errorf("ping %d lost requests %v of %d across the kill and restart of A's agent:\n%s", i, lost, sent, p.output())
		}
	}
}
