package dataplane

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/tabbynet/tabby/felix/routes"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

type state uint8

const (
	stDone    state = iota // the kernel already matched
	stWritten              // the kernel matches after our writes
	stPending              // waiting (for an interface, or for deletes to be allowed)
	stFailed               // the kernel refused; retry later
	stQueued               // an add waiting in the batch (see Batcher)
)

// reconcile makes the kernel's routes for p match the desired route.
func (t *RouteTable) reconcile(p netip.Prefix) (state, error) {
	tgt, wanted := t.desired[p]
	have := t.actual[p]
	if !wanted {
		delete(t.problems, p)
		if len(have) == 0 {
			delete(t.firstSeen, p)
			delete(t.withdrawn, p)
			return stDone, nil
		}
		if _, gone := t.withdrawn[p]; !gone && t.inGrace(p, have) {
			return stPending, nil
		}
		return t.deleteRoutes(p, have)
	}
	delete(t.firstSeen, p)
	delete(t.withdrawn, p)
	link := 0
	if tgt.Kind == KindLocal {
		var why string
		if link, why = t.linkIndex(tgt.Interface); link == 0 {
			// Whatever route is there stays until the interface appears: a route out of
			// a live interface is better than none (a stale endpoint may be the one that
			// names the missing interface).
			t.problems[p] = why
			return stPending, nil
		}
	}
	prio := defaultPrio(p)
	var main *kroute
	var strays []kroute
	for i := range have {
		if have[i].prio == prio && main == nil {
			main = &have[i]
		} else {
			strays = append(strays, have[i])
		}
	}
	st := stDone
	if len(have) == 0 && t.batch != nil && t.batch.add(p, tgt, link) {
		return stQueued, nil
	}
	if main == nil || !matches(p, tgt, link, *main) {
		var err error
		if st, err = t.write(p, tgt, link, main); st != stWritten {
			return st, err
		}
	} else {
		delete(t.problems, p)
	}
	if len(strays) > 0 {
		if st2, err := t.deleteRoutes(p, strays); st2 != stWritten {
			return st2, err
		}
		st = stWritten
	}
	return st, nil
}

// write adds Tabby's route for p, or replaces old (Tabby's route at the same metric).
func (t *RouteTable) write(p netip.Prefix, tgt Target, link int, old *kroute) (state, error) {
	if old != nil && !t.mayRemove(*old) {
		t.problems[p] = "a different " + old.kind().String() + " route of Tabby's is in the kernel; kept until its source is in sync"
		return stPending, nil
	}
	nr, k := build(p, tgt, link)
	var err error
	if old != nil {
		err = t.h.RouteReplace(&nr)
	} else {
		err = t.h.RouteAdd(&nr)
		if errors.Is(err, unix.EEXIST) {
			return t.resolveExists(p, tgt, link)
		}
	}
	if err != nil {
		return t.writeFailed(p, tgt, &nr, err)
	}
	t.putMain(p, k)
	delete(t.problems, p)
	return stWritten, nil
}

// resolveExists handles an add the kernel refused because a route to p exists: our cache
// was stale (then replace ours), or another daemon's route is in the way (never touched).
func (t *RouteTable) resolveExists(p netip.Prefix, tgt Target, link int) (state, error) {
	all, err := t.h.RouteListFiltered(family(p), &netlink.Route{Dst: routes.PrefixNet(p), Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return stFailed, fmt.Errorf("list routes to %s: %w", p, err)
	}
	var ours []kroute
	foreign := -1
	for i := range all {
		k := fromNetlink(&all[i])
		switch {
		case routes.IsTabbys(all[i]):
			ours = append(ours, k)
		case k.prio == defaultPrio(p):
			foreign = int(all[i].Protocol)
		}
	}
	t.setActual(p, ours)
	for i := range ours {
		if ours[i].prio == defaultPrio(p) {
			if matches(p, tgt, link, ours[i]) {
				delete(t.problems, p)
				return stWritten, nil
			}
			return t.write(p, tgt, link, &ours[i])
		}
	}
	if foreign >= 0 {
		why := fmt.Sprintf("a route to %s with protocol %d (not Tabby's) is in the way", p, foreign)
		t.problems[p] = why
		return stFailed, errors.New(why)
	}
	return stFailed, fmt.Errorf("add route to %s: %w", p, unix.EEXIST)
}

// writeFailed classifies a refused write.
func (t *RouteTable) writeFailed(p netip.Prefix, tgt Target, nr *netlink.Route, err error) (state, error) {
	switch {
	case tgt.Kind == KindLocal && (errors.Is(err, unix.ENETDOWN) || errors.Is(err, unix.ENODEV)):
		if errors.Is(err, unix.ENODEV) {
			delete(t.links, tgt.Interface)
			t.missing[tgt.Interface] = true
			t.problems[p] = "interface " + tgt.Interface + " not found"
		} else {
			t.problems[p] = "interface " + tgt.Interface + " is down"
		}
		return stPending, nil
	case errors.Is(err, unix.ENETUNREACH) || errors.Is(err, unix.EHOSTUNREACH):
		t.problems[p] = "next hop not reachable"
	default:
		t.problems[p] = err.Error()
	}
	t.log.Debug("route write failed", zap.Stringer("route", nr), zap.Error(err))
	return stFailed, fmt.Errorf("write %s route to %s: %w", tgt.Kind, p, err)
}

// deleteRoutes removes the given routes of Tabby's to p, those it may remove now; it is
// pending while some must stay.
func (t *RouteTable) deleteRoutes(p netip.Prefix, ks []kroute) (state, error) {
	held := false
	for _, k := range ks {
		if !t.mayRemove(k) {
			held = true
			continue
		}
		if err := t.h.RouteDel(delRoute(p, k)); err != nil && !errors.Is(err, unix.ESRCH) {
			return stFailed, fmt.Errorf("delete %s route to %s: %w", k.kind(), p, err)
		}
		t.dropActual(p, k)
	}
	if held {
		return stPending, nil
	}
	delete(t.firstSeen, p)
	return stWritten, nil
}

// putMain records k as p's route at the default metric.
func (t *RouteTable) putMain(p netip.Prefix, k kroute) { t.putMainIn(p, k, nil) }

// putMainIn is putMain with room for a prefix that had no route: a one-element slice
// of a batch's slab (one allocation for the batch), or nil to allocate one.
func (t *RouteTable) putMainIn(p netip.Prefix, k kroute, room []kroute) {
	have := t.actual[p]
	if len(have) == 0 { // the common case, kept cheap for large batches
		if room == nil {
			room = make([]kroute, 1)
		}
		room[0] = k
		t.actual[p] = room
		if k.link != 0 && k.kind() == KindLocal {
			addIndex(t.byLink, k.link, p)
		}
		return
	}
	next := make([]kroute, 0, len(have)+1)
	next = append(next, k)
	for _, h := range have {
		if h.prio != k.prio {
			next = append(next, h)
		}
	}
	t.setActual(p, next)
}

func (t *RouteTable) dropActual(p netip.Prefix, k kroute) {
	have := t.actual[p]
	next := make([]kroute, 0, len(have))
	for _, h := range have {
		if !krouteEqual(h, k) {
			next = append(next, h)
		}
	}
	t.setActual(p, next)
}

// linkIndex resolves an interface name from the cache, asking the kernel once for a
// name the cache does not know (until the next link change).
func (t *RouteTable) linkIndex(name string) (int, string) {
	if idx, ok := t.links[name]; ok {
		return idx, ""
	}
	why := "interface " + name + " not found"
	if t.missing[name] {
		return 0, why
	}
	l, err := t.h.LinkByName(name)
	if err != nil {
		t.missing[name] = true
		return 0, why
	}
	a := l.Attrs()
	t.links[name], t.linkNames[a.Index] = a.Index, name
	return a.Index, ""
}

func family(p netip.Prefix) int {
	if p.Addr().Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// inGrace reports whether the unwanted routes to p include a local workload route still
// in its grace period (noting when to look again).
func (t *RouteTable) inGrace(p netip.Prefix, have []kroute) bool {
	if t.grace <= 0 {
		return false
	}
	local := false
	for _, k := range have {
		local = local || k.kind() == KindLocal
	}
	if !local {
		return false
	}
	first, ok := t.firstSeen[p]
	if !ok {
		first = time.Now()
		t.firstSeen[p] = first
	}
	left := t.grace - time.Since(first)
	if left <= 0 {
		return false
	}
	if t.retryIn == 0 || left < t.retryIn {
		t.retryIn = left
	}
	return true
}
