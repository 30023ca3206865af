package bgp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// The tests run real speakers in this process, each on its own loopback address
// (127.0.0.0/8 is all local on Linux) and port: no root, no namespaces.

const waitTimeout = 20 * time.Second

var nextNet atomic.Uint32

// testNet returns addresses of a loopback /24 no other test uses: 127.91.n.host.
func testNet() func(host byte) netip.Addr {
	n := byte(nextNet.Add(1))
	return func(host byte) netip.Addr { return netip.AddrFrom4([4]byte{127, 91, n, host}) }
}

// freePort finds a TCP port free on addr.
func freePort(t *testing.T, addr netip.Addr) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// node is one speaker under test and what it has reported on Watch.
type node struct {
	t    *testing.T
	name string
	addr netip.Addr
	asn  uint32
	port uint16
	sp   Speaker
	rec  *recorder
}

type nodeOpt func(*Global)

func restarting() nodeOpt { return func(g *Global) { g.LocalRestarting = true } }

func noListener() nodeOpt { return func(g *Global) { g.ListenPort = 0 } }

func newNode(t *testing.T, name string, addr netip.Addr, asn uint32, opts ...nodeOpt) *node {
	t.Helper()
	return startNode(t, name, addr, freePort(t, addr), asn, opts...)
}

func startNode(t *testing.T, name string, addr netip.Addr, port uint16, asn uint32, opts ...nodeOpt) *node {
	t.Helper()
	n := &node{t: t, name: name, addr: addr, asn: asn, port: port,
		sp: NewGoBGP(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named(name))}
	g := Global{RouterID: addr, ASN: asn, ListenAddresses: []netip.Addr{addr}, ListenPort: port}
	for _, o := range opts {
		o(&g)
	}
	if err := n.sp.Start(context.Background(), g); err != nil {
		t.Fatalf("%s: start: %v", name, err)
	}
	n.rec = newRecorder()
	go n.rec.run(n.sp.Watch())
	t.Cleanup(func() { _ = n.sp.Stop(context.Background(), false) })
	return n
}

type peerOpt func(*Peer)

// peer configures on n a session to other, with short test timers.
func (n *node) peer(other *node, opts ...peerOpt) {
	n.t.Helper()
	if err := n.sp.AddPeer(context.Background(), n.peerConfig(other, opts...)); err != nil {
		n.t.Fatalf("%s: add peer %s: %v", n.name, other.name, err)
	}
}

func (n *node) peerConfig(other *node, opts ...peerOpt) Peer {
	p := Peer{Address: other.addr, Port: other.port, LocalAddress: n.addr, ASN: other.asn,
		KeepaliveTime: time.Second, HoldTime: 3 * time.Second, ConnectRetry: 2 * time.Second, Type: PeerTypeMesh}
	for _, o := range opts {
		o(&p)
	}
	return p
}

func (n *node) advertise(prefix string) {
	n.t.Helper()
	if err := n.sp.Advertise(context.Background(), netip.MustParsePrefix(prefix), PathAttrs{}); err != nil {
		n.t.Fatalf("%s: advertise %s: %v", n.name, prefix, err)
	}
}

func (n *node) withdraw(prefix string) {
	n.t.Helper()
	if err := n.sp.Withdraw(context.Background(), netip.MustParsePrefix(prefix)); err != nil {
		n.t.Fatalf("%s: withdraw %s: %v", n.name, prefix, err)
	}
}

func (n *node) peerState(other *node) PeerState {
	n.t.Helper()
	ps, err := n.sp.Peers(context.Background())
	if err != nil {
		n.t.Fatalf("%s: peers: %v", n.name, err)
	}
	for _, p := range ps {
		if p.Address == other.addr {
			return p
		}
	}
	n.t.Fatalf("%s: no peer %s in %+v", n.name, other.name, ps)
	return PeerState{}
}

// waitEstablished waits until n reports its session to each of others Established.
func (n *node) waitEstablished(others ...*node) {
	n.t.Helper()
	for _, o := range others {
		n.rec.wait(n.t, fmt.Sprintf("%s: session to %s established", n.name, o.name), func(r *recorder) bool {
			return r.peers[o.addr] == StateEstablished
		})
	}
}

// waitRoute waits until n's learned route for prefix has exactly the next hops of via.
func (n *node) waitRoute(prefix string, via ...*node) {
	n.t.Helper()
	p := netip.MustParsePrefix(prefix)
	want := make([]netip.Addr, 0, len(via))
	for _, v := range via {
		want = append(want, v.addr)
	}
	slices.SortFunc(want, func(a, b netip.Addr) int { return a.Compare(b) })
	n.rec.wait(n.t, fmt.Sprintf("%s: route %s via %v", n.name, prefix, want), func(r *recorder) bool {
		return slices.Equal(r.routes[p], want)
	})
}

func (n *node) waitNoRoute(prefix string) {
	n.t.Helper()
	p := netip.MustParsePrefix(prefix)
	n.rec.wait(n.t, fmt.Sprintf("%s: no route %s", n.name, prefix), func(r *recorder) bool {
		_, ok := r.routes[p]
		return !ok
	})
}

// routes is n's Routes() as prefix -> next hops.
func (n *node) routes() map[netip.Prefix][]netip.Addr {
	n.t.Helper()
	rs, err := n.sp.Routes(context.Background())
	if err != nil {
		n.t.Fatalf("%s: routes: %v", n.name, err)
	}
	m := make(map[netip.Prefix][]netip.Addr, len(rs))
	for _, r := range rs {
		m[r.Prefix] = r.NextHops
	}
	return m
}

// recorder keeps every event of one speaker and the state they add up to.
type recorder struct {
	mu      sync.Mutex
	events  []Event
	routes  map[netip.Prefix][]netip.Addr
	peers   map[netip.Addr]SessionState
	closed  bool
	changed chan struct{} // closed and replaced on every event
}

func newRecorder() *recorder {
	return &recorder{routes: map[netip.Prefix][]netip.Addr{}, peers: map[netip.Addr]SessionState{},
		changed: make(chan struct{})}
}

func (r *recorder) run(ch <-chan Event) {
	for ev := range ch {
		r.mu.Lock()
		r.events = append(r.events, ev)
		switch ev.Kind {
		case EventRoute:
			if ev.Withdrawn {
				delete(r.routes, ev.Prefix)
			} else {
				r.routes[ev.Prefix] = ev.NextHops
			}
		case EventPeer:
			r.peers[ev.Peer] = ev.State
		}
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
	}
	r.mu.Lock()
	r.closed = true
	close(r.changed)
	r.mu.Unlock()
}

// wait waits until cond holds, re-checking after every event, for waitTimeout.
func (r *recorder) wait(t *testing.T, what string, cond func(*recorder) bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, ch, closed := cond(r), r.changed, r.closed
		r.mu.Unlock()
		if ok {
			return
		}
		if closed {
			t.Fatalf("%s: the event channel closed first\n%s", what, r.dump())
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s\n%s", waitTimeout, what, r.dump())
		}
	}
}

// never fails the test if cond holds at any point during d: an observation window for
// what must not happen (a session that must stay down).
func (r *recorder) never(t *testing.T, d time.Duration, what string, cond func(*recorder) bool) {
	t.Helper()
	window := time.NewTimer(d)
	defer window.Stop()
	for {
		r.mu.Lock()
		bad, ch := cond(r), r.changed
		r.mu.Unlock()
		if bad {
			t.Fatalf("%s\n%s", what, r.dump())
		}
		select {
		case <-ch:
		case <-window.C:
			return
		}
	}
}

// index is the position of the first event at or after from that matches, or -1.
func (r *recorder) index(from int, match func(Event) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := from; i < len(r.events); i++ {
		if match(r.events[i]) {
			return i
		}
	}
	return -1
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.events)
}

func (r *recorder) dump() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	b.WriteString("events:\n")
	for _, ev := range r.events {
		fmt.Fprintf(&b, "  %+v\n", ev)
	}
	return b.String()
}
