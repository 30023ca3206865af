package controller

import (
	"context"
	"maps"
	"net/netip"
	"sync"
	"time"

	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/felix"
	"go.uber.org/zap"
)

// Defaults of the learned-route hand-off.
const (
	// DefaultLearnedDelay coalesces a burst of route events: a change after a quiet
	// spell is handed on at once, and then at most one hand-off per delay.
	DefaultLearnedDelay = 20 * time.Millisecond
	// DefaultInitialSyncTimeout bounds the wait for End-of-RIB from every configured
	// peer before the first hand-off.
	DefaultInitialSyncTimeout = 5 * time.Second
	// DefaultRestartSyncTimeout is that wait after a graceful restart (the speaker is
	// LocalRestarting): the kernel still holds the routes of the last run, and handing
	// on a partial set would delete the routes of peers not yet back. A peer whose
	// session dropped refuses us for a few seconds (gobgp idles 5 s after a reset),
	// then needs a connect retry: 30 s covers that with room.
	DefaultRestartSyncTimeout = 30 * time.Second
	// drainMax bounds the queued events handled before one hand-off.
	drainMax = 4096
)

// Learned follows the speaker's events and hands the whole set of learned routes to a
// callback: first once the initial table is in (End-of-RIB from every configured peer,
// or the initial-sync timeout; at once when there are no peers or BGP is off), then
// after every burst of changes: the whole set again, or, with OnDelta, only what
// changed. A route to one of this node's own prefixes is never handed on. Routes kept
// only by graceful restart (stale) are kept.
type Learned struct {
	out     func([]felix.LearnedRoute)
	delta   func([]felix.LearnedRoute, []netip.Prefix)
	onPeer  func(bgp.Event)
	delay   time.Duration
	timeout time.Duration
	log     *zap.Logger

	mu          sync.Mutex
	routes      map[netip.Prefix][]netip.Addr
	own         map[netip.Prefix]bool
	waitEoR     map[netip.Addr]bool // configured peers that have not sent IPv4 End-of-RIB
	eor         map[netip.Addr]bool
	haveDesired bool
	synced      bool // the initial table was handed on
	dirty       bool
	kick        chan struct{}
	// changed holds the prefixes whose hand-off may differ since the last one; full
	// asks for the whole set next (none handed on yet, or BGP switched off).
	changed map[netip.Prefix]struct{}
	full    bool
}

// LearnedOptions tune a Learned; zero values mean the defaults.
type LearnedOptions struct {
	Delay              time.Duration
	InitialSyncTimeout time.Duration
	// OnDelta, when set, receives every hand-off after the first as the routes added
	// or changed and the prefixes withdrawn (felix's UpdateLearnedRoutes): with a large
	// table, a change then costs what it changes, not the size of the table.
	OnDelta func(routes []felix.LearnedRoute, withdrawn []netip.Prefix)
	// OnPeer is called (from Run's goroutine) with every EventPeer and IPv4
	// EventEndOfRIB.
	OnPeer func(bgp.Event)
	Logger *zap.Logger
}

// NewLearned returns a Learned handing its set to out.
func NewLearned(out func([]felix.LearnedRoute), o LearnedOptions) *Learned {
	l := &Learned{out: out, delta: o.OnDelta, changed: map[netip.Prefix]struct{}{}, full: true, onPeer: o.OnPeer, delay: o.Delay, timeout: o.InitialSyncTimeout, log: o.Logger,
		routes: map[netip.Prefix][]netip.Addr{}, own: map[netip.Prefix]bool{}, waitEoR: map[netip.Addr]bool{},
		eor: map[netip.Addr]bool{}, kick: make(chan struct{}, 1)}
	if l.delay <= 0 {
		l.delay = DefaultLearnedDelay
	}
	if l.timeout <= 0 {
		l.timeout = DefaultInitialSyncTimeout
	}
	if l.log == nil {
		l.log = zap.NewNop()
	}
	return l
}

// SetDesired gives the node's own prefixes and configured peers. With no Global (BGP
// off) the learned set is empty.
func (l *Learned) SetDesired(d *Desired) {
	l.mu.Lock()
	// Only a change of what is handed on makes a hand-off: the first Desired, a change
	// of our own prefixes (they are filtered out), BGP switched off (the set empties).
	// Desired is recalculated on every block change of the cluster; a hand-off then
	// would spend the leading edge of the route update that follows it.
	changed := !l.haveDesired || !maps.Equal(l.own, d.Own) || (d.Global == nil && len(l.routes) > 0)
	for p := range l.own { // a prefix that stops or starts being ours changes its hand-off
		if !d.Own[p] {
			l.changed[p] = struct{}{}
		}
	}
	for p := range d.Own {
		if !l.own[p] {
			l.changed[p] = struct{}{}
		}
	}
	if d.Global == nil {
		l.full = true
	}
	l.haveDesired = true
	l.own = d.Own
	l.waitEoR = map[netip.Addr]bool{}
	if d.Global == nil {
		l.own = nil
		clear(l.routes)
	}
	for a := range d.Peers {
		if !l.eor[a] {
			l.waitEoR[a] = true
		}
	}
	l.dirty = l.dirty || changed
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Run follows events until ctx ends or events is closed. The initial-sync timeout
// counts from the call.
func (l *Learned) Run(ctx context.Context, events <-chan bgp.Event) {
	initial := time.NewTimer(l.timeout)
	defer initial.Stop()
	var (
		flush    <-chan time.Time
		lastEmit time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				return
			}
			l.handle(ev)
		case <-l.kick:
		case <-initial.C:
			l.mu.Lock()
			if !l.synced && l.haveDesired {
				l.log.Info("initial bgp sync timed out; handing on the learned routes so far",
					zap.Int("waitingForEndOfRIB", len(l.waitEoR)))
				l.synced = true
			}
			l.mu.Unlock()
		case <-flush:
			flush = nil
			l.drain(events)
			l.emit()
			lastEmit = time.Now()
			continue
		}
		l.mu.Lock()
		if !l.synced && l.haveDesired && len(l.waitEoR) == 0 {
			l.synced = true
			l.log.Info("initial bgp table in", zap.Int("routes", len(l.routes)))
		}
		ready := l.synced && l.dirty
		l.mu.Unlock()
		if ready && flush == nil {
			// Leading edge: a change after a quiet spell is handed on at once; within a
			// burst, at most one hand-off per delay.
			if wait := l.delay - time.Since(lastEmit); wait > 0 {
				flush = time.After(wait)
				continue
			}
			l.drain(events)
			l.emit()
			lastEmit = time.Now()
		}
	}
}

// drain handles the events already queued, without waiting for more, so that a hand-off
// at the leading edge of a burst carries what has arrived with it.
func (l *Learned) drain(events <-chan bgp.Event) {
	for range drainMax {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			l.handle(ev)
		default:
			return
		}
	}
}

func (l *Learned) handle(ev bgp.Event) {
	switch ev.Kind {
	case bgp.EventRoute:
		l.mu.Lock()
		if ev.Withdrawn || len(ev.NextHops) == 0 {
			delete(l.routes, ev.Prefix)
		} else {
			l.routes[ev.Prefix] = ev.NextHops
		}
		l.changed[ev.Prefix] = struct{}{}
		l.dirty = true
		l.mu.Unlock()
	case bgp.EventEndOfRIB:
		if ev.IPv6 {
			return
		}
		l.mu.Lock()
		l.eor[ev.Peer] = true
		delete(l.waitEoR, ev.Peer)
		l.mu.Unlock()
		if l.onPeer != nil {
			l.onPeer(ev) // the peer's prefix count is complete
		}
	case bgp.EventPeer:
		if ev.State != bgp.StateEstablished {
			l.mu.Lock()
			delete(l.eor, ev.Peer) // a new session sends a new End-of-RIB
			l.mu.Unlock()
		}
		if l.onPeer != nil {
			l.onPeer(ev)
		}
	}
}

// Snapshot is the learned set as it would be handed on now.
func (l *Learned) Snapshot() []felix.LearnedRoute {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]felix.LearnedRoute, 0, len(l.routes))
	for p, nhs := range l.routes {
		if !l.own[p] {
			out = append(out, felix.LearnedRoute{Prefix: p, NextHops: nhs})
		}
	}
	return out
}

// Synced reports whether the initial table was handed on.
func (l *Learned) Synced() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.synced
}

func (l *Learned) emit() {
	l.mu.Lock()
	l.dirty = false
	if l.delta == nil || l.full {
		l.full = false
		clear(l.changed)
		l.mu.Unlock()
		routes := l.Snapshot()
		l.log.Debug("learned routes handed on", zap.Int("routes", len(routes)))
		l.out(routes)
		return
	}
	var set []felix.LearnedRoute
	var gone []netip.Prefix
	for p := range l.changed {
		if nhs, ok := l.routes[p]; ok && !l.own[p] {
			set = append(set, felix.LearnedRoute{Prefix: p, NextHops: nhs})
		} else {
			gone = append(gone, p)
		}
	}
	clear(l.changed)
	l.mu.Unlock()
	if len(set) == 0 && len(gone) == 0 {
		return
	}
	l.log.Debug("learned route changes handed on", zap.Int("set", len(set)), zap.Int("withdrawn", len(gone)))
	l.delta(set, gone)
}
