package router

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel route protocols.
const (
	// protoOriginate marks the blackhole routes FRR redistributes for Originate.
	protoOriginate netlink.RouteProtocol = 75
	// metricOriginate is their metric, which FRR's redistribution route map matches
	// (so that no other kernel route of the namespace is advertised).
	metricOriginate                       = 7575
	protoFRR        netlink.RouteProtocol = 186 // RTPROT_BGP, FRR's BGP routes
	protoBIRD       netlink.RouteProtocol = unix.RTPROT_BIRD
)

// netlink is a netlink handle inside the router's namespace.
func (r *Router) netlink() (*netlink.Handle, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nl != nil {
		return r.nl, nil
	}
	ns, err := netns.GetFromName(r.cfg.Netns)
	if err != nil {
		return nil, fmt.Errorf("open network namespace %s: %w", r.cfg.Netns, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", r.cfg.Netns, err)
	}
	r.nl = h
	return h, nil
}

// netnsGone reports whether the caller has deleted the router's namespace already.
func (r *Router) netnsGone() bool {
	_, err := os.Stat(filepath.Join("/run/netns", r.cfg.Netns))
	return errors.Is(err, os.ErrNotExist)
}

func blackhole(p netip.Prefix) *netlink.Route {
	return &netlink.Route{
		Dst:      &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)},
		Type:     unix.RTN_BLACKHOLE,
		Protocol: protoOriginate,
		Priority: metricOriginate,
		Table:    unix.RT_TABLE_MAIN,
		Family:   netlink.FAMILY_V4,
	}
}

// addBlackholes adds (or replaces) the originated prefixes' blackhole routes.
func addBlackholes(h *netlink.Handle, ps []netip.Prefix) error {
	for _, p := range ps {
		if err := h.RouteReplace(blackhole(p)); err != nil {
			return fmt.Errorf("add blackhole route %v: %w", p, err)
		}
	}
	return nil
}

// delBlackholes removes originated prefixes' blackhole routes.
func delBlackholes(h *netlink.Handle, ps []netip.Prefix) error {
	for _, p := range ps {
		if err := h.RouteDel(blackhole(p)); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("delete blackhole route %v: %w", p, err)
		}
	}
	return nil
}

// countProto counts the IPv4 routes of protocol proto in the main table. A dump that
// the kernel interrupts because the table changed is retried; the count of the last of
// a few interrupted dumps is returned as is (near enough while routes stream in).
func countProto(h *netlink.Handle, proto netlink.RouteProtocol) (int, error) {
	var n int
	for range 3 {
		n = 0
		err := h.RouteListFilteredIter(netlink.FAMILY_V4, &netlink.Route{Protocol: proto, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE, func(netlink.Route) bool { n++; return true })
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return 0, fmt.Errorf("list routes: %w", err)
		}
	}
	return n, nil
}

// flushProto removes the IPv4 routes of protocol proto from the main table.
func flushProto(h *netlink.Handle, proto netlink.RouteProtocol) error {
	for range 5 {
		var rs []netlink.Route
		err := h.RouteListFilteredIter(netlink.FAMILY_V4, &netlink.Route{Protocol: proto, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE, func(r netlink.Route) bool { rs = append(rs, r); return true })
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return fmt.Errorf("list routes of protocol %d: %w", proto, err)
		}
		if len(rs) == 0 {
			return nil
		}
		for _, r := range rs {
			// Only what identifies the route: with its next hops the kernel would not
			// match a route that uses a nexthop object (zebra's).
			del := &netlink.Route{Dst: r.Dst, Table: r.Table, Priority: r.Priority, Protocol: r.Protocol, Family: netlink.FAMILY_V4}
			if err := h.RouteDel(del); err != nil && !errors.Is(err, unix.ESRCH) {
				return fmt.Errorf("delete route %v: %w", r.Dst, err)
			}
		}
	}
	return fmt.Errorf("routes of protocol %d keep coming back", proto)
}
