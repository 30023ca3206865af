package vmendpoint

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
)

// ErrNoDomain is what Conn.LookupDomain wraps when no domain has the UUID.
var ErrNoDomain = errors.New("no such domain")

// EventKind is the libvirt lifecycle event of a domain, reduced to what matters here.
type EventKind int

// Event kinds. Every kind makes the domain dirty; Undefined and StoppedMigrated also
// say whether its addresses may go.
const (
	EventOther EventKind = iota
	EventDefined
	EventUndefined
	EventStarted
	EventResumed
	EventStopped
	// EventStoppedMigrated: the domain left this host by live migration; its
	// addresses are kept when it is then undefined here.
	EventStoppedMigrated
)

// Event is one lifecycle event.
type Event struct {
	UUID string
	Name string
	Kind EventKind
}

// Source opens connections to libvirt (LibvirtSource; a fake in tests).
type Source interface {
	// Connect opens a connection and registers for lifecycle events, which go to
	// notify (called from the source's event loop: it does not block) until the
	// connection is closed.
	Connect(ctx context.Context, notify func(Event)) (Conn, error)
}

// Conn is one connection to libvirt.
type Conn interface {
	// ListDomains lists every defined or running domain, with its XML.
	ListDomains(ctx context.Context) ([]Domain, error)
	// LookupDomain reads one domain; an error wrapping ErrNoDomain when it is not
	// defined (any more).
	LookupDomain(ctx context.Context, uuid string) (Domain, error)
	// Done is closed when the connection is lost (libvirtd stopped or restarted).
	Done() <-chan struct{}
	// Close releases the connection.
	Close() error
}

// Defaults of WatcherConfig.
const (
	DefaultMinBackoff     = 500 * time.Millisecond
	DefaultMaxBackoff     = 30 * time.Second
	DefaultResyncInterval = 5 * time.Minute
)

// WatcherConfig builds a Watcher.
type WatcherConfig struct {
	Source     Source
	Reconciler *Reconciler
	// URI is reported in the status.
	URI    string
	Logger *zap.Logger
	// MinBackoff and MaxBackoff bound the waits before a reconnect and before a
	// failed domain is retried (doubling from min to max).
	MinBackoff, MaxBackoff time.Duration
	// ResyncInterval is how often every domain is listed and reconciled again.
	ResyncInterval time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Watcher follows libvirt and drives the Reconciler: a full resync on every connect,
// lifecycle events in between, retries with backoff, and a reconnect with backoff
// when the connection is lost. While it is disconnected nothing is written: guests
// keep running and so do their WorkloadEndpoints.
type Watcher struct {
	cfg WatcherConfig
	log *zap.Logger
	rec *Reconciler

	mu          sync.Mutex
	pending     map[string]Event // dirty domains, by UUID (latest event)
	migratedOut map[string]bool  // domains that left by live migration
	st          watcherState
	wake        chan struct{}
}

type watcherState struct {
	connected  bool
	err        string
	since      time.Time
	lastResync time.Time
	reconnects int
}

// NewWatcher checks cfg and builds a Watcher.
func NewWatcher(cfg WatcherConfig) (*Watcher, error) {
	if cfg.Source == nil || cfg.Reconciler == nil {
		return nil, errors.New("vmendpoint: watcher needs a source and a reconciler")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = DefaultMinBackoff
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(DefaultMaxBackoff, cfg.MinBackoff)
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = DefaultResyncInterval
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Watcher{cfg: cfg, log: cfg.Logger, rec: cfg.Reconciler, pending: map[string]Event{},
		migratedOut: map[string]bool{}, wake: make(chan struct{}, 1),
		st: watcherState{err: "not connected yet"}}, nil
}

// notify records an event; it never blocks.
func (w *Watcher) notify(e Event) {
	w.mu.Lock()
	w.pending[e.UUID] = e
	switch e.Kind {
	case EventStoppedMigrated:
		w.migratedOut[e.UUID] = true
	case EventStarted, EventResumed:
		delete(w.migratedOut, e.UUID)
	}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run connects and reconciles until ctx ends. It only returns then (nil): a libvirt
// that cannot be loaded or reached is retried with backoff and reported in Status.
func (w *Watcher) Run(ctx context.Context) error {
	backoff := w.cfg.MinBackoff
	for ctx.Err() == nil {
		connected, err := w.session(ctx)
		if ctx.Err() != nil {
			break
		}
		if connected {
			backoff = w.cfg.MinBackoff
		}
		w.mu.Lock()
		w.st.connected, w.st.err, w.st.since = false, err.Error(), w.cfg.Now()
		w.st.reconnects++
		w.mu.Unlock()
		w.log.Warn("libvirt not connected: VM endpoints are left as they are until it is back",
			zap.String("uri", w.cfg.URI), zap.Error(err), zap.Duration("retryIn", backoff))
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, w.cfg.MaxBackoff)
	}
	w.mu.Lock()
	w.st.connected, w.st.err = false, "stopped"
	w.mu.Unlock()
	return nil
}

// retry is a failed domain waiting for its next attempt.
type retry struct {
	ev      Event
	due     time.Time
	backoff time.Duration
}

// session runs one connection: resync, then events and retries, until the connection
// is lost (connected says whether it was ever made).
func (w *Watcher) session(ctx context.Context) (connected bool, err error) {
	conn, err := w.cfg.Source.Connect(ctx, w.notify)
	if err != nil {
		return false, fmt.Errorf("connect to %s: %w", w.cfg.URI, err)
	}
	defer func() { _ = conn.Close() }()
	w.log.Info("connected to libvirt", zap.String("uri", w.cfg.URI))
	w.mu.Lock()
	w.st.connected, w.st.err, w.st.since = true, "", w.cfg.Now()
	w.mu.Unlock()

	retries := map[string]*retry{}
	resyncDue := w.cfg.Now() // at once
	for {
		if !w.cfg.Now().Before(resyncDue) {
			if err := w.resync(ctx, conn, retries); err != nil {
				return true, err
			}
			resyncDue = w.cfg.Now().Add(w.cfg.ResyncInterval)
		}
		w.mu.Lock()
		batch := w.pending
		w.pending = map[string]Event{}
		w.mu.Unlock()
		now := w.cfg.Now()
		for uuid, r := range retries {
			if _, dirty := batch[uuid]; !dirty && !now.Before(r.due) {
				batch[uuid] = r.ev
			}
		}
		for uuid, ev := range batch {
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			if err := w.handle(ctx, conn, ev); err != nil {
				w.fail(retries, ev, err)
			} else {
				delete(retries, uuid)
			}
		}
		wait := resyncDue.Sub(w.cfg.Now())
		for _, r := range retries {
			wait = min(wait, r.due.Sub(w.cfg.Now()))
		}
		t := time.NewTimer(max(wait, 0))
		select {
		case <-ctx.Done():
			t.Stop()
			return true, ctx.Err()
		case <-conn.Done():
			t.Stop()
			return true, errors.New("connection to libvirt closed")
		case <-w.wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// resync lists every domain and reconciles them all; a failed list ends the session.
func (w *Watcher) resync(ctx context.Context, conn Conn, retries map[string]*retry) error {
	doms, err := conn.ListDomains(ctx)
	if err != nil {
		return fmt.Errorf("list domains: %w", err)
	}
	w.mu.Lock()
	keep := make(map[string]bool, len(w.migratedOut))
	for k := range w.migratedOut {
		keep[k] = true
	}
	w.mu.Unlock()
	failed := w.rec.Resync(ctx, doms, keep)
	names := map[string]string{}
	for _, d := range doms {
		names[d.UUID] = d.Name
	}
	for uuid := range retries {
		if _, bad := failed[uuid]; !bad {
			delete(retries, uuid)
		}
	}
	for uuid, err := range failed {
		if uuid == "" {
			w.log.Warn("resync of VM endpoints incomplete", zap.Error(err))
			continue
		}
		w.fail(retries, Event{UUID: uuid, Name: names[uuid]}, err)
	}
	w.mu.Lock()
	w.st.lastResync = w.cfg.Now()
	w.mu.Unlock()
	w.log.Info("VM endpoints resynced", zap.Int("domains", len(doms)), zap.Int("failed", len(failed)))
	return nil
}

// handle reconciles one dirty domain from a fresh read of it.
func (w *Watcher) handle(ctx context.Context, conn Conn, ev Event) error {
	d, err := conn.LookupDomain(ctx, ev.UUID)
	if errors.Is(err, ErrNoDomain) {
		w.mu.Lock()
		migrated := w.migratedOut[ev.UUID]
		w.mu.Unlock()
		if err := w.rec.ForgetDomain(ctx, ev.UUID, ev.Name, !migrated); err != nil {
			return err
		}
		w.mu.Lock()
		delete(w.migratedOut, ev.UUID)
		w.mu.Unlock()
		return nil
	}
	if err != nil {
		err = fmt.Errorf("read domain %s: %w", ev.Name, err)
		w.rec.setError(ev.UUID, ev.Name, err)
		return err
	}
	return w.rec.SyncDomain(ctx, d)
}

func (w *Watcher) fail(retries map[string]*retry, ev Event, err error) {
	r := retries[ev.UUID]
	if r == nil {
		r = &retry{backoff: w.cfg.MinBackoff}
		retries[ev.UUID] = r
	} else {
		r.backoff = min(2*r.backoff, w.cfg.MaxBackoff)
	}
	r.ev = ev
	r.due = w.cfg.Now().Add(r.backoff)
	w.log.Warn("VM endpoint not reconciled, will retry", zap.String("domain", ev.Name), zap.String("uuid", ev.UUID),
		zap.Error(err), zap.Duration("retryIn", r.backoff))
}

// Status is what the VM endpoint watcher reports (for the agent's local API).
type Status struct {
	Enabled   bool   `json:"enabled"`
	URI       string `json:"uri,omitempty"`
	Connected bool   `json:"connected"`
	// Error says why it is not connected (libvirt not installed, libvirtd down...).
	Error      string         `json:"error,omitempty"`
	Since      time.Time      `json:"since,omitzero"`
	LastResync time.Time      `json:"lastResync,omitzero"`
	Reconnects int            `json:"reconnects"`
	Domains    []DomainStatus `json:"domains"`
}

// DomainStatus is one domain's state as the reconciler last left it.
type DomainStatus struct {
	UUID      string           `json:"uuid"`
	Name      string           `json:"name"`
	Active    bool             `json:"active"`
	Endpoints []EndpointStatus `json:"endpoints,omitempty"`
	// Standby: paused for a live migration while another node's endpoints route the
	// guest (see Reconciler); the endpoints here are policed but not routed.
	Standby bool `json:"standby,omitempty"`
	// Migration is the last live migration to this node.
	Migration *MigrationStatus `json:"migration,omitempty"`
	// Problems in the domain's Tabby metadata (left out, the rest applied).
	Problems []string `json:"problems,omitempty"`
	// Error of the last reconcile ("" when it succeeded); it is retried with backoff.
	Error    string    `json:"error,omitempty"`
	LastSync time.Time `json:"lastSync,omitzero"`
}

// EndpointStatus is one written WorkloadEndpoint.
type EndpointStatus struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Tap       string `json:"tap"`
	MAC       string `json:"mac"`
	IP        string `json:"ip"`
}

// Status reports the connection and every domain.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	st := Status{Enabled: true, URI: w.cfg.URI, Connected: w.st.connected, Error: w.st.err, Since: w.st.since,
		LastResync: w.st.lastResync, Reconnects: w.st.reconnects}
	w.mu.Unlock()
	st.Domains = w.rec.Domains()
	return st
}
