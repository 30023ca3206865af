package bgp

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"go.uber.org/zap"
)

// ribEntry is one learned prefix: its best paths (every multipath member) by source, and
// the next hops last reported on Watch.
type ribEntry struct {
	paths []ribPath
	hops  []netip.Addr
}

// ribPath is one best path: its source (peer address and add-path ID) and next hop.
type ribPath struct {
	peer    netip.Addr
	id      uint32
	nextHop netip.Addr
}

// begin registers a callback in flight unless the speaker is stopping; if it returns
// true the caller must call s.inflight.Done. Called with s.mu held.
func (s *goBGP) begin() bool {
	if s.stopped {
		return false
	}
	s.inflight.Add(1)
	return true
}

func (s *goBGP) send(evs []Event) {
	for _, ev := range evs {
		select {
		case s.events <- ev:
		case <-s.done:
			return
		}
	}
}

// onBestPath receives best-path changes. With multipath on, gobgp hands over the
// multipath members that were added, changed or withdrawn (for the initial dump, every
// member), each with its source: the entry keeps its paths per source and its next hops
// are reported when they change.
func (s *goBGP) onBestPath(paths []*apiutil.Path, _ time.Time) {
	s.mu.Lock()
	if !s.begin() {
		s.mu.Unlock()
		return
	}
	defer s.inflight.Done()
	s.advStale = true // routes passed on (reflected, or to a ToR) change what peers are sent
	touched := make([]netip.Prefix, 0, len(paths))
	for _, p := range paths {
		if p == nil || !p.PeerAddress.IsValid() { // our own prefixes
			continue
		}
		prefix, ok := pathPrefix(p)
		if !ok {
			continue
		}
		e := s.rib[prefix]
		if e == nil {
			e = &ribEntry{}
			s.rib[prefix] = e
		}
		key := ribPath{peer: p.PeerAddress, id: p.RemoteID}
		i := slices.IndexFunc(e.paths, func(r ribPath) bool { return r.peer == key.peer && r.id == key.id })
		nh := pathNextHop(p)
		switch {
		case p.Withdrawal || p.IsNexthopInvalid || !nh.IsValid():
			if i >= 0 {
				e.paths = slices.Delete(e.paths, i, i+1)
			}
		case i >= 0:
			e.paths[i].nextHop = nh
		default:
			key.nextHop = nh
			e.paths = append(e.paths, key)
		}
		touched = append(touched, prefix)
	}
	var evs []Event
	for _, prefix := range touched {
		e := s.rib[prefix]
		if e == nil {
			continue // already reported in this batch
		}
		hops := make([]netip.Addr, 0, len(e.paths))
		for _, r := range e.paths {
			hops = append(hops, r.nextHop)
		}
		slices.SortFunc(hops, func(a, b netip.Addr) int { return a.Compare(b) })
		hops = slices.Compact(hops)
		if len(hops) == 0 {
			delete(s.rib, prefix)
			if len(e.hops) > 0 {
				evs = append(evs, Event{Kind: EventRoute, Prefix: prefix, Withdrawn: true})
			}
			continue
		}
		if !slices.Equal(hops, e.hops) {
			e.hops = hops
			evs = append(evs, Event{Kind: EventRoute, Prefix: prefix, NextHops: slices.Clone(hops)})
		}
	}
	s.mu.Unlock()
	s.send(evs)
}

func pathPrefix(p *apiutil.Path) (netip.Prefix, bool) {
	if p.Family != bgp.RF_IPv4_UC && p.Family != bgp.RF_IPv6_UC {
		return netip.Prefix{}, false
	}
	n, ok := p.Nlri.(*bgp.IPAddrPrefix)
	if !ok {
		return netip.Prefix{}, false
	}
	return n.Prefix.Masked(), true
}

func pathNextHop(p *apiutil.Path) netip.Addr {
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			return a.Value
		case *bgp.PathAttributeMpReachNLRI:
			return a.Nexthop
		}
	}
	return netip.Addr{}
}

func (s *goBGP) onEndOfRIB(p *apiutil.Path, _ time.Time) {
	if p == nil || (p.Family != bgp.RF_IPv4_UC && p.Family != bgp.RF_IPv6_UC) {
		return
	}
	s.mu.Lock()
	if !s.begin() {
		s.mu.Unlock()
		return
	}
	defer s.inflight.Done()
	s.mu.Unlock()
	s.log.Debug("end-of-rib received", zap.Stringer("peer", p.PeerAddress), zap.Stringer("family", p.Family))
	s.send([]Event{{Kind: EventEndOfRIB, Peer: p.PeerAddress, IPv6: p.Family == bgp.RF_IPv6_UC}})
}

// onPeer receives session state changes: it keeps each peer's state, since and last
// error, logs the transitions through Established, and reports state changes.
func (s *goBGP) onPeer(ev *apiutil.WatchEventMessage_PeerEvent, t time.Time) {
	if ev == nil || ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	st := ev.Peer.State
	addr := st.NeighborAddress.Unmap()
	state := sessionState(st.SessionState)
	s.mu.Lock()
	if !s.begin() {
		s.mu.Unlock()
		return
	}
	defer s.inflight.Done()
	e := s.peers[addr]
	if e == nil { // deleted meanwhile
		s.mu.Unlock()
		return
	}
	reason := ""
	switch st.DisconnectReason {
	case api.PeerState_DISCONNECT_REASON_UNSPECIFIED, api.PeerState_DISCONNECT_REASON_IDLE_TIMER_EXPIRED:
	default:
		reason = st.DisconnectMessage
	}
	if st.AdminState == api.PeerState_ADMIN_STATE_PFX_CT {
		// gobgp reports the read error that follows its Cease; say why.
		reason = fmt.Sprintf("maximum prefixes exceeded: more than %d received", e.cfg.MaxPrefixes)
	}
	if reason != "" {
		e.lastError = reason
	}
	old, typ := e.state, e.cfg.Type
	if state == old {
		s.mu.Unlock()
		return
	}
	e.state, e.since = state, t
	s.advStale = true
	if st.AdminState == api.PeerState_ADMIN_STATE_PFX_CT && old == StateEstablished && e.cfg.GracefulRestart {
		// gobgp follows its own Cease with a read error, which it takes for a graceful
		// restart of the peer: it keeps (and even installs) the peer's routes as stale.
		go s.holdDown(addr, e.cfg)
	}
	s.mu.Unlock()

	switch {
	case state == StateEstablished:
		s.log.Info("bgp session established", zap.Stringer("peer", addr), zap.String("type", typ))
	case old == StateEstablished:
		s.log.Info("bgp session down", zap.Stringer("peer", addr), zap.String("type", typ),
			zap.String("state", string(state)), zap.String("reason", reason))
	}
	out := Event{Kind: EventPeer, Peer: addr, State: state}
	if old == StateEstablished {
		out.Reason = reason
	}
	s.send([]Event{out})
}

func sessionState(s bgp.FSMState) SessionState {
	switch s {
	case bgp.BGP_FSM_CONNECT:
		return StateConnect
	case bgp.BGP_FSM_ACTIVE:
		return StateActive
	case bgp.BGP_FSM_OPENSENT:
		return StateOpenSent
	case bgp.BGP_FSM_OPENCONFIRM:
		return StateOpenConfirm
	case bgp.BGP_FSM_ESTABLISHED:
		return StateEstablished
	}
	return StateIdle
}

func apiSessionState(s api.PeerState_SessionState) SessionState {
	switch s {
	case api.PeerState_SESSION_STATE_CONNECT:
		return StateConnect
	case api.PeerState_SESSION_STATE_ACTIVE:
		return StateActive
	case api.PeerState_SESSION_STATE_OPENSENT:
		return StateOpenSent
	case api.PeerState_SESSION_STATE_OPENCONFIRM:
		return StateOpenConfirm
	case api.PeerState_SESSION_STATE_ESTABLISHED:
		return StateEstablished
	}
	return StateIdle
}
