package routes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// BlackholeRoute is the route that drops traffic to an unused address of one of this
// node's blocks: type blackhole, main table, marked ProtocolLocal. The workloads' /32
// routes inside the block are more specific and win.
func BlackholeRoute(block netip.Prefix) netlink.Route {
	block = block.Masked()
	return netlink.Route{
		Dst:      PrefixNet(block),
		Type:     unix.RTN_BLACKHOLE,
		Protocol: ProtocolLocal,
		Table:    unix.RT_TABLE_MAIN,
		Family:   family(block.Addr()),
	}
}

// LearnedRoute is a route learned over BGP: via one next hop, or a multipath (ECMP)
// route when there are several, main table, marked ProtocolLearned. The kernel resolves
// each next hop's interface; nextHops must all be of dst's family.
func LearnedRoute(dst netip.Prefix, nextHops []netip.Addr) netlink.Route {
	dst = dst.Masked()
	r := netlink.Route{
		Dst:      PrefixNet(dst),
		Protocol: ProtocolLearned,
		Table:    unix.RT_TABLE_MAIN,
		Family:   family(dst.Addr()),
	}
	switch len(nextHops) {
	case 0:
	case 1:
		r.Gw = net.IP(nextHops[0].Unmap().AsSlice())
	default:
		r.MultiPath = make([]*netlink.NexthopInfo, len(nextHops))
		for i, nh := range nextHops {
			r.MultiPath[i] = &netlink.NexthopInfo{Gw: net.IP(nh.Unmap().AsSlice())}
		}
	}
	return r
}

// IsTabbys reports whether r carries one of Tabby's protocol numbers and is in the main
// table: the only routes Tabby may change or delete.
func IsTabbys(r netlink.Route) bool {
	return (r.Protocol == ProtocolLocal || r.Protocol == ProtocolLearned) &&
		(r.Table == 0 || r.Table == unix.RT_TABLE_MAIN)
}

// ListTabbys calls f with every route of the main table marked ProtocolLocal or
// ProtocolLearned (IPv4 and IPv6), in one dump. A dump the kernel interrupted is
// retried a few times before it is an error wrapping netlink.ErrDumpInterrupted; f
// may then have seen part of the table twice.
func ListTabbys(h *netlink.Handle, f func(netlink.Route)) error {
	filter := &netlink.Route{Table: unix.RT_TABLE_MAIN}
	var err error
	for range 3 {
		var seen []netlink.Route
		err = h.RouteListFilteredIter(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_TABLE, func(r netlink.Route) bool {
			if IsTabbys(r) {
				seen = append(seen, r)
			}
			return true
		})
		if err == nil {
			for _, r := range seen {
				f(r)
			}
			return nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	return fmt.Errorf("list tabby routes: %w", err)
}

// PrefixNet converts a netip.Prefix to the *net.IPNet netlink wants (IPv4 as 4 bytes).
func PrefixNet(p netip.Prefix) *net.IPNet {
	a := p.Addr().Unmap()
	bits := a.BitLen()
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}

// NetPrefix converts a route destination back to a netip.Prefix (IPv4 unmapped). A nil
// destination (a default route) is 0.0.0.0/0 or ::/0 by family.
func NetPrefix(n *net.IPNet, fam int) (netip.Prefix, bool) {
	if n == nil {
		if fam == netlink.FAMILY_V6 {
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0), true
		}
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
	}
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	ones, bits := n.Mask.Size()
	if bits == 0 || (bits != a.BitLen() && !(bits == 128 && a.Is4() && ones >= 96)) {
		return netip.Prefix{}, false
	}
	if bits == 128 && a.Is4() {
		ones -= 96
	}
	return netip.PrefixFrom(a, ones).Masked(), true
}
