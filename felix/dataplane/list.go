package dataplane

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/tabbynet/tabby/felix/routes"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// RouteInfo describes one of Tabby's routes in the kernel.
type RouteInfo struct {
	Dst netip.Prefix
	// Dev is the interface (several, comma-separated, for a multipath route over
	// several); "" for a blackhole.
	Dev      string
	Via      []netip.Addr
	Protocol int
	Kind     Kind
}

// ListRoutes dumps Tabby's routes of the main table through h, sorted by kind and
// destination. It keeps no state and may run beside a RouteTable on the same handle.
func ListRoutes(h *netlink.Handle) ([]RouteInfo, error) {
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	names := make(map[int]string, len(links))
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out []RouteInfo
	err = routes.ListTabbys(h, func(r netlink.Route) {
		p, ok := routes.NetPrefix(r.Dst, r.Family)
		if !ok {
			return
		}
		k := fromNetlink(&r)
		ri := RouteInfo{Dst: p, Via: k.nhs, Protocol: int(r.Protocol), Kind: k.kind()}
		var devs []string
		if r.LinkIndex != 0 {
			devs = append(devs, names[r.LinkIndex])
		}
		for _, nh := range r.MultiPath {
			if nh != nil && nh.LinkIndex != 0 && !slices.Contains(devs, names[nh.LinkIndex]) {
				devs = append(devs, names[nh.LinkIndex])
			}
		}
		if k.typ != unix.RTN_BLACKHOLE { // a blackhole may report the loopback
			ri.Dev = strings.Join(devs, ",")
		}
		out = append(out, ri)
	})
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Kind != out[j].Kind {
			return out[i].Kind < out[j].Kind
		}
		if c := out[i].Dst.Addr().Compare(out[j].Dst.Addr()); c != 0 {
			return c < 0
		}
		return out[i].Dst.Bits() < out[j].Dst.Bits()
	})
	return out, nil
}
