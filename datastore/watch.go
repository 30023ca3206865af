package datastore

import (
	"context"
	"fmt"
	"time"
)

// Backoff bounds for relisting after a broken watch.
const (
	minRelistBackoff = 50 * time.Millisecond
	maxRelistBackoff = 5 * time.Second
)

func (s *store) Watch(ctx context.Context, k Kind, opts WatchOptions) (<-chan Event, error) {
	if k.new == nil {
		return nil, fmt.Errorf("watch: %w: empty Kind", ErrUnknownKind)
	}
	opts.Namespace = scope(k, opts.Namespace)
	opts.AllowStale = false
	// The first list happens here so that a dead datastore is an error to the caller,
	// not a silent retry loop.
	objs, rv, err := s.b.list(ctx, k, opts.ListOptions)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", k.Name, err)
	}
	out := make(chan Event, 256)
	w := &watcher{s: s, k: k, opts: opts, out: out, known: map[string]Object{}}
	go w.run(ctx, objs, rv)
	return out, nil
}

// watcher keeps the last known state of every object so that a relist can report
// exactly what changed while the watch was down.
type watcher struct {
	s     *store
	k     Kind
	opts  WatchOptions
	out   chan<- Event
	known map[string]Object
}

func (w *watcher) run(ctx context.Context, objs []Object, rv string) {
	defer close(w.out)
	sortObjects(objs)
	if !w.reconcile(ctx, objs) || !w.send(ctx, Event{Type: Synced}) {
		return
	}
	backoff := minRelistBackoff
	for {
		healthy := w.follow(ctx, rv)
		if ctx.Err() != nil {
			return
		}
		if !healthy {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(backoff*2, maxRelistBackoff)
		} else {
			backoff = minRelistBackoff
		}
		var err error
		objs, rv, err = w.s.b.list(ctx, w.k, w.opts.ListOptions)
		if err != nil {
			continue // follow on an empty rv fails fast; we back off and retry
		}
		sortObjects(objs)
		if !w.reconcile(ctx, objs) {
			return
		}
	}
}

// follow streams events after rv until the watch breaks (false), the resync period
// elapses (true) or ctx ends.
func (w *watcher) follow(ctx context.Context, rv string) bool {
	if rv == "" {
		return false
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := w.s.b.watch(wctx, w.k, w.opts.ListOptions, rv)
	if err != nil {
		return false
	}
	var resync <-chan time.Time
	if w.opts.ResyncPeriod > 0 {
		t := time.NewTimer(w.opts.ResyncPeriod)
		defer t.Stop()
		resync = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return false
		case <-resync:
			return true
		case ev, ok := <-ch:
			if !ok || ev.err != nil {
				return false
			}
			if !w.apply(ctx, ev) {
				return false
			}
		}
	}
}

func (w *watcher) apply(ctx context.Context, ev rawEvent) bool {
	key := objKey(ev.obj)
	switch ev.typ {
	case Deleted:
		last, ok := w.known[key]
		if !ok {
			return true
		}
		delete(w.known, key)
		return w.send(ctx, Event{Type: Deleted, Object: last})
	default:
		_, had := w.known[key]
		w.known[key] = ev.obj
		typ := Modified
		if !had {
			typ = Added
		}
		return w.send(ctx, Event{Type: typ, Object: ev.obj})
	}
}

// reconcile reports the difference between what the watcher knew and a fresh list.
func (w *watcher) reconcile(ctx context.Context, objs []Object) bool {
	seen := make(map[string]bool, len(objs))
	for _, o := range objs {
		key := objKey(o)
		seen[key] = true
		old, had := w.known[key]
		w.known[key] = o
		switch {
		case !had:
			if !w.send(ctx, Event{Type: Added, Object: o}) {
				return false
			}
		case old.GetResourceVersion() != o.GetResourceVersion():
			if !w.send(ctx, Event{Type: Modified, Object: o}) {
				return false
			}
		}
	}
	for key, o := range w.known {
		if !seen[key] {
			delete(w.known, key)
			if !w.send(ctx, Event{Type: Deleted, Object: o}) {
				return false
			}
		}
	}
	return true
}

func (w *watcher) send(ctx context.Context, ev Event) bool {
	select {
	case w.out <- ev:
		return true
	case <-ctx.Done():
		return false
	}
}
