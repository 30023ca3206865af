package dataplane

import (
	"net/netip"
	"slices"

	"github.com/tabbynet/tabby/felix/calc"
	"github.com/tabbynet/tabby/felix/routes"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Kind is what a route of Tabby's is for (felix/calc's RouteKind).
type Kind = calc.RouteKind

// Route kinds.
const (
	KindLocal     = calc.KindLocal     // /32 (/128) to a local workload, scope link, out of its interface
	KindBlackhole = calc.KindBlackhole // one of this node's blocks
	KindLearned   = calc.KindLearned   // learned over BGP, via next hops
)

// Target is one desired route; it is felix/calc's Route, so the calculation and the
// writer share one definition: Interface for KindLocal; NextHops (sorted, unique, of
// the prefix's family) for KindLearned.
type Target = calc.Route

// kroute is the part of a kernel route of ours that the reconciler compares.
type kroute struct {
	typ   int
	proto netlink.RouteProtocol
	prio  int
	link  int
	scope netlink.Scope
	nhs   []netip.Addr // sorted
}

func (k kroute) kind() Kind {
	switch {
	case k.proto == routes.ProtocolLearned:
		return KindLearned
	case k.typ == unix.RTN_BLACKHOLE:
		return KindBlackhole
	}
	return KindLocal
}

// defaultPrio is the metric the kernel gives a route added without one.
func defaultPrio(p netip.Prefix) int {
	if p.Addr().Is4() {
		return 0
	}
	return 1024
}

// fromNetlink keeps what the reconciler compares of a kernel route.
func fromNetlink(r *netlink.Route) kroute {
	k := kroute{typ: r.Type, proto: r.Protocol, prio: r.Priority, link: r.LinkIndex, scope: r.Scope}
	if k.typ == 0 {
		k.typ = unix.RTN_UNICAST
	}
	if r.Gw != nil {
		if a, ok := netip.AddrFromSlice(r.Gw); ok {
			k.nhs = append(k.nhs, a.Unmap())
		}
	}
	for _, nh := range r.MultiPath {
		if nh != nil && nh.Gw != nil {
			if a, ok := netip.AddrFromSlice(nh.Gw); ok {
				k.nhs = append(k.nhs, a.Unmap())
			}
		}
	}
	if len(k.nhs) > 1 {
		slices.SortFunc(k.nhs, func(a, b netip.Addr) int { return a.Compare(b) })
	}
	return k
}

// build makes the netlink route for a target (link is the interface index of a local
// route) and the kroute the kernel will report for it.
func build(p netip.Prefix, t Target, link int) (netlink.Route, kroute) {
	var r netlink.Route
	switch t.Kind {
	case KindLocal:
		r = routes.WorkloadRoute(p.Addr(), link)
	case KindBlackhole:
		r = routes.BlackholeRoute(p)
	default:
		r = routes.LearnedRoute(p, t.NextHops)
	}
	k := kroute{typ: unix.RTN_UNICAST, proto: r.Protocol, prio: defaultPrio(p), link: r.LinkIndex, scope: r.Scope,
		nhs: t.NextHops} // shared: a Target's next hops are never modified (calc makes them)
	if t.Kind == KindBlackhole {
		k.typ = unix.RTN_BLACKHOLE
	}
	return r, k
}

// matches reports whether the kernel route k is exactly what target t (through link)
// asks for.
func matches(p netip.Prefix, t Target, link int, k kroute) bool {
	if k.prio != defaultPrio(p) {
		return false
	}
	switch t.Kind {
	case KindLocal:
		return k.proto == routes.ProtocolLocal && k.typ == unix.RTN_UNICAST && k.link == link && len(k.nhs) == 0 &&
			(!p.Addr().Is4() || k.scope == netlink.SCOPE_LINK)
	case KindBlackhole:
		return k.proto == routes.ProtocolLocal && k.typ == unix.RTN_BLACKHOLE
	case KindLearned:
		return k.proto == routes.ProtocolLearned && k.typ == unix.RTN_UNICAST && slices.Equal(k.nhs, t.NextHops)
	}
	return false
}

// delRoute is the netlink route that deletes exactly k (its protocol and type given, so
// the kernel never deletes a route that is not ours; scope "nowhere" matches any scope,
// and netlink would otherwise send universe).
func delRoute(p netip.Prefix, k kroute) *netlink.Route {
	r := &netlink.Route{Dst: routes.PrefixNet(p), Table: unix.RT_TABLE_MAIN, Protocol: k.proto, Type: k.typ,
		Priority: k.prio, Scope: netlink.SCOPE_NOWHERE}
	if p.Addr().Is4() {
		r.Family = netlink.FAMILY_V4
	} else {
		r.Family = netlink.FAMILY_V6
	}
	return r
}
