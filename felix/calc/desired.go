package calc

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	v1 "github.com/tabbynet/tabby/api/v1"
)

// DesiredState is the whole dataplane the node should have.
type DesiredState struct {
	// LocalRoutes maps each local workload address (/32 or /128) to its interface.
	LocalRoutes map[netip.Prefix]string `json:"localRoutes"`
	// Blackholes are this node's block CIDRs, sorted.
	Blackholes []netip.Prefix `json:"blackholes"`
	// Learned maps each learned prefix to its next hops (sorted, no duplicates; several
	// make an ECMP route).
	Learned map[netip.Prefix][]netip.Addr `json:"learned"`
	// Interfaces are the workload interfaces that need felix's sysctls, sorted.
	Interfaces []string `json:"interfaces"`
}

// Desired computes the whole desired state (for a full resync, tests and status).
func (g *Graph) Desired() DesiredState {
	d := DesiredState{
		LocalRoutes: make(map[netip.Prefix]string, len(g.owners)),
		Blackholes:  []netip.Prefix{},
		Learned:     make(map[netip.Prefix][]netip.Addr, len(g.learned)),
		Interfaces:  make([]string, 0, len(g.ifaceRefs)),
	}
	visit := func(p netip.Prefix) {
		r, ok := g.Route(p)
		if !ok {
			return
		}
		switch r.Kind {
		case KindLocal:
			d.LocalRoutes[p] = r.Interface
		case KindBlackhole:
			d.Blackholes = append(d.Blackholes, p)
		case KindLearned:
			d.Learned[p] = r.NextHops
		}
	}
	for p := range g.owners {
		visit(p)
	}
	for p := range g.blockRefs {
		if _, local := g.owners[p]; !local {
			visit(p)
		}
	}
	for p := range g.learned {
		if _, local := g.owners[p]; !local && g.blockRefs[p] == 0 {
			visit(p)
		}
	}
	sort.Slice(d.Blackholes, func(i, j int) bool { return comparePrefix(d.Blackholes[i], d.Blackholes[j]) < 0 })
	for name := range g.ifaceRefs {
		d.Interfaces = append(d.Interfaces, name)
	}
	sort.Strings(d.Interfaces)
	return d
}

// parseEndpoint keeps what felix needs of a WorkloadEndpoint, and what it had to skip.
func parseEndpoint(w *v1.WorkloadEndpoint) *Endpoint {
	ep := &Endpoint{Namespace: w.Namespace, Name: w.Name, Workload: w.Spec.Workload, Interface: w.Spec.InterfaceName,
		Created: w.CreationTimestamp.Time, Standby: w.Spec.Standby}
	if err := CheckInterfaceName(w.Spec.InterfaceName); err != nil {
		ep.Problems = append(ep.Problems, fmt.Sprintf("spec.interfaceName %q: %v", w.Spec.InterfaceName, err))
	} else {
		ep.InterfaceOK = true
	}
	for i, s := range w.Spec.IPNetworks {
		ip, err := hostAddr(s)
		if err != nil {
			ep.Problems = append(ep.Problems, fmt.Sprintf("spec.ipNetworks[%d] %q: %v", i, s, err))
			continue
		}
		if !slices.Contains(ep.IPs, ip) {
			ep.IPs = append(ep.IPs, ip)
		}
	}
	return ep
}

// hostAddr parses one workload address: a /32 or /128 (or a bare address).
func hostAddr(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Addr{}, fmt.Errorf("not an address: %w", err)
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("not an address: %w", err)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	p = unmapPrefix(p)
	a := p.Addr()
	if p.Bits() != a.BitLen() {
		return netip.Addr{}, fmt.Errorf("not a single address (/%d)", a.BitLen())
	}
	if a.Zone() != "" || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("not a usable workload address")
	}
	return a, nil
}

// CheckInterfaceName reports why name could not be a workload interface whose sysctls
// felix may write: the kernel's rules (1-15 characters, no '/', ':' or spaces, not "."
// or "..") plus the sysctl directories "all" and "default".
func CheckInterfaceName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty")
	case len(name) > v1.MaxInterfaceNameLen:
		return fmt.Errorf("longer than %d characters", v1.MaxInterfaceNameLen)
	case name == "." || name == ".." || name == "all" || name == "default":
		return fmt.Errorf("reserved name")
	}
	for _, c := range name {
		if c <= ' ' || c == '/' || c == ':' || c > '~' {
			return fmt.Errorf("invalid character %q", c)
		}
	}
	return nil
}

// normaliseLearned checks one learned route: the prefix masked, next hops of its
// family, sorted and unique. why is non-empty when the route is unusable.
func normaliseLearned(r LearnedRoute) (netip.Prefix, []netip.Addr, string) {
	if !r.Prefix.IsValid() {
		return netip.Prefix{}, nil, "invalid prefix"
	}
	p := unmapPrefix(r.Prefix).Masked()
	nhs := make([]netip.Addr, 0, len(r.NextHops))
	for _, nh := range r.NextHops {
		nh = nh.Unmap()
		if !nh.IsValid() || nh.IsUnspecified() || nh.Is4() != p.Addr().Is4() || nh.IsMulticast() {
			continue
		}
		nhs = append(nhs, nh.WithZone(""))
	}
	if len(nhs) == 0 {
		return netip.Prefix{}, nil, "no usable next hop"
	}
	return p, sortedUnique(nhs), ""
}

func sortedUnique(a []netip.Addr) []netip.Addr {
	slices.SortFunc(a, func(x, y netip.Addr) int { return x.Compare(y) })
	return slices.Compact(a)
}

// unmapPrefix turns ::ffff:a.b.c.d/n (n >= 96) into a.b.c.d/(n-96).
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
