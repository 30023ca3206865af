package dhcp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"go.uber.org/zap"
)

// ErrClosed is returned by Set after Close.
var ErrClosed = errors.New("dhcp manager closed")

// Manager runs one Server per tap and restarts a server whose socket failed,
// with a capped exponential backoff.
type Manager struct {
	log        *zap.Logger
	minBackoff time.Duration
	maxBackoff time.Duration

	mu     sync.Mutex
	taps   map[string]*entry
	closed bool
}

type entry struct {
	cfg    Config
	srv    *Server
	cancel context.CancelFunc
	done   chan struct{}
}

// ManagerOption tunes a Manager.
type ManagerOption func(*Manager)

// WithBackoff sets the first and the largest wait before serving again after a
// failure (defaults 100ms and 5s).
func WithBackoff(first, largest time.Duration) ManagerOption {
	return func(m *Manager) { m.minBackoff, m.maxBackoff = first, max(first, largest) }
}

// NewManager returns an empty manager logging to log (nil means no logging).
func NewManager(log *zap.Logger, opts ...ManagerOption) *Manager {
	if log == nil {
		log = zap.NewNop()
	}
	m := &Manager{log: log, minBackoff: 100 * time.Millisecond, maxBackoff: 5 * time.Second, taps: map[string]*entry{}}
	for _, o := range opts {
		o(m)
	}
	return m
}

// Set serves cfg on tap, replacing what was served there. cfg.Interface may be
// empty (it becomes tap) or must equal tap. Setting the same config again
// changes nothing; a bad config is refused and the running server is kept.
func (m *Manager) Set(tap string, cfg Config) error {
	if cfg.Interface == "" {
		cfg.Interface = tap
	}
	if cfg.Interface != tap {
		return fmt.Errorf("set dhcp on %s: config names interface %s", tap, cfg.Interface)
	}
	cfg, err := cfg.clone().withDefaults()
	if err != nil {
		return fmt.Errorf("set dhcp on %s: %w", tap, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if old, ok := m.taps[tap]; ok {
		if old.cfg.Equal(cfg) {
			return nil
		}
		old.stop()
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &entry{cfg: cfg, srv: NewServer(m.log), cancel: cancel, done: make(chan struct{})}
	e.srv.update(func(st *Status) { st.Interface = tap })
	m.taps[tap] = e
	go m.run(ctx, e)
	return nil
}

// Remove stops serving tap and waits until its sockets are closed.
func (m *Manager) Remove(tap string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.taps[tap]; ok {
		e.stop()
		delete(m.taps, tap)
	}
}

// Close stops every server and waits for them; Set fails afterwards.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for _, e := range m.taps {
		e.cancel()
	}
	for tap, e := range m.taps {
		<-e.done
		delete(m.taps, tap)
	}
}

// Status reports tap's server, if one is set.
func (m *Manager) Status(tap string) (Status, bool) {
	m.mu.Lock()
	e, ok := m.taps[tap]
	m.mu.Unlock()
	if !ok {
		return Status{}, false
	}
	return e.srv.Status(), true
}

// Statuses reports every tap's server.
func (m *Manager) Statuses() map[string]Status {
	m.mu.Lock()
	taps := maps.Clone(m.taps)
	m.mu.Unlock()
	out := make(map[string]Status, len(taps))
	for tap, e := range taps {
		out[tap] = e.srv.Status()
	}
	return out
}

func (e *entry) stop() {
	e.cancel()
	<-e.done
}

// run serves e until its context is cancelled, starting again after each
// failure.
func (m *Manager) run(ctx context.Context, e *entry) {
	defer close(e.done)
	log := m.log.With(zap.String("interface", e.cfg.Interface))
	backoff := m.minBackoff
	failures := 0
	for {
		started := time.Now()
		err := e.srv.Serve(ctx, e.cfg)
		if ctx.Err() != nil {
			return
		}
		// A server that ran longer than the largest backoff was healthy:
		// start the backoff over.
		if time.Since(started) > m.maxBackoff {
			backoff, failures = m.minBackoff, 0
		}
		failures++
		if failures == 1 {
			log.Warn("dhcp server failed, restarting", zap.Error(err), zap.Duration("backoff", backoff))
		} else {
			log.Debug("dhcp server still failing", zap.Error(err), zap.Int("failures", failures), zap.Duration("backoff", backoff))
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, m.maxBackoff)
		e.srv.update(func(st *Status) { st.Restarts++ })
	}
}
