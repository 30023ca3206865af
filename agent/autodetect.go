package agent

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strings"
)

// Interface is what autodetection needs to know of a network interface.
type Interface struct {
	Name  string
	Up    bool
	Addrs []netip.Prefix
}

// SkippedInterfaces matches the interfaces first-found and can-reach never pick:
// workload veths and taps, bridges and tunnels of container runtimes and hypervisors,
// and loopback.
var SkippedInterfaces = regexp.MustCompile(`^(lo|cali.*|tap.*|veth.*|vnet.*|docker.*|cbr.*|cni.*|virbr.*|lxcbr.*|dummy.*|kube-ipvs.*|flannel.*|tunl.*|vxlan.*|wg.*|nodelocaldns.*)$`)

// Method is a parsed --ip-autodetect value.
type Method struct {
	// Kind is first-found, interface, skip-interface, can-reach or cidr.
	Kind  string
	Re    *regexp.Regexp // interface, skip-interface
	Dest  string         // can-reach
	CIDRs []netip.Prefix // cidr
	raw   string
}

func (m Method) String() string { return m.raw }

// ParseMethod reads an autodetection method: first-found, interface=REGEX,
// skip-interface=REGEX, can-reach=DEST (an address or a host name) or
// cidr=CIDR[,CIDR...].
func ParseMethod(s string) (Method, error) {
	m := Method{raw: s}
	kind, arg, hasArg := strings.Cut(s, "=")
	m.Kind = kind
	switch {
	case s == "first-found" || s == "":
		m.Kind, m.raw = "first-found", "first-found"
		return m, nil
	case kind == "interface" || kind == "skip-interface":
		if !hasArg || arg == "" {
			return m, fmt.Errorf("%q: give a regular expression after %s=", s, kind)
		}
		re, err := regexp.Compile("^(?:" + arg + ")$")
		if err != nil {
			return m, fmt.Errorf("%q: %w", s, err)
		}
		m.Re = re
		return m, nil
	case kind == "can-reach":
		if !hasArg || arg == "" {
			return m, fmt.Errorf("%q: give an address or host name after can-reach=", s)
		}
		m.Dest = arg
		return m, nil
	case kind == "cidr":
		for _, c := range strings.Split(arg, ",") {
			p, err := netip.ParsePrefix(strings.TrimSpace(c))
			if err != nil || !p.Addr().Is4() {
				return m, fmt.Errorf("%q: %q is not an IPv4 CIDR", s, c)
			}
			m.CIDRs = append(m.CIDRs, p.Masked())
		}
		return m, nil
	}
	return m, fmt.Errorf("%q is not first-found, interface=REGEX, skip-interface=REGEX, can-reach=DEST or cidr=CIDR", s)
}

// Detected is the node address autodetection found.
type Detected struct {
	Prefix    netip.Prefix
	Interface string
	Method    string
}

// Detector finds the node's IPv4 address. Its functions are the system's by default
// (see SystemDetector); tests give fakes.
type Detector struct {
	// Interfaces lists the interfaces in kernel order with their addresses.
	Interfaces func() ([]Interface, error)
	// SourceFor returns the local address the kernel would send from to dest.
	SourceFor func(ctx context.Context, dest string) (netip.Addr, error)
}

// SystemDetector reads the interfaces of the current network namespace.
func SystemDetector() Detector {
	return Detector{Interfaces: SystemInterfaces, SourceFor: systemSourceFor}
}

// Detect applies the method and returns the first match.
func (d Detector) Detect(ctx context.Context, m Method) (Detected, error) {
	ifaces, err := d.Interfaces()
	if err != nil {
		return Detected{}, fmt.Errorf("list interfaces: %w", err)
	}
	res := Detected{Method: m.String()}
	pick := func(match func(Interface) bool, addrOK func(netip.Prefix) bool) bool {
		for _, ifc := range ifaces {
			if !ifc.Up || !match(ifc) {
				continue
			}
			for _, p := range ifc.Addrs {
				if usable(p) && addrOK(p) {
					res.Prefix, res.Interface = p, ifc.Name
					return true
				}
			}
		}
		return false
	}
	anyAddr := func(netip.Prefix) bool { return true }
	notSkipped := func(i Interface) bool { return !SkippedInterfaces.MatchString(i.Name) }
	var found bool
	switch m.Kind {
	case "first-found":
		found = pick(notSkipped, anyAddr)
	case "interface":
		found = pick(func(i Interface) bool { return m.Re.MatchString(i.Name) }, anyAddr)
	case "skip-interface":
		found = pick(func(i Interface) bool { return notSkipped(i) && !m.Re.MatchString(i.Name) }, anyAddr)
	case "cidr":
		found = pick(notSkipped, func(p netip.Prefix) bool {
			for _, c := range m.CIDRs {
				if c.Contains(p.Addr()) {
					return true
				}
			}
			return false
		})
	case "can-reach":
		src, err := d.SourceFor(ctx, m.Dest)
		if err != nil {
			return res, fmt.Errorf("%s: %w", m, err)
		}
		found = pick(func(Interface) bool { return true }, func(p netip.Prefix) bool { return p.Addr() == src })
		if !found {
			return res, fmt.Errorf("%s: the source address %s is on no interface that is up", m, src)
		}
	default:
		return res, fmt.Errorf("unknown autodetection method %q", m)
	}
	if !found {
		return res, fmt.Errorf("%s: no interface that is up has a global IPv4 address that matches", m)
	}
	return res, nil
}

// usable is a global-scope IPv4 unicast address: not loopback, link-local or multicast.
func usable(p netip.Prefix) bool {
	a := p.Addr()
	return a.Is4() && a.IsGlobalUnicast()
}

// SystemInterfaces lists the interfaces of the current network namespace.
func SystemInterfaces() ([]Interface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]Interface, 0, len(ifs))
	for _, ifc := range ifs {
		i := Interface{Name: ifc.Name, Up: ifc.Flags&net.FlagUp != 0}
		addrs, err := ifc.Addrs()
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", ifc.Name, err)
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ones, _ := ipn.Mask.Size()
			if ip.Is4In6() {
				ip = ip.Unmap()
				if ones >= 96 {
					ones -= 96
				}
			}
			i.Addrs = append(i.Addrs, netip.PrefixFrom(ip, ones))
		}
		out = append(out, i)
	}
	return out, nil
}

// systemSourceFor asks the kernel which address it would send from to dest, by
// "connecting" a UDP socket (no packet is sent).
func systemSourceFor(ctx context.Context, dest string) (netip.Addr, error) {
	host := dest
	if a, err := netip.ParseAddr(dest); err != nil {
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", dest)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("resolve %s: %w", dest, err)
		}
		if len(addrs) == 0 {
			return netip.Addr{}, fmt.Errorf("resolve %s: no IPv4 address", dest)
		}
		host = addrs[0].String()
	} else if !a.Is4() {
		return netip.Addr{}, fmt.Errorf("%s is not an IPv4 address", dest)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp4", net.JoinHostPort(host, "9"))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("route to %s: %w", dest, err)
	}
	defer c.Close()
	ap, err := netip.ParseAddrPort(c.LocalAddr().String())
	if err != nil {
		return netip.Addr{}, fmt.Errorf("local address towards %s: %w", dest, err)
	}
	return ap.Addr().Unmap(), nil
}
