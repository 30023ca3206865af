package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"go.uber.org/zap"
)

// Peer defaults.
const (
	DefaultHoldTime      = 90 * time.Second
	DefaultKeepaliveTime = 30 * time.Second
	DefaultConnectRetry  = 5 * time.Second
)

// Peers counts the prefixes each peer is sent when advertisedTTL has passed, or after a
// change (a session, a route, our adverts) once the last count is older than
// advertisedMinAge, than advertisedCostFactor times what it took and than
// advertisedPerRoute per learned prefix (the table may have grown since): the count walks
// gobgp's whole table (~0.3 s of CPU at 100k routes) holding its server loop, so with
// a large table it runs seldom, and with a small one about once a second.
const (
	advertisedTTL        = 30 * time.Second
	advertisedMinAge     = time.Second
	advertisedCostFactor = 50
	advertisedPerRoute   = 100 * time.Microsecond // 10 s at 100k learned prefixes
)

func (s *goBGP) AddPeer(ctx context.Context, p Peer) error {
	p.Address = p.Address.Unmap()
	if err := p.validate(); err != nil {
		return err
	}
	unlock, err := s.operate(fmt.Sprintf("add peer %s", p.Address))
	if err != nil {
		return err
	}
	defer unlock()
	s.mu.Lock()
	_, exists := s.peers[p.Address]
	s.mu.Unlock()
	if exists {
		return fmt.Errorf("add peer %s: already configured", p.Address)
	}
	if err := s.addPeer(ctx, p); err != nil {
		return fmt.Errorf("add peer %s: %w", p.Address, err)
	}
	return nil
}

// addPeer installs the peer's filters, then the peer. Called with opMu held.
func (s *goBGP) addPeer(ctx context.Context, p Peer) error {
	s.mu.Lock()
	s.peers[p.Address] = &peerEntry{cfg: p, state: StateIdle, since: time.Now()}
	restarting := s.global.LocalRestarting && time.Since(s.startedAt) < s.global.SelectionDeferral
	deferral := s.global.SelectionDeferral
	s.mu.Unlock()
	undo := func() {
		s.mu.Lock()
		delete(s.peers, p.Address)
		s.mu.Unlock()
	}
	if hasFilters(&p) {
		if err := s.setPolicies(ctx); err != nil {
			undo()
			return err
		}
	}
	if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(&p, restarting, deferral, false)}); err != nil {
		undo()
		if hasFilters(&p) {
			_ = s.setPolicies(ctx)
		}
		return err
	}
	return nil
}

func (s *goBGP) UpdatePeer(ctx context.Context, p Peer) error {
	p.Address = p.Address.Unmap()
	if err := p.validate(); err != nil {
		return err
	}
	unlock, err := s.operate(fmt.Sprintf("update peer %s", p.Address))
	if err != nil {
		return err
	}
	defer unlock()
	s.mu.Lock()
	e := s.peers[p.Address]
	var old Peer
	if e != nil {
		old = e.cfg
	}
	s.mu.Unlock()
	if e == nil {
		return fmt.Errorf("update peer %s: not configured", p.Address)
	}

	if !sessionEqual(&old, &p) {
		// The OPEN, the transport or the timers change: re-create the session.
		if err := s.removePeer(ctx, p.Address); err != nil {
			return fmt.Errorf("update peer %s: %w", p.Address, err)
		}
		if err := s.addPeer(ctx, p); err != nil {
			return fmt.Errorf("update peer %s: %w", p.Address, err)
		}
		return nil
	}
	s.mu.Lock()
	e.cfg = p
	s.mu.Unlock()
	if filtersEqual(&old, &p) {
		return nil
	}
	if err := s.setPolicies(ctx); err != nil {
		return fmt.Errorf("update peer %s: %w", p.Address, err)
	}
	dir := api.ResetPeerRequest_DIRECTION_BOTH
	switch {
	case policyEqual(old.Import, p.Import):
		dir = api.ResetPeerRequest_DIRECTION_OUT
	case policyEqual(old.Export, p.Export) && old.NextHop == p.NextHop && slices.Equal(old.ThirdPartyNextHops, p.ThirdPartyNextHops):
		dir = api.ResetPeerRequest_DIRECTION_IN
	}
	err = s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: p.Address.String(), Soft: true, Direction: dir})
	if err != nil {
		return fmt.Errorf("update peer %s: soft reset: %w", p.Address, err)
	}
	return nil
}

func (s *goBGP) RemovePeer(ctx context.Context, addr netip.Addr) error {
	addr = addr.Unmap()
	unlock, err := s.operate(fmt.Sprintf("remove peer %s", addr))
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.removePeer(ctx, addr); err != nil {
		return fmt.Errorf("remove peer %s: %w", addr, err)
	}
	return nil
}

// removePeer deletes the peer (Cease) and its filters. Called with opMu held.
func (s *goBGP) removePeer(ctx context.Context, addr netip.Addr) error {
	s.mu.Lock()
	e := s.peers[addr]
	s.mu.Unlock()
	if e == nil {
		return errors.New("not configured")
	}
	if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.peers, addr)
	s.mu.Unlock()
	if hasFilters(&e.cfg) {
		return s.setPolicies(ctx)
	}
	return nil
}

// holdDown re-creates a peer that went over MaxPrefixes with graceful restart on, held
// administratively down: that drops the routes gobgp kept for it, and it stays down
// until the peer is updated (with another configuration) or re-added.
func (s *goBGP) holdDown(addr netip.Addr, cfg Peer) {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.mu.Lock()
	e := s.peers[addr]
	current := s.running && e != nil && sessionEqual(&e.cfg, &cfg)
	s.mu.Unlock()
	if !current {
		return
	}
	ctx := context.Background()
	err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()})
	if err == nil {
		err = s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(&cfg, false, 0, true)})
	}
	if err != nil {
		s.log.Error("bgp peer over its prefix limit could not be held down", zap.Stringer("peer", addr), zap.Error(err))
		return
	}
	s.log.Warn("bgp peer held down: it sent more prefixes than its limit", zap.Stringer("peer", addr),
		zap.Uint32("maxPrefixes", cfg.MaxPrefixes))
}

// setPolicies rebuilds the two global policies from every peer's filters.
func (s *goBGP) setPolicies(ctx context.Context) error {
	s.mu.Lock()
	cfgs := make(map[netip.Addr]*Peer, len(s.peers))
	for a, e := range s.peers {
		cfg := e.cfg
		cfgs[a] = &cfg
	}
	s.mu.Unlock()
	if err := s.srv.SetPolicies(ctx, buildPolicies(cfgs)); err != nil {
		return fmt.Errorf("set policies: %w", err)
	}
	return nil
}

// sessionEqual says whether two configurations differ only in what can change without
// re-creating the session: the type label, the filters and the next-hop mode.
func sessionEqual(a, b *Peer) bool {
	x, y := *a, *b
	x.Type, y.Type = "", ""
	x.Import, y.Import, x.Export, y.Export = nil, nil, nil, nil
	x.NextHop, y.NextHop = NextHopAuto, NextHopAuto
	x.ThirdPartyNextHops, y.ThirdPartyNextHops = nil, nil
	return reflect.DeepEqual(x, y)
}

// seconds rounds d (or def when d is zero) to whole seconds.
func seconds(d, def time.Duration) uint64 {
	if d == 0 {
		d = def
	}
	return uint64((d + time.Second/2) / time.Second)
}

// apiPeer is the gobgp configuration of a peer: the session's own address family only,
// with graceful restart on it when asked (GracefulRestart and MpGracefulRestart both),
// and an explicit connect retry (gobgp's default is 120s).
func apiPeer(p *Peer, restarting bool, deferral time.Duration, adminDown bool) *api.Peer {
	family := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if p.Address.Is6() {
		family = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	}
	hold := seconds(p.HoldTime, DefaultHoldTime)
	keepalive := seconds(p.KeepaliveTime, DefaultKeepaliveTime)
	if p.KeepaliveTime == 0 && p.HoldTime != 0 {
		keepalive = max(hold/3, 1)
	}
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			LocalAsn:        p.LocalASN,
			AuthPassword:    p.Password,
			AllowOwnAsn:     uint32(p.AllowOwnAS),
			AdminDown:       adminDown,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      max(seconds(p.ConnectRetry, DefaultConnectRetry), 2),
			HoldTime:          hold,
			KeepaliveInterval: keepalive,
		}},
		Transport: &api.Transport{
			RemotePort:  uint32(p.Port),
			PassiveMode: p.Passive,
		},
		AfiSafis: []*api.AfiSafi{{
			Config:            &api.AfiSafiConfig{Family: family, Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: p.GracefulRestart}},
			PrefixLimits:      &api.PrefixLimit{Family: family, MaxPrefixes: p.MaxPrefixes},
		}},
	}
	if p.LocalAddress.IsValid() {
		ap.Transport.LocalAddress = p.LocalAddress.Unmap().String()
	}
	if p.GracefulRestart {
		restart := seconds(p.RestartTime, time.Duration(hold)*time.Second)
		ap.GracefulRestart = &api.GracefulRestart{
			Enabled:         true,
			RestartTime:     uint32(min(restart, 4095)), // 12 bits in the capability
			DeferralTime:    uint32(seconds(deferral, DefaultSelectionDeferral)),
			LocalRestarting: restarting,
		}
	}
	if p.RouteReflectorClient {
		ap.RouteReflector = &api.RouteReflector{
			RouteReflectorClient:    true,
			RouteReflectorClusterId: p.RouteReflectorClusterID,
		}
	}
	if p.TTLSecurity != 0 {
		// gobgp takes the lowest TTL accepted: 255 for a directly connected peer.
		ap.TtlSecurity = &api.TtlSecurity{Enabled: true, TtlMin: uint32(256 - int(p.TTLSecurity))}
	}
	if p.MultihopTTL > 1 {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.MultihopTTL)}
	}
	return ap
}

func (s *goBGP) Peers(ctx context.Context) ([]PeerState, error) {
	unlock, err := s.operate("list peers")
	if err != nil {
		return nil, err
	}
	defer unlock()
	got := map[netip.Addr]*api.Peer{}
	// Counting what each peer is sent makes gobgp run every path of its table through
	// the export policies, holding its server loop (~0.3 s at 100k paths): at most once
	// per advertisedTTL.
	s.mu.Lock()
	age := time.Since(s.advAt)
	countAdv := s.advertised == nil || age >= advertisedTTL ||
		(s.advStale && age >= max(advertisedMinAge, advertisedCostFactor*s.advCost,
			time.Duration(len(s.rib))*advertisedPerRoute))
	if countAdv {
		s.advStale = false // a change during the count marks it again
	}
	s.mu.Unlock()
	t0 := time.Now()
	err = s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: countAdv}, func(p *api.Peer) {
		if p.Conf == nil {
			return
		}
		if a, err := netip.ParseAddr(p.Conf.NeighborAddress); err == nil {
			got[a.Unmap()] = p
		}
	})
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if countAdv {
		s.advertised, s.advAt, s.advCost = make(map[netip.Addr]int, len(got)), time.Now(), time.Since(t0)
		for a, p := range got {
			for _, af := range p.AfiSafis {
				if af.State != nil {
					s.advertised[a] += int(af.State.Advertised)
				}
			}
		}
	}
	out := make([]PeerState, 0, len(s.peers))
	for a, e := range s.peers {
		ps := PeerState{Address: a, Type: e.cfg.Type, ASN: e.cfg.ASN, State: e.state, Since: e.since,
			LastError: e.lastError}
		if p := got[a]; p != nil {
			if p.State != nil {
				ps.State = apiSessionState(p.State.SessionState)
				ps.AdminDown = p.State.AdminState == api.PeerState_ADMIN_STATE_DOWN ||
					p.State.AdminState == api.PeerState_ADMIN_STATE_PFX_CT
				ps.Flaps = int(p.State.Flops)
				if m := p.State.Messages; m != nil {
					ps.UpdatesReceived = m.GetReceived().GetUpdate()
					ps.UpdatesSent = m.GetSent().GetUpdate()
				}
			}
			for _, af := range p.AfiSafis {
				if af.State != nil {
					ps.PrefixesReceived += int(af.State.Received)
					ps.PrefixesAccepted += int(af.State.Accepted)
				}
			}
		}
		ps.PrefixesAdvertised = s.advertised[a]
		if ps.LastError == "" && ps.Flaps == 0 && !ps.AdminDown && e.cfg.Password != "" && notConnected(ps.State) {
			ps.LastError = md5Hint(a, e.cfg.Port)
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b PeerState) int { return a.Address.Compare(b.Address) })
	return out, nil
}

// notConnected says whether a session in state has no TCP connection.
func notConnected(s SessionState) bool {
	return s == StateIdle || s == StateConnect || s == StateActive
}

// md5Hint is the LastError of a session with a password that was never Established
// and never went down with a reason. A TCP MD5 mismatch (or a peer without the
// password) makes both kernels drop the other's segments silently, so all the speaker
// sees is connection attempts that time out: say so, without claiming a mismatch.
func md5Hint(addr netip.Addr, port uint16) string {
	if port == 0 {
		port = 179
	}
	return fmt.Sprintf("no TCP connection with %s yet; a TCP MD5 password is set, and one that differs from "+
		"the peer's (or a peer without one) drops the connection silently: check both ends", netip.AddrPortFrom(addr, port))
}
