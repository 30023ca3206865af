package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"go.uber.org/zap"
)

// eventBuffer is the capacity of the Watch channel. When it is full the speaker's
// watcher waits (gobgp queues behind it without bound; it never blocks the router).
const eventBuffer = 4096

// goBGP is the Speaker on an embedded gobgp v4 server.
type goBGP struct {
	log   *zap.Logger
	quiet atomic.Bool

	events chan Event
	done   chan struct{} // closed by Stop: callbacks stop sending

	// opMu serialises the calls that configure the router.
	opMu sync.Mutex
	srv  *server.BgpServer

	// mu guards what the watch callbacks share with the calls.
	mu          sync.Mutex
	running     bool
	stopped     bool
	global      Global
	startedAt   time.Time
	peers       map[netip.Addr]*peerEntry
	originated  map[netip.Prefix]PathAttrs
	rib         map[netip.Prefix]*ribEntry
	watchCancel context.CancelFunc
	inflight    sync.WaitGroup
	// advertised caches each peer's advertised-prefix count (see Peers) as of advAt;
	// advStale is set by what changes it (sessions, routes, our adverts); advCost is
	// how long the last count took.
	advertised map[netip.Addr]int
	advAt      time.Time
	advStale   bool
	advCost    time.Duration
}

// peerEntry is a configured peer and what the watch has seen of its session.
type peerEntry struct {
	cfg       Peer
	state     SessionState
	since     time.Time
	lastError string
}

// NewGoBGP returns a Speaker on an embedded gobgp server; nil log means no logs.
func NewGoBGP(log *zap.Logger) Speaker {
	if log == nil {
		log = zap.NewNop()
	}
	return &goBGP{
		log:        log,
		events:     make(chan Event, eventBuffer),
		done:       make(chan struct{}),
		peers:      make(map[netip.Addr]*peerEntry),
		originated: make(map[netip.Prefix]PathAttrs),
		rib:        make(map[netip.Prefix]*ribEntry),
	}
}

func (s *goBGP) Watch() <-chan Event { return s.events }

// isRunning is checked under opMu by every configuring call.
// operate takes the operation lock and checks the speaker runs; the caller defers the
// returned unlock. what names the operation in the error.
func (s *goBGP) operate(what string) (unlock func(), err error) {
	s.opMu.Lock()
	if !s.isRunning() {
		s.opMu.Unlock()
		return nil, fmt.Errorf("%s: %w", what, ErrNotStarted)
	}
	return s.opMu.Unlock, nil
}

func (s *goBGP) isRunning() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// gobgp's global AFI-SAFI numbers (oc.AfiSafiTypeToIntMap).
const (
	familyIPv4 = 0
	familyIPv6 = 1
)

func (s *goBGP) Start(ctx context.Context, g Global) error {
	if err := g.validate(); err != nil {
		return err
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.mu.Lock()
	if s.running || s.stopped {
		s.mu.Unlock()
		return errors.New("bgp speaker was already started")
	}
	s.mu.Unlock()
	if g.SelectionDeferral <= 0 {
		g.SelectionDeferral = DefaultSelectionDeferral
	}

	level := new(slog.LevelVar)
	level.Set(slog.LevelDebug) // the zap core decides
	srv := server.NewBgpServer(server.LoggerOption(slog.New(newSlogToZap(s.log.Named("gobgp"), &s.quiet)), level))
	go srv.Serve() // the management loop must run before StartBgp

	port := int32(g.ListenPort)
	if port == 0 {
		port = -1 // gobgp: no listener (0 would mean 179)
	}
	listen := make([]string, 0, len(g.ListenAddresses))
	for _, a := range g.ListenAddresses {
		listen = append(listen, a.String())
	}
	err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:              g.ASN,
		RouterId:         g.RouterID.String(),
		ListenPort:       port,
		ListenAddresses:  listen,
		Families:         []uint32{familyIPv4, familyIPv6},
		UseMultiplePaths: true,
	}})
	if err == nil {
		err = initPolicies(ctx, srv)
	}
	var cancel context.CancelFunc
	if err == nil {
		// Registered before any peer, so nothing is missed: best paths (every multipath
		// member), End-of-RIB and session changes.
		var watchCtx context.Context
		watchCtx, cancel = context.WithCancel(context.Background())
		err = srv.WatchEvent(watchCtx, server.WatchEventMessageCallbacks{
			OnBestPath:   s.onBestPath,
			OnPathEor:    s.onEndOfRIB,
			OnPeerUpdate: s.onPeer,
		}, server.WatchBestPath(true), server.WatchEor(false), server.WatchPeer())
	}
	if err != nil {
		if cancel != nil {
			cancel()
		}
		s.quiet.Store(true)
		srv.Stop()
		return fmt.Errorf("start bgp speaker (router id %s, as %d, port %d): %w", g.RouterID, g.ASN, g.ListenPort, err)
	}

	s.mu.Lock()
	s.srv = srv
	s.global = g
	s.startedAt = time.Now()
	s.running = true
	s.watchCancel = cancel
	s.mu.Unlock()
	s.log.Info("bgp speaker started", zap.Stringer("routerID", g.RouterID), zap.Uint32("as", g.ASN),
		zap.Uint16("port", g.ListenPort), zap.Bool("localRestarting", g.LocalRestarting))
	return nil
}

// initPolicies creates the two (empty) global policies the per-peer statements go in
// and assigns them, accepting by default.
func initPolicies(ctx context.Context, srv *server.BgpServer) error {
	if err := srv.SetPolicies(ctx, buildPolicies(nil)); err != nil {
		return fmt.Errorf("create policies: %w", err)
	}
	for _, a := range []struct {
		name string
		dir  api.PolicyDirection
	}{{importPolicyName, api.PolicyDirection_POLICY_DIRECTION_IMPORT}, {exportPolicyName, api.PolicyDirection_POLICY_DIRECTION_EXPORT}} {
		err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name:          "global",
			Direction:     a.dir,
			Policies:      []*api.Policy{{Name: a.name}},
			DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
		}})
		if err != nil {
			return fmt.Errorf("assign policy %s: %w", a.name, err)
		}
	}
	return nil
}

func (s *goBGP) Stop(ctx context.Context, graceful bool) error {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.mu.Lock()
	if !s.running {
		s.mu.Unlock()
		return nil
	}
	s.running = false
	s.stopped = true // callbacks from now on are dropped
	srv := s.srv
	s.mu.Unlock()

	// StopBgp deconfigures every peer: with AllowGracefulRestart a peer that negotiated
	// graceful restart has its TCP connection closed without a NOTIFICATION, so it keeps
	// our routes as stale; without it every peer gets a Cease.
	s.quiet.Store(true)
	err := srv.StopBgp(ctx, &api.StopBgpRequest{AllowGracefulRestart: graceful})
	srv.Stop() // stops the BFD goroutine; its own StopBgp fails (quietly): already stopped

	close(s.done)
	s.watchCancel()
	s.inflight.Wait()
	close(s.events)
	s.log.Info("bgp speaker stopped", zap.Bool("graceful", graceful))
	if err != nil {
		return fmt.Errorf("stop bgp speaker: %w", err)
	}
	return nil
}

func (s *goBGP) Advertise(ctx context.Context, prefix netip.Prefix, attrs PathAttrs) error {
	if !prefix.IsValid() {
		return errors.New("advertise: prefix is not valid")
	}
	prefix = prefix.Masked()
	path, err := localPath(prefix, attrs)
	if err != nil {
		return fmt.Errorf("advertise %s: %w", prefix, err)
	}
	unlock, err := s.operate(fmt.Sprintf("advertise %s", prefix))
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{path}}); err != nil {
		return fmt.Errorf("advertise %s: %w", prefix, err)
	}
	s.mu.Lock()
	s.originated[prefix] = attrs
	s.advStale = true
	s.mu.Unlock()
	return nil
}

func (s *goBGP) Withdraw(ctx context.Context, prefix netip.Prefix) error {
	if !prefix.IsValid() {
		return errors.New("withdraw: prefix is not valid")
	}
	prefix = prefix.Masked()
	unlock, err := s.operate(fmt.Sprintf("withdraw %s", prefix))
	if err != nil {
		return err
	}
	defer unlock()
	s.mu.Lock()
	attrs, ok := s.originated[prefix]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	path, err := localPath(prefix, attrs)
	if err != nil {
		return fmt.Errorf("withdraw %s: %w", prefix, err)
	}
	if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{path}}); err != nil {
		return fmt.Errorf("withdraw %s: %w", prefix, err)
	}
	s.mu.Lock()
	s.advStale = true
	delete(s.originated, prefix)
	s.mu.Unlock()
	return nil
}

// localPath is the gobgp path for a prefix we originate: origin IGP, next hop
// unspecified (gobgp puts each session's local address) unless attrs name one. The
// address family is set on every path: gobgp rejects a path without one.
func localPath(prefix netip.Prefix, attrs PathAttrs) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(prefix)
	if err != nil {
		return nil, err
	}
	family, nh := bgp.RF_IPv4_UC, netip.IPv4Unspecified()
	if prefix.Addr().Is6() {
		family, nh = bgp.RF_IPv6_UC, netip.IPv6Unspecified()
	}
	if attrs.NextHop.IsValid() {
		if attrs.NextHop.Is4() != prefix.Addr().Is4() {
			return nil, fmt.Errorf("next hop %s is of another family", attrs.NextHop)
		}
		nh = attrs.NextHop
	}
	pa := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if family == bgp.RF_IPv4_UC {
		a, err := bgp.NewPathAttributeNextHop(nh)
		if err != nil {
			return nil, err
		}
		pa = append(pa, a)
	} else {
		a, err := bgp.NewPathAttributeMpReachNLRI(family, []bgp.PathNLRI{{NLRI: nlri}}, nh)
		if err != nil {
			return nil, err
		}
		pa = append(pa, a)
	}
	std, large, err := parseCommunities(attrs.Communities)
	if err != nil {
		return nil, err
	}
	if len(std) > 0 {
		pa = append(pa, bgp.NewPathAttributeCommunities(std))
	}
	if len(large) > 0 {
		pa = append(pa, bgp.NewPathAttributeLargeCommunities(large))
	}
	if attrs.LocalPref != 0 {
		pa = append(pa, bgp.NewPathAttributeLocalPref(attrs.LocalPref))
	}
	if attrs.MED != 0 {
		pa = append(pa, bgp.NewPathAttributeMultiExitDisc(attrs.MED))
	}
	return &apiutil.Path{Family: family, Nlri: nlri, Attrs: pa}, nil
}

func (s *goBGP) Routes(ctx context.Context) ([]Route, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Route, 0, len(s.rib))
	for p, e := range s.rib {
		out = append(out, Route{Prefix: p, NextHops: slices.Clone(e.hops)})
	}
	slices.SortFunc(out, func(a, b Route) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out, nil
}
