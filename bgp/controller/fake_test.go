package controller

import (
	"context"
	"fmt"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/bgp"
)

// fakeSpeaker records the calls a Reconciler makes; failures can be injected per call
// ("AddPeer 10.0.0.2") and events sent on its Watch channel.
type fakeSpeaker struct {
	mu      sync.Mutex
	calls   []string
	fail    map[string]error
	started *bgp.Global
	peers   map[netip.Addr]bgp.Peer
	adverts map[netip.Prefix]bgp.PathAttrs
	states  []bgp.PeerState
	events  chan bgp.Event
	stopped bool
}

func newFakeSpeaker() *fakeSpeaker {
	return &fakeSpeaker{fail: map[string]error{}, peers: map[netip.Addr]bgp.Peer{},
		adverts: map[netip.Prefix]bgp.PathAttrs{}, events: make(chan bgp.Event, 1024)}
}

func (f *fakeSpeaker) record(call string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.fail[call]; err != nil {
		return err
	}
	f.calls = append(f.calls, call)
	return nil
}

// takeCalls returns and forgets the calls made so far.
func (f *fakeSpeaker) takeCalls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeSpeaker) setFail(call string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err == nil {
		delete(f.fail, call)
	} else {
		f.fail[call] = err
	}
}

func (f *fakeSpeaker) Start(_ context.Context, g bgp.Global) error {
	if err := f.record(fmt.Sprintf("Start %s as %d port %d", g.RouterID, g.ASN, g.ListenPort)); err != nil {
		return err
	}
	f.mu.Lock()
	f.started = &g
	f.mu.Unlock()
	return nil
}

func (f *fakeSpeaker) AddPeer(_ context.Context, p bgp.Peer) error {
	if err := f.record(fmt.Sprintf("AddPeer %s", p.Address)); err != nil {
		return err
	}
	f.mu.Lock()
	f.peers[p.Address] = p
	f.mu.Unlock()
	return nil
}

func (f *fakeSpeaker) UpdatePeer(_ context.Context, p bgp.Peer) error {
	if err := f.record(fmt.Sprintf("UpdatePeer %s", p.Address)); err != nil {
		return err
	}
	f.mu.Lock()
	f.peers[p.Address] = p
	f.mu.Unlock()
	return nil
}

func (f *fakeSpeaker) RemovePeer(_ context.Context, a netip.Addr) error {
	if err := f.record(fmt.Sprintf("RemovePeer %s", a)); err != nil {
		return err
	}
	f.mu.Lock()
	delete(f.peers, a)
	f.mu.Unlock()
	return nil
}

func (f *fakeSpeaker) Advertise(_ context.Context, p netip.Prefix, a bgp.PathAttrs) error {
	call := fmt.Sprintf("Advertise %s", p)
	if len(a.Communities) > 0 {
		call += " " + strings.Join(a.Communities, ",")
	}
	if err := f.record(call); err != nil {
		return err
	}
	f.mu.Lock()
	f.adverts[p] = a
	f.mu.Unlock()
	return nil
}

func (f *fakeSpeaker) Withdraw(_ context.Context, p netip.Prefix) error {
	if err := f.record(fmt.Sprintf("Withdraw %s", p)); err != nil {
		return err
	}
	f.mu.Lock()
	delete(f.adverts, p)
	f.mu.Unlock()
	return nil
}

func (f *fakeSpeaker) Peers(context.Context) ([]bgp.PeerState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.states != nil {
		return slices.Clone(f.states), nil
	}
	var out []bgp.PeerState
	for _, p := range f.peers {
		out = append(out, bgp.PeerState{Address: p.Address, Type: p.Type, ASN: p.ASN, State: bgp.StateActive})
	}
	return out, nil
}

func (f *fakeSpeaker) Routes(context.Context) ([]bgp.Route, error) { return nil, nil }

func (f *fakeSpeaker) Watch() <-chan bgp.Event { return f.events }

func (f *fakeSpeaker) Stop(context.Context, bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.stopped {
		f.stopped = true
		f.calls = append(f.calls, "Stop")
		close(f.events)
	}
	return nil
}

// peerSnapshot returns the configured peers' addresses, sorted.
func (f *fakeSpeaker) peerSnapshot() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, a := range sortedKeys(f.peers, netip.Addr.Compare) {
		out = append(out, a.String())
	}
	return out
}

func (f *fakeSpeaker) advertSnapshot() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, p := range sortedKeys(f.adverts, comparePrefix) {
		out = append(out, p.String())
	}
	return out
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("timed out waiting for %s\n%s", what, buf[:n])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *fakeSpeaker) peer(addr string) bgp.Peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peers[netip.MustParseAddr(addr)]
}

func (f *fakeSpeaker) startedWith() *bgp.Global {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.started
}
