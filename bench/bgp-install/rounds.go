package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/router"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Bounds of the waits of one round.
const (
	configureTimeout = 30 * time.Second  // tabby-node configures the BGPPeer
	installTimeout   = 90 * time.Second  // all routes in the kernel after the neighbor is added
	flushTimeout     = 120 * time.Second // all routes gone again after the peering is removed
	ribPoll          = 250 * time.Millisecond
)

// side is one measured transfer of the routes: the timestamps of one round of ours or
// of the reference, and the CPU time the processes of both ends spent meanwhile.
type side struct {
	est          time.Time // the Tabby speaker's session entered Established (PeerState.Since)
	rib          time.Time // the receiver's RIB held every prefix (polled every ribPoll); zero if not seen
	arrivalTimes           // of the routes in the receiver's kernel
	cpu          cpuTimes
	// self is this process's CPU time meanwhile: the route subscription (and, for ours,
	// the fabric's forwarder of tabby-node's API traffic).
	self time.Duration
	// peersCall is how long tabby-node's /bgp/peers took once all routes were in (ours).
	peersCall time.Duration
}

func (s *side) toKernel() time.Duration { return s.last.Sub(s.est) }

// describe is one line of figures.
func (s *side) describe(n int) string {
	at := func(t time.Time) string {
		if t.IsZero() {
			return "?"
		}
		return fmt.Sprintf("%.2f", t.Sub(s.est).Seconds())
	}
	rib := ""
	if !s.rib.IsZero() {
		rib = fmt.Sprintf("all in RIB %ss, ", at(s.rib))
	}
	polled := ""
	if s.polled {
		polled = " (by table dumps: the route subscription overflowed)"
	}
	return fmt.Sprintf("%sin kernel first/25/50/75%%/all %s/%s/%s/%s/%ss%s (%.0f routes/s); CPU %s = %.2fs (observer %.2fs)",
		rib, at(s.first), at(s.quarter[0]), at(s.quarter[1]), at(s.quarter[2]), at(s.last), polled,
		float64(n)/s.toKernel().Seconds(), s.cpu, s.cpu.total().Seconds(), s.self.Seconds())
}

// ribWatch polls count every ribPoll until it reaches n; done stops it and returns the
// time of the first poll that saw n (zero if none did). Without s.rib it does nothing.
func (s *setup) ribWatch(ctx context.Context, n int, count func(context.Context) (int, error)) (done func() time.Time) {
	if !s.rib {
		return func() time.Time { return time.Time{} }
	}
	ctx, cancel := context.WithCancel(ctx)
	res := make(chan time.Time, 1)
	go func() {
		tick := time.NewTicker(ribPoll)
		defer tick.Stop()
		for {
			if c, err := count(ctx); err == nil && c >= n {
				res <- time.Now()
				return
			}
			select {
			case <-ctx.Done():
				res <- time.Time{}
				return
			case <-tick.C:
			}
		}
	}()
	return func() time.Time {
		// Give a last poll the chance to see the RIB complete.
		select {
		case t := <-res:
			cancel()
			return t
		case <-time.After(2 * ribPoll):
		}
		cancel()
		return <-res
	}
}

// ours: the BGPPeer (with its BGPFilter) is created and tabby-node configures the
// session; then FRR-A gets tabby-node as its neighbor and sends its table.
func (s *setup) ours(ctx context.Context) (*side, error) {
	if n, err := countRoutes(s.node.Net.Handle, protoLearned, s.set); err != nil || n != 0 {
		return nil, fmt.Errorf("%s: %d learned routes in the range before the round (%v)", s.node.Name, n, err)
	}
	if _, err := datastore.Create(ctx, s.store, &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: s.peerName},
		Spec: v1.BGPPeerSpec{Node: s.node.Name, PeerIP: s.rA.Addr.String(), ASNumber: asFRR, Filters: []string{s.filterName}}}); err != nil {
		return nil, err
	}
	if err := s.waitPeer(ctx, true); err != nil {
		return nil, err
	}
	arr, err := subscribe(ctx, s.node.Name, protoLearned, s.set)
	if err != nil {
		return nil, err
	}
	defer arr.close()
	cpu0, err := nsCPU(s.node.Name, s.rA.Netns)
	if err != nil {
		return nil, err
	}
	self0 := selfCPU()
	if err := s.frrA.AddNeighbor(ctx, router.Neighbor{Addr: s.node.IP, AS: uint32(v1.DefaultASNumber)}); err != nil {
		return nil, err
	}
	ribDone := s.ribWatch(ctx, s.set.n, func(ctx context.Context) (int, error) {
		p, err := s.tabbyPeer(ctx)
		return p.PrefixesReceived, err
	})
	res := &side{}
	res.arrivalTimes, err = arr.wait(ctx, s.node.Net.Handle, installTimeout)
	cpu1, cerr := nsCPU(s.node.Name, s.rA.Netns)
	res.self = selfCPU() - self0
	res.rib = ribDone()
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("ours: %w\ntabby-node log:\n%s", err, s.node.LogTail(30))
	}
	if cerr != nil {
		return nil, cerr
	}
	res.cpu = cpu1.since(cpu0)
	called := time.Now()
	p, err := s.tabbyPeer(ctx)
	if err != nil {
		return nil, err
	}
	res.peersCall = time.Since(called)
	if p.State != "Established" || p.Since == nil {
		return nil, fmt.Errorf("ours: the session is %s after the routes arrived", p.State)
	}
	res.est = *p.Since
	if n, err := countRoutes(s.node.Net.Handle, protoLearned, s.set); err != nil || n != s.set.n {
		return nil, fmt.Errorf("ours: %d learned routes in the kernel, want %d (%v)", n, s.set.n, err)
	}
	return res, nil
}

// resetOurs removes the peering (BGPPeer, then FRR-A's neighbor) and waits until
// tabby-node removed every route.
func (s *setup) resetOurs(ctx context.Context) error {
	if err := s.store.Delete(ctx, datastore.KindBGPPeer, "", s.peerName, datastore.DeleteOptions{}); err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return err
	}
	if err := s.waitPeer(ctx, false); err != nil {
		return err
	}
	if err := s.frrA.RemoveNeighbor(ctx, s.node.IP); err != nil {
		return err
	}
	if err := waitCount(ctx, s.node.Net.Handle, protoLearned, s.set, 0, flushTimeout); err != nil {
		return fmt.Errorf("%s: learned routes not removed: %w", s.node.Name, err)
	}
	return nil
}

// tabbyPeer is tabby-node's session with FRR-A.
func (s *setup) tabbyPeer(ctx context.Context) (localapi.BGPPeer, error) {
	st, err := s.api.BGPPeers(ctx)
	if err != nil {
		return localapi.BGPPeer{}, err
	}
	for _, p := range st.Peers {
		if p.Address == s.rA.Addr.String() {
			return p, nil
		}
	}
	return localapi.BGPPeer{}, fmt.Errorf("%s has no session with %s", s.node.Name, s.rA.Addr)
}

// waitPeer waits until tabby-node has (want) or has not the session with FRR-A, and
// the BGP controller reports no problem (the filter was found).
func (s *setup) waitPeer(ctx context.Context, want bool) error {
	return netnode.Poll(ctx, configureTimeout, 50*time.Millisecond, func() error {
		st, err := s.api.BGPPeers(ctx)
		if err != nil {
			return err
		}
		if !st.Enabled {
			return errors.New("bgp not enabled on tabby-node")
		}
		if len(st.Problems) > 0 {
			return fmt.Errorf("bgp problems: %v", st.Problems)
		}
		has := false
		for _, p := range st.Peers {
			has = has || p.Address == s.rA.Addr.String()
		}
		if has != want {
			return fmt.Errorf("session with %s configured: %v, want %v", s.rA.Addr, has, want)
		}
		return nil
	})
}

// ref: the reference speaker has the prefixes and FRR-B configured; FRR-B gets the
// speaker as its neighbor, and bgpd and zebra take the table into FRR-B's kernel.
func (s *setup) ref(ctx context.Context) (*side, error) {
	if n, err := countRoutes(s.frrBNL, protoZebra, s.set); err != nil || n != 0 {
		return nil, fmt.Errorf("%s: %d zebra routes in the range before the round (%v)", s.rB.Netns, n, err)
	}
	s.spk.drainStates()
	arr, err := subscribe(ctx, s.rB.Netns, protoZebra, s.set)
	if err != nil {
		return nil, err
	}
	defer arr.close()
	cpu0, err := nsCPU(s.rS.Netns, s.rB.Netns)
	if err != nil {
		return nil, err
	}
	self0 := selfCPU()
	if err := s.frrB.AddNeighbor(ctx, router.Neighbor{Addr: s.rS.Addr, AS: uint32(v1.DefaultASNumber)}); err != nil {
		return nil, err
	}
	ribDone := s.ribWatch(ctx, s.set.n, s.frrB.RouteCount)
	res := &side{}
	res.arrivalTimes, err = arr.wait(ctx, s.frrBNL, installTimeout)
	cpu1, cerr := nsCPU(s.rS.Netns, s.rB.Netns)
	res.self = selfCPU() - self0
	res.rib = ribDone()
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("ref: %w\n%s", err, s.frrB.Logs())
	}
	if cerr != nil {
		return nil, cerr
	}
	res.cpu = cpu1.since(cpu0)
	if res.est, err = s.spk.waitEstablished(ctx, 5*time.Second); err != nil {
		return nil, err
	}
	if n, err := countRoutes(s.frrBNL, protoZebra, s.set); err != nil || n != s.set.n {
		return nil, fmt.Errorf("ref: %d zebra routes in the kernel, want %d (%v)", n, s.set.n, err)
	}
	return res, nil
}

// resetRef removes FRR-B's neighbor and waits until zebra removed every route.
func (s *setup) resetRef(ctx context.Context) error {
	if err := s.frrB.RemoveNeighbor(ctx, s.rS.Addr); err != nil {
		return err
	}
	if err := waitCount(ctx, s.frrBNL, protoZebra, s.set, 0, flushTimeout); err != nil {
		return fmt.Errorf("%s: zebra routes not removed: %w", s.rB.Netns, err)
	}
	return nil
}
