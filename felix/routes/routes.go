package routes

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Route protocol numbers (rtm_protocol) that mark the routes Tabby writes, so Tabby
// recognises its own routes and never touches another daemon's. They avoid the numbers
// the kernel and well-known routing daemons use (2 kernel, 3 boot, 4 static, 11 zebra,
// 12 bird, 16 dhcp, 17 mrouted, 18 keepalived, 42 babel, 80 Calico's felix, 99 openr,
// 186-192 FRR's bgp, isis, ospf, rip, eigrp ...). FelixConfiguration's
// routeTableProtocol may override ProtocolLocal in a later change.
const (
	// ProtocolLocal marks a /32 route to a workload on this node.
	ProtocolLocal netlink.RouteProtocol = 116
	// ProtocolLearned marks a route learned from a BGP peer.
	ProtocolLearned netlink.RouteProtocol = 117
)

// WorkloadRoute is the route to a local workload: ip/32 (or /128), scope link, out of
// the workload's host-side interface, in the main table, marked ProtocolLocal.
func WorkloadRoute(ip netip.Addr, linkIndex int) netlink.Route {
	ip = ip.Unmap()
	return netlink.Route{
		LinkIndex: linkIndex,
		Dst:       hostNet(ip),
		Scope:     netlink.SCOPE_LINK,
		Protocol:  ProtocolLocal,
		Table:     unix.RT_TABLE_MAIN,
		Family:    family(ip),
	}
}

// AddWorkload writes (or replaces) the route to a local workload's address through the
// interface with index linkIndex.
func AddWorkload(h *netlink.Handle, ip netip.Addr, linkIndex int) error {
	if !ip.IsValid() {
		return errors.New("add workload route: no address")
	}
	r := WorkloadRoute(ip, linkIndex)
	if err := h.RouteReplace(&r); err != nil {
		return fmt.Errorf("add workload route %s dev #%d: %w", r.Dst, linkIndex, err)
	}
	return nil
}

// DelWorkload deletes Tabby's local route to ip, if there is one. With linkIndex > 0
// only a route through that interface is deleted (the address may have moved to another
// workload). A route that is not there, or not Tabby's, is left alone and is no error.
func DelWorkload(h *netlink.Handle, ip netip.Addr, linkIndex int) error {
	rs, err := Lookup(h, ip)
	if err != nil {
		return err
	}
	for i := range rs {
		r := rs[i]
		if linkIndex > 0 && r.LinkIndex != linkIndex {
			continue
		}
		if err := h.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("delete workload route %s dev #%d: %w", r.Dst, r.LinkIndex, err)
		}
	}
	return nil
}

// Lookup returns Tabby's local routes to exactly ip/32 (or /128) in the main table.
func Lookup(h *netlink.Handle, ip netip.Addr) ([]netlink.Route, error) {
	ip = ip.Unmap()
	filter := &netlink.Route{Dst: hostNet(ip), Protocol: ProtocolLocal, Table: unix.RT_TABLE_MAIN}
	rs, err := h.RouteListFiltered(family(ip), filter,
		netlink.RT_FILTER_DST|netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list routes to %s: %w", ip, err)
	}
	return rs, nil
}

// ListLocal returns every route marked ProtocolLocal in the main table, IPv4 and IPv6.
func ListLocal(h *netlink.Handle) ([]netlink.Route, error) {
	filter := &netlink.Route{Protocol: ProtocolLocal, Table: unix.RT_TABLE_MAIN}
	rs, err := h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return nil, fmt.Errorf("list local workload routes: %w", err)
	}
	return rs, nil
}

// IsWorkloadRoute reports whether r is Tabby's local route to ip through linkIndex.
func IsWorkloadRoute(r netlink.Route, ip netip.Addr, linkIndex int) bool {
	want := WorkloadRoute(ip, linkIndex)
	return r.Protocol == want.Protocol && r.Scope == want.Scope && r.LinkIndex == linkIndex &&
		r.Dst != nil && r.Dst.String() == want.Dst.String() && (r.Table == 0 || r.Table == want.Table)
}

func hostNet(ip netip.Addr) *net.IPNet {
	bits := ip.BitLen()
	return &net.IPNet{IP: net.IP(ip.AsSlice()), Mask: net.CIDRMask(bits, bits)}
}

func family(ip netip.Addr) int {
	if ip.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}
