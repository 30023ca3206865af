package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/tabbynet/tabby/felix/routes"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// maxErrors bounds the errors one Apply reports (the rest are counted).
const maxErrors = 5

// RouteTable reconciles Tabby's routes in the main table of one network namespace.
type RouteTable struct {
	h   *netlink.Handle
	log *zap.Logger

	desired  map[netip.Prefix]Target
	actual   map[netip.Prefix][]kroute // Tabby's routes in the kernel, as last seen or written
	dirty    map[netip.Prefix]struct{} // prefixes to compare (and repair) on the next Apply
	problems map[netip.Prefix]string   // why a desired route is not in the kernel

	links     map[string]int // interface name -> index
	linkNames map[int]string
	missing   map[string]bool                      // looked up and absent since the last link change
	byIface   map[string]map[netip.Prefix]struct{} // desired local routes by interface
	byLink    map[int]map[netip.Prefix]struct{}    // actual local routes by interface index

	grace     time.Duration
	firstSeen map[netip.Prefix]time.Time // when an unwanted local route was first seen
	withdrawn map[netip.Prefix]struct{}  // wanted until Delete: removed at once, no grace
	retryIn   time.Duration              // earliest grace expiry found by this Apply

	resync       bool
	allowLocal   bool // ProtocolLocal routes may be deleted or replaced
	allowLearned bool // ProtocolLearned routes may be deleted or replaced

	batch *Batcher // new routes many to a write (nil: one at a time)
}

// SetBatcher makes Apply write new routes through b, many to a netlink write. b must
// work in the namespace of the RouteTable's handle.
func (t *RouteTable) SetBatcher(b *Batcher) { t.batch = b }

// ApplyResult says how an Apply went.
type ApplyResult struct {
	// Written counts routes added, replaced or deleted.
	Written int
	// Pending counts desired routes waiting for their interface (missing or down), and
	// deletes held back while deletes are not allowed.
	Pending int
	// Failed counts routes the kernel refused; Err says why (the first few).
	Failed int
	Err    error
	// Resynced is true when this Apply dumped the kernel's table.
	Resynced bool
	// RetryIn, when not 0, is when an Apply should run again: an unwanted route's grace
	// period ends then.
	RetryIn time.Duration
}

// NewRouteTable returns a reconciler working through h. Its first Apply dumps the
// kernel's table (adopting the routes already marked as Tabby's); deletes are not
// allowed until SetAllowDeletes.
func NewRouteTable(h *netlink.Handle, log *zap.Logger) *RouteTable {
	if log == nil {
		log = zap.NewNop()
	}
	return &RouteTable{
		h: h, log: log,
		desired: map[netip.Prefix]Target{}, actual: map[netip.Prefix][]kroute{},
		dirty: map[netip.Prefix]struct{}{}, problems: map[netip.Prefix]string{},
		links: map[string]int{}, linkNames: map[int]string{}, missing: map[string]bool{},
		byIface: map[string]map[netip.Prefix]struct{}{}, byLink: map[int]map[netip.Prefix]struct{}{},
		firstSeen: map[netip.Prefix]time.Time{}, withdrawn: map[netip.Prefix]struct{}{}, resync: true,
	}
}

// SetGracePeriod keeps a local workload route that nothing wants for d after it is
// first seen before deleting it: the CNI plugin writes a new pod's route before the
// pod's WorkloadEndpoint reaches felix. 0 (the default) deletes at once.
func (t *RouteTable) SetGracePeriod(d time.Duration) { t.grace = d }

// Set makes t the desired route for p (p is masked; IPv4 unmapped).
func (t *RouteTable) Set(p netip.Prefix, tgt Target) {
	p = normPrefix(p)
	if old, ok := t.desired[p]; ok {
		if old.Equal(tgt) {
			return
		}
		t.unindexDesired(p, old)
	}
	t.desired[p] = tgt
	if tgt.Kind == KindLocal {
		addIndex(t.byIface, tgt.Interface, p)
	}
	t.dirty[p] = struct{}{}
}

// Delete makes p wanted no more.
func (t *RouteTable) Delete(p netip.Prefix) {
	p = normPrefix(p)
	if old, ok := t.desired[p]; ok {
		t.unindexDesired(p, old)
		delete(t.desired, p)
		t.dirty[p] = struct{}{}
		// The grace period is for routes felix has not seen wanted yet (the CNI plugin
		// writes a pod's route before its endpoint arrives); a route whose endpoint was
		// just deleted goes at once.
		t.withdrawn[p] = struct{}{}
	}
}

func (t *RouteTable) unindexDesired(p netip.Prefix, old Target) {
	if old.Kind == KindLocal {
		delIndex(t.byIface, old.Interface, p)
	}
}

// SetAllowDeletes allows (or forbids) deleting and replacing Tabby's routes that carry
// ProtocolLocal (local routes, blackholes: allow once the datastore is in sync) and
// ProtocolLearned (allow once the BGP speaker has given its table). While forbidden,
// Apply leaves such routes as they are and only adds what is missing: the desired
// state from that source may still be incomplete.
func (t *RouteTable) SetAllowDeletes(local, learned bool) {
	if (local && !t.allowLocal) || (learned && !t.allowLearned) {
		for p := range t.actual {
			t.dirty[p] = struct{}{}
		}
	}
	t.allowLocal, t.allowLearned = local, learned
}

// mayRemove reports whether the kernel route k may be deleted or replaced now.
func (t *RouteTable) mayRemove(k kroute) bool {
	if k.proto == routes.ProtocolLearned {
		return t.allowLearned
	}
	return t.allowLocal
}

// QueueResync makes the next Apply dump the kernel's table and compare everything.
func (t *RouteTable) QueueResync() { t.resync = true }

// OnLinkUpdate feeds a link event: a route waiting for the interface is retried, and
// routes the kernel dropped with an interface that went down or away are forgotten.
func (t *RouteTable) OnLinkUpdate(u netlink.LinkUpdate) {
	a := u.Attrs()
	if a == nil {
		return
	}
	name, idx := a.Name, a.Index
	if old, ok := t.linkNames[idx]; ok && old != name {
		delete(t.links, old)
		t.markIface(old)
	}
	delete(t.missing, name)
	if u.Header.Type == unix.RTM_DELLINK {
		if t.links[name] == idx {
			delete(t.links, name)
		}
		delete(t.linkNames, idx)
		t.forgetLink(idx)
	} else {
		t.links[name] = idx
		t.linkNames[idx] = name
		if a.Flags&net.FlagUp == 0 {
			t.forgetLink(idx) // the kernel flushes routes through an interface set down
		}
	}
	t.markIface(name)
}

// RouteEvent is a kernel event about one of Tabby's routes, kept small: felix queues
// one for each route it writes.
type RouteEvent struct {
	Deleted bool
	Prefix  netip.Prefix
	k       kroute
}

// NewRouteEvent keeps what OnRouteEvent needs of a route event; ok is false for an
// event about a route that is not Tabby's.
func NewRouteEvent(u netlink.RouteUpdate) (RouteEvent, bool) {
	if !routes.IsTabbys(u.Route) || (u.Type != unix.RTM_NEWROUTE && u.Type != unix.RTM_DELROUTE) {
		return RouteEvent{}, false
	}
	p, ok := routes.NetPrefix(u.Dst, u.Family)
	if !ok {
		return RouteEvent{}, false
	}
	return RouteEvent{Deleted: u.Type == unix.RTM_DELROUTE, Prefix: p, k: fromNetlink(&u.Route)}, true
}

// OnRouteUpdate is OnRouteEvent(NewRouteEvent(u)).
func (t *RouteTable) OnRouteUpdate(u netlink.RouteUpdate) {
	if e, ok := NewRouteEvent(u); ok {
		t.OnRouteEvent(e)
	}
}

// OnRouteEvent feeds a route event of the kernel: a deleted route of Tabby's is
// forgotten and its prefix compared again (a route deleted by hand comes back); one
// added that the cache does not know (a stray, or written by someone else) is
// remembered and compared. Events of our own writes find the cache already right.
func (t *RouteTable) OnRouteEvent(e RouteEvent) {
	p, k := e.Prefix, e.k
	have := t.actual[p]
	if e.Deleted {
		for i := range have {
			if have[i].prio == k.prio {
				t.setActual(p, append(have[:i:i], have[i+1:]...))
				t.dirty[p] = struct{}{}
				return
			}
		}
		return
	}
	for i := range have {
		if have[i].prio == k.prio {
			if krouteEqual(have[i], k) {
				return
			}
			next := append([]kroute(nil), have...)
			next[i] = k
			t.setActual(p, next)
			t.dirty[p] = struct{}{}
			return
		}
	}
	t.setActual(p, append(append([]kroute(nil), have...), k))
	t.dirty[p] = struct{}{}
}

// Programmed reports whether p's desired route is in the kernel, and if not, why.
func (t *RouteTable) Programmed(p netip.Prefix) (bool, string) {
	p = normPrefix(p)
	tgt, ok := t.desired[p]
	if !ok {
		return false, "no route wanted"
	}
	link := 0
	if tgt.Kind == KindLocal {
		link = t.links[tgt.Interface]
	}
	for _, k := range t.actual[p] {
		if matches(p, tgt, link, k) && (tgt.Kind != KindLocal || link != 0) {
			return true, ""
		}
	}
	if why := t.problems[p]; why != "" {
		return false, why
	}
	return false, "not programmed yet"
}

// Counts returns how many of Tabby's routes of each kind the kernel has.
func (t *RouteTable) Counts() map[Kind]int {
	c := map[Kind]int{KindLocal: 0, KindBlackhole: 0, KindLearned: 0}
	for _, ks := range t.actual {
		for _, k := range ks {
			c[k.kind()]++
		}
	}
	return c
}

// Apply compares every dirty prefix (everything after a resync) with the kernel and
// repairs the difference. What could not be done stays dirty for the next Apply.
func (t *RouteTable) Apply() ApplyResult {
	var res ApplyResult
	t.retryIn = 0
	if t.resync {
		if err := t.load(); err != nil {
			res.Failed, res.Err = 1, err
			return res
		}
		t.resync, res.Resynced = false, true
	}
	var errs []error
	for p := range t.dirty {
		st, err := t.reconcile(p)
		t.account(&res, &errs, p, st, err)
		if t.batch != nil && t.batch.full() {
			t.flushBatch(&res, &errs)
		}
	}
	if t.batch != nil {
		t.flushBatch(&res, &errs)
	}
	if res.Failed > len(errs) {
		errs = append(errs, fmt.Errorf("and %d more route errors", res.Failed-len(errs)))
	}
	res.Err = errors.Join(errs...)
	res.RetryIn = t.retryIn
	return res
}

// account counts one prefix's outcome; a prefix done or written is no longer dirty.
func (t *RouteTable) account(res *ApplyResult, errs *[]error, p netip.Prefix, st state, err error) {
	switch st {
	case stDone:
		delete(t.dirty, p)
	case stWritten:
		res.Written++
		delete(t.dirty, p)
	case stPending:
		res.Pending++
	case stFailed:
		res.Failed++
		if len(*errs) < maxErrors {
			*errs = append(*errs, err)
		}
	case stQueued: // counted when its batch is written
	}
}

// flushBatch writes the queued adds and accounts for each: added, or handled as a
// refused single add would be (an existing route resolved, an error recorded).
func (t *RouteTable) flushBatch(res *ApplyResult, errs *[]error) {
	adds, results, err := t.batch.flush()
	if err != nil {
		for _, a := range adds { // still dirty: the next Apply retries them
			t.problems[a.p] = err.Error()
			t.account(res, errs, a.p, stFailed, err)
		}
		return
	}
	slab := make([]kroute, len(adds))
	for i, a := range adds {
		var st state
		var err error
		switch e := results[i]; {
		case e == nil:
			t.putMainIn(a.p, a.k, slab[i:i+1:i+1]) // capped: a later append copies out
			delete(t.problems, a.p)
			st = stWritten
		case errors.Is(e, unix.EEXIST):
			st, err = t.resolveExists(a.p, a.tgt, a.link)
		default:
			nr, _ := build(a.p, a.tgt, a.link)
			st, err = t.writeFailed(a.p, a.tgt, &nr, e)
		}
		t.account(res, errs, a.p, st, err)
	}
}

// load dumps the interfaces and Tabby's routes, replacing the cache, and marks every
// desired or present prefix dirty.
func (t *RouteTable) load() error {
	links, err := t.h.LinkList()
	if err != nil {
		return fmt.Errorf("list interfaces: %w", err)
	}
	clear(t.links)
	clear(t.linkNames)
	clear(t.missing)
	for _, l := range links {
		a := l.Attrs()
		t.links[a.Name] = a.Index
		t.linkNames[a.Index] = a.Name
	}
	actual := make(map[netip.Prefix][]kroute, len(t.desired))
	err = routes.ListTabbys(t.h, func(r netlink.Route) {
		if p, ok := routes.NetPrefix(r.Dst, r.Family); ok {
			actual[p] = append(actual[p], fromNetlink(&r))
		}
	})
	if err != nil {
		return err
	}
	t.actual = actual
	clear(t.byLink)
	for p, ks := range actual {
		for _, k := range ks {
			if k.link != 0 && k.kind() == KindLocal {
				addIndex(t.byLink, k.link, p)
			}
		}
		t.dirty[p] = struct{}{}
	}
	for p := range t.desired {
		t.dirty[p] = struct{}{}
	}
	return nil
}

func (t *RouteTable) markIface(name string) {
	for p := range t.byIface[name] {
		t.dirty[p] = struct{}{}
	}
}

// forgetLink drops cached local routes through interface idx: the kernel removed them.
func (t *RouteTable) forgetLink(idx int) {
	for p := range t.byLink[idx] {
		var keep []kroute
		for _, k := range t.actual[p] {
			if k.link != idx || k.kind() != KindLocal {
				keep = append(keep, k)
			}
		}
		t.setActual(p, keep)
		t.dirty[p] = struct{}{}
	}
	delete(t.byLink, idx)
}

// setActual replaces the cached routes for p, keeping the by-interface index.
func (t *RouteTable) setActual(p netip.Prefix, ks []kroute) {
	for _, k := range t.actual[p] {
		if k.link != 0 {
			delIndex(t.byLink, k.link, p)
		}
	}
	if len(ks) == 0 {
		delete(t.actual, p)
		return
	}
	t.actual[p] = ks
	for _, k := range ks {
		if k.link != 0 && k.kind() == KindLocal {
			addIndex(t.byLink, k.link, p)
		}
	}
}

func addIndex[K comparable](m map[K]map[netip.Prefix]struct{}, k K, p netip.Prefix) {
	s := m[k]
	if s == nil {
		s = map[netip.Prefix]struct{}{}
		m[k] = s
	}
	s[p] = struct{}{}
}

func delIndex[K comparable](m map[K]map[netip.Prefix]struct{}, k K, p netip.Prefix) {
	if s := m[k]; s != nil {
		delete(s, p)
		if len(s) == 0 {
			delete(m, k)
		}
	}
}

func krouteEqual(a, b kroute) bool {
	if a.typ != b.typ || a.proto != b.proto || a.prio != b.prio || a.link != b.link || a.scope != b.scope ||
		len(a.nhs) != len(b.nhs) {
		return false
	}
	for i := range a.nhs {
		if a.nhs[i] != b.nhs[i] {
			return false
		}
	}
	return true
}

func normPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked()
}
