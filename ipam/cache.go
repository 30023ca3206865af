package ipam

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// DefaultCacheTTL is how long an Allocator reuses pools, the IPAM configuration,
// reservations and node labels before reading them again: a change to them takes
// effect within this time. Blocks and handles are never cached (every write is CAS).
const DefaultCacheTTL = 2 * time.Second

type settings struct {
	at       time.Time
	pools    []pool
	cfg      config
	reserved func(netip.Addr) bool
	resNames []string
}

type settingsCache struct {
	mu     sync.Mutex
	cur    *settings
	labels map[string]labelEntry
}

type labelEntry struct {
	at     time.Time
	labels map[string]string
}

// settings returns pools, config and reservations, read at most ttl ago. They come
// from the API server's watch cache, which may lag a write by a moment: callers that
// find no usable pool call refresh before they fail.
func (a *Allocator) settings(ctx context.Context) (*settings, error) {
	a.cache.mu.Lock()
	cur := a.cache.cur
	a.cache.mu.Unlock()
	if cur != nil && a.now().Sub(cur.at) < a.ttl {
		return cur, nil
	}
	return a.readSettings(ctx, true)
}

// refresh re-reads the settings consistently (a pool created a moment ago is seen).
func (a *Allocator) refresh(ctx context.Context) (*settings, error) {
	return a.readSettings(ctx, false)
}

func (a *Allocator) readSettings(ctx context.Context, stale bool) (*settings, error) {
	// Three independent reads: in flight together over one connection.
	s := &settings{at: a.now()}
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { s.pools, err = a.allPools(gctx, stale); return err })
	g.Go(func() (err error) { s.cfg, err = a.config(gctx); return err })
	g.Go(func() (err error) { s.reserved, s.resNames, err = a.reservations(gctx, stale); return err })
	if err := g.Wait(); err != nil {
		return nil, err
	}
	a.cache.mu.Lock()
	a.cache.cur = s
	a.cache.mu.Unlock()
	return s, nil
}

// cachedNodeLabels is nodeLabels read at most ttl ago.
func (a *Allocator) cachedNodeLabels(ctx context.Context, node string) (map[string]string, error) {
	a.cache.mu.Lock()
	e, ok := a.cache.labels[node]
	a.cache.mu.Unlock()
	if ok && a.now().Sub(e.at) < a.ttl {
		return e.labels, nil
	}
	l, err := a.nodeLabels(ctx, node)
	if err != nil {
		return nil, err
	}
	a.cache.mu.Lock()
	if a.cache.labels == nil {
		a.cache.labels = map[string]labelEntry{}
	}
	a.cache.labels[node] = labelEntry{at: a.now(), labels: l}
	a.cache.mu.Unlock()
	return l, nil
}

// Warm reads the pools, configuration, reservations and node labels an Assign for node
// needs, so that a caller with other work to do first (the CNI plugin reading its Pod)
// can overlap them with it.
func (a *Allocator) Warm(ctx context.Context, node string) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { _, err := a.settings(gctx); return err })
	g.Go(func() error { _, err := a.cachedNodeLabels(gctx, node); return err })
	return g.Wait()
}
