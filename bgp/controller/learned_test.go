package controller

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/felix"
)

// sink collects the learned sets handed on.
type sink struct {
	mu   sync.Mutex
	sets [][]felix.LearnedRoute
}

func (s *sink) out(r []felix.LearnedRoute) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sets = append(s.sets, r)
}

func (s *sink) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sets)
}

// last prints the last set, sorted: "prefix>nh,nh prefix>nh".
func (s *sink) last() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sets) == 0 {
		return "<none>"
	}
	return printRoutes(s.sets[len(s.sets)-1])
}

func printRoutes(rs []felix.LearnedRoute) string {
	var parts []string
	for _, r := range rs {
		var nhs []string
		for _, nh := range r.NextHops {
			nhs = append(nhs, nh.String())
		}
		parts = append(parts, r.Prefix.String()+">"+strings.Join(nhs, ","))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

func route(prefix string, nhs ...string) bgp.Event {
	ev := bgp.Event{Kind: bgp.EventRoute, Prefix: netip.MustParsePrefix(prefix)}
	for _, nh := range nhs {
		ev.NextHops = append(ev.NextHops, netip.MustParseAddr(nh))
	}
	ev.Withdrawn = len(nhs) == 0
	return ev
}

func eor(peer string) bgp.Event {
	return bgp.Event{Kind: bgp.EventEndOfRIB, Peer: netip.MustParseAddr(peer)}
}

func startLearned(t *testing.T, o LearnedOptions) (*Learned, chan bgp.Event, *sink) {
	t.Helper()
	s := &sink{}
	l := NewLearned(s.out, o)
	ch := make(chan bgp.Event, 100000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx, ch) }()
	t.Cleanup(func() { cancel(); <-done })
	return l, ch, s
}

// A node with mesh peers b and c: its own block and borrowed address.
func learnedDesired() *Desired {
	return Calc(Input{NodeName: "a", Nodes: three, Pools: []*v1.IPPool{poolA},
		Blocks: []*v1.IPAMBlock{mkBlock("10.65.0.0/26", "a", nil), mkBlock("10.65.0.64/26", "b", map[int]string{1: "a"})}})
}

func TestLearnedInitialSyncWaitsForEveryEndOfRIB(t *testing.T) {
	l, ch, s := startLearned(t, LearnedOptions{InitialSyncTimeout: time.Hour})
	l.SetDesired(learnedDesired())
	ch <- route("10.65.0.64/26", "192.168.9.2")
	ch <- route("10.65.0.0/26", "192.168.9.2")  // my own block: never
	ch <- route("10.65.0.65/32", "192.168.9.3") // the address I borrowed: never
	ch <- route("10.65.0.5/32", "192.168.9.3")  // borrowed by another node from my block
	ch <- eor("192.168.9.2")
	// The set is not handed on while c's End-of-RIB is missing.
	ch <- bgp.Event{Kind: bgp.EventEndOfRIB, Peer: netip.MustParseAddr("192.168.9.3"), IPv6: true}
	ch <- route("10.65.1.0/26", "192.168.9.2", "192.168.9.3")
	eventually(t, "the events to be read", func() bool { return len(ch) == 0 })
	if n := s.count(); n != 0 {
		t.Fatalf("handed on %d times before End-of-RIB from every peer: %s", n, s.last())
	}
	ch <- eor("192.168.9.3")
	want := "10.65.0.5/32>192.168.9.3 10.65.0.64/26>192.168.9.2 10.65.1.0/26>192.168.9.2,192.168.9.3"
	eventually(t, "the initial table", func() bool { return s.last() == want })
	if !l.Synced() {
		t.Error("Synced is false after the initial table")
	}
	ch <- route("10.65.1.0/26")
	eventually(t, "the withdrawal", func() bool {
		return s.last() == "10.65.0.5/32>192.168.9.3 10.65.0.64/26>192.168.9.2"
	})
}

func TestLearnedInitialSyncTimeout(t *testing.T) {
	l, ch, s := startLearned(t, LearnedOptions{InitialSyncTimeout: 50 * time.Millisecond})
	l.SetDesired(learnedDesired())
	ch <- route("10.65.0.64/26", "192.168.9.2")
	start := time.Now()
	eventually(t, "the table after the timeout", func() bool { return s.last() == "10.65.0.64/26>192.168.9.2" })
	if time.Since(start) < 40*time.Millisecond {
		t.Errorf("handed on after %s, before the initial-sync timeout", time.Since(start))
	}
}

func TestLearnedNoPeersOrBGPOff(t *testing.T) {
	for name, d := range map[string]*Desired{
		"bgp off":  Calc(Input{NodeName: "a"}),
		"no peers": Calc(Input{NodeName: "a", Nodes: three[:1]}),
	} {
		t.Run(name, func(t *testing.T) {
			l, _, s := startLearned(t, LearnedOptions{InitialSyncTimeout: time.Hour})
			l.SetDesired(d)
			eventually(t, "an empty set", func() bool { return s.count() == 1 && s.last() == "" })
		})
	}
}

func TestLearnedCoalescesBursts(t *testing.T) {
	l, ch, s := startLearned(t, LearnedOptions{InitialSyncTimeout: time.Hour, Delay: 50 * time.Millisecond})
	l.SetDesired(Calc(Input{NodeName: "a", Nodes: three[:1]}))
	eventually(t, "the initial empty set", func() bool { return s.count() == 1 })
	const n = 5000
	for i := range n {
		ch <- route(fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256), "192.168.9.2")
	}
	eventually(t, "every route", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.sets[len(s.sets)-1]) == n
	})
	// 5000 events sent at once: a few hand-offs, not thousands.
	if c := s.count(); c > 10 {
		t.Errorf("%d hand-offs for one burst", c)
	}
}

func TestLearnedOwnPrefixChange(t *testing.T) {
	l, ch, s := startLearned(t, LearnedOptions{InitialSyncTimeout: time.Hour})
	d := Calc(Input{NodeName: "a", Nodes: three[:1], Pools: []*v1.IPPool{poolA}})
	l.SetDesired(d)
	ch <- route("10.65.0.0/26", "192.168.9.2")
	eventually(t, "the route", func() bool { return s.last() == "10.65.0.0/26>192.168.9.2" })
	// The block becomes ours: the learned route to it goes.
	d2 := Calc(Input{NodeName: "a", Nodes: three[:1], Pools: []*v1.IPPool{poolA}, Blocks: []*v1.IPAMBlock{mkBlock("10.65.0.0/26", "a", nil)}})
	l.SetDesired(d2)
	eventually(t, "the route to go", func() bool { return s.last() == "" })
}

func TestLearnedPeerEvents(t *testing.T) {
	var mu sync.Mutex
	var got []string
	l, ch, _ := startLearned(t, LearnedOptions{OnPeer: func(ev bgp.Event) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ev.Peer.String()+" "+string(ev.State))
	}})
	l.SetDesired(learnedDesired())
	ch <- bgp.Event{Kind: bgp.EventPeer, Peer: netip.MustParseAddr("192.168.9.2"), State: bgp.StateEstablished}
	eventually(t, "the peer event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Equal(got, []string{"192.168.9.2 Established"})
	})
}

// deltaSink applies hand-offs to a set as felix does: the first whole, then changes.
type deltaSink struct {
	mu             sync.Mutex
	set            map[netip.Prefix][]netip.Addr
	fulls, deltas  int
	lastDeltaItems int
}

func (s *deltaSink) out(r []felix.LearnedRoute) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fulls++
	s.set = map[netip.Prefix][]netip.Addr{}
	for _, x := range r {
		s.set[x.Prefix] = x.NextHops
	}
}

func (s *deltaSink) delta(set []felix.LearnedRoute, gone []netip.Prefix) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deltas++
	s.lastDeltaItems = len(set) + len(gone)
	for _, p := range gone {
		delete(s.set, p)
	}
	for _, x := range set {
		s.set[x.Prefix] = x.NextHops
	}
}

func (s *deltaSink) print() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rs []felix.LearnedRoute
	for p, nhs := range s.set {
		rs = append(rs, felix.LearnedRoute{Prefix: p, NextHops: nhs})
	}
	return printRoutes(rs)
}

// TestLearnedDeltas: with OnDelta the first hand-off is the whole set, the later ones
// only what changed (routes and own-prefix changes), and applying them gives the set a
// whole hand-off would.
func TestLearnedDeltas(t *testing.T) {
	s := &deltaSink{}
	l := NewLearned(s.out, LearnedOptions{InitialSyncTimeout: time.Hour, OnDelta: s.delta})
	ch := make(chan bgp.Event, 1000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); l.Run(ctx, ch) }()
	defer func() { cancel(); <-done }()

	l.SetDesired(learnedDesired())
	for i := range 50 {
		ch <- route(fmt.Sprintf("10.65.%d.0/26", 10+i), "192.168.9.2")
	}
	ch <- route("10.65.0.64/26", "192.168.9.2")
	ch <- eor("192.168.9.2")
	ch <- eor("192.168.9.3")
	eventually(t, "the initial table", func() bool { return strings.Count(s.print(), ">") == 51 })

	ch <- route("10.65.10.0/26", "192.168.9.2", "192.168.9.3") // ECMP now
	ch <- route("10.65.11.0/26")                               // withdrawn
	ch <- route("10.65.0.0/26", "192.168.9.2")                 // my own block: never
	eventually(t, "the changes", func() bool {
		p := s.print()
		return strings.Contains(p, "10.65.10.0/26>192.168.9.2,192.168.9.3") && !strings.Contains(p, "10.65.11.0/26")
	})
	if strings.Contains(s.print(), "10.65.0.0/26") {
		t.Fatalf("own block handed on: %s", s.print())
	}
	// Node a gives its block 10.65.0.0/26 up: the route b sends for it is now b's.
	d := Calc(Input{NodeName: "a", Nodes: three, Pools: []*v1.IPPool{poolA},
		Blocks: []*v1.IPAMBlock{mkBlock("10.65.0.64/26", "b", map[int]string{1: "a"})}})
	l.SetDesired(d)
	eventually(t, "the former own block handed on", func() bool { return strings.Contains(s.print(), "10.65.0.0/26>192.168.9.2") })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fulls != 1 || s.deltas < 2 || s.lastDeltaItems > 3 {
		t.Fatalf("%d whole hand-offs and %d deltas (the last of %d items): want 1 whole, small deltas", s.fulls, s.deltas, s.lastDeltaItems)
	}
}
