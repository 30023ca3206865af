package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/datastore"
	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Defaults of the NodeStatus writer.
const (
	// DefaultStatusInterval is how often status.bgp is refreshed when the NodeStatus
	// sets no spec.updatePeriodSeconds.
	DefaultStatusInterval = 10 * time.Second
	// DefaultStatusMinInterval spaces writes caused by session changes.
	DefaultStatusMinInterval = time.Second
)

// StatusWriter writes status.bgp (and status.lastUpdated) of the tabby.dev NodeStatus
// named after the node, creating it when missing; it leaves every other field alone. It
// writes every spec.updatePeriodSeconds (DefaultStatusInterval when unset; 0 means only
// on changes) and after Kick, at most once per MinInterval.
type StatusWriter struct {
	store    datastore.Store
	node     string
	peers    func(context.Context) ([]bgp.PeerState, error)
	interval time.Duration
	minGap   time.Duration
	now      func() time.Time
	log      *zap.Logger
	kick     chan struct{}
}

// StatusOptions configure a StatusWriter; zero values mean the defaults.
type StatusOptions struct {
	Interval    time.Duration
	MinInterval time.Duration
	Now         func() time.Time
	Logger      *zap.Logger
}

// NewStatusWriter returns a writer of node's NodeStatus from what peers reports.
func NewStatusWriter(s datastore.Store, node string, peers func(context.Context) ([]bgp.PeerState, error), o StatusOptions) *StatusWriter {
	w := &StatusWriter{store: s, node: node, peers: peers, interval: o.Interval, minGap: o.MinInterval, now: o.Now,
		log: o.Logger, kick: make(chan struct{}, 1)}
	if w.interval <= 0 {
		w.interval = DefaultStatusInterval
	}
	if w.minGap <= 0 {
		w.minGap = DefaultStatusMinInterval
	}
	if w.now == nil {
		w.now = time.Now
	}
	if w.log == nil {
		w.log = zap.NewNop()
	}
	return w
}

// Kick asks for a write soon (a session changed).
func (w *StatusWriter) Kick() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Run writes at once, then periodically and after kicks, until ctx ends.
func (w *StatusWriter) Run(ctx context.Context) {
	var last time.Time
	period := w.interval
	timer := time.NewTimer(0)
	defer timer.Stop()
	pending := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
			if !pending {
				pending = true
				timer.Stop()
				timer.Reset(max(0, w.minGap-time.Since(last)))
			}
			continue
		case <-timer.C:
		}
		pending = false
		last = time.Now()
		p, err := w.Write(ctx)
		if err != nil && ctx.Err() == nil {
			w.log.Warn("write NodeStatus failed", zap.String("node", w.node), zap.Error(err))
			p = w.minGap * 5
		}
		if p > 0 {
			period = p
			timer.Reset(period)
		} else {
			timer.Reset(24 * time.Hour) // only on changes
		}
	}
}

// Write writes status.bgp once and returns the refresh period the NodeStatus asks for
// (0: only on changes).
func (w *StatusWriter) Write(ctx context.Context) (time.Duration, error) {
	states, err := w.peers(ctx)
	if err != nil {
		return 0, fmt.Errorf("read bgp peers: %w", err)
	}
	st := BGPStatus(states)
	now := metav1.NewTime(w.now().Truncate(time.Second))
	for range 5 {
		cur, err := datastore.Get[*v1.NodeStatus](ctx, w.store, "", w.node)
		if errors.Is(err, datastore.ErrNotFound) {
			ns := &v1.NodeStatus{ObjectMeta: metav1.ObjectMeta{Name: w.node}, Spec: v1.NodeStatusSpec{Node: w.node},
				Status: v1.NodeStatusStatus{LastUpdated: now, BGP: st}}
			if _, err = datastore.Create(ctx, w.store, ns); errors.Is(err, datastore.ErrAlreadyExists) {
				continue
			}
			if err != nil {
				return 0, fmt.Errorf("create NodeStatus %s: %w", w.node, err)
			}
			return w.interval, nil
		}
		if err != nil {
			return 0, fmt.Errorf("read NodeStatus %s: %w", w.node, err)
		}
		period := w.interval
		if s := cur.Spec.UpdatePeriodSeconds; s != nil {
			period = time.Duration(*s) * time.Second
		}
		cur.Status.BGP, cur.Status.LastUpdated = st, now
		if _, err = datastore.Update(ctx, w.store, cur); errors.Is(err, datastore.ErrConflict) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("update NodeStatus %s: %w", w.node, err)
		}
		return period, nil
	}
	return 0, fmt.Errorf("update NodeStatus %s: %w", w.node, datastore.ErrConflict)
}

// BGPStatus turns the speaker's sessions into status.bgp, sorted by peer address.
func BGPStatus(states []bgp.PeerState) v1.BGPStatus {
	states = slices.Clone(states)
	slices.SortFunc(states, func(a, b bgp.PeerState) int { return a.Address.Compare(b.Address) })
	st := v1.BGPStatus{Peers: []v1.BGPPeerStatus{}}
	for _, s := range states {
		ps := v1.BGPPeerStatus{PeerIP: s.Address.String(), Type: s.Type, State: string(s.State),
			PrefixesReceived: s.PrefixesReceived, PrefixesAdvertised: s.PrefixesAdvertised}
		if !s.Since.IsZero() {
			t := metav1.NewTime(s.Since.Truncate(time.Second))
			ps.Since = &t
		}
		if s.State == bgp.StateEstablished {
			st.NumberEstablished++
		} else {
			st.NumberNotEstablished++
			ps.Message = s.LastError
			if s.AdminDown {
				ps.Message = "held down: " + s.LastError
			}
		}
		st.Peers = append(st.Peers, ps)
	}
	return st
}
