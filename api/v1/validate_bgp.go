package v1

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func validateConfigName(p *field.Path, name string) field.ErrorList {
	if name == "default" || (strings.HasPrefix(name, "node.") && len(name) > len("node.")) {
		return nil
	}
	return field.ErrorList{field.Invalid(p, name, `must be "default" or "node.<node name>"`)}
}

func validateBGPConfiguration(o *BGPConfiguration) field.ErrorList {
	p := field.NewPath("spec")
	errs := validateConfigName(field.NewPath("metadata", "name"), o.Name)
	errs = append(errs, validateASN(p.Child("asNumber"), o.Spec.ASNumber)...)
	for i, b := range o.Spec.ServiceClusterIPs {
		_, e := validateCIDR(p.Child("serviceClusterIPs").Index(i).Child("cidr"), b.CIDR, false)
		errs = append(errs, e...)
	}
	for i, b := range o.Spec.ServiceExternalIPs {
		_, e := validateCIDR(p.Child("serviceExternalIPs").Index(i).Child("cidr"), b.CIDR, false)
		errs = append(errs, e...)
	}
	for i, b := range o.Spec.ServiceLoadBalancerIPs {
		_, e := validateCIDR(p.Child("serviceLoadBalancerIPs").Index(i).Child("cidr"), b.CIDR, false)
		errs = append(errs, e...)
	}
	names := map[string]bool{}
	for i, c := range o.Spec.Communities {
		cp := p.Child("communities").Index(i)
		if c.Name == "" {
			errs = append(errs, field.Required(cp.Child("name"), ""))
		}
		if names[c.Name] {
			errs = append(errs, field.Duplicate(cp.Child("name"), c.Name))
		}
		names[c.Name] = true
		if msg := checkCommunity(c.Value); msg != "" {
			errs = append(errs, field.Invalid(cp.Child("value"), c.Value, msg))
		}
	}
	for i, pa := range o.Spec.PrefixAdvertisements {
		pp := p.Child("prefixAdvertisements").Index(i)
		_, e := validateCIDR(pp.Child("cidr"), pa.CIDR, false)
		errs = append(errs, e...)
		for j, c := range pa.Communities {
			if !names[c] && checkCommunity(c) != "" {
				errs = append(errs, field.Invalid(pp.Child("communities").Index(j), c, "neither a community defined in spec.communities nor a literal AA:NN or AA:NN:MM"))
			}
		}
	}
	errs = append(errs, validateSecretRef(p.Child("nodeMeshPassword"), o.Spec.NodeMeshPassword)...)
	errs = append(errs, validatePositiveDuration(p.Child("nodeMeshMaxRestartTime"), o.Spec.NodeMeshMaxRestartTime)...)
	return errs
}

// checkCommunity returns why s is not a standard (AA:NN, 16-bit parts) or large
// (AA:NN:MM, 32-bit parts) community, or "" when it is one.
func checkCommunity(s string) string {
	parts := strings.Split(s, ":")
	bits := 0
	switch len(parts) {
	case 2:
		bits = 16
	case 3:
		bits = 32
	default:
		return "must be AA:NN (standard) or AA:NN:MM (large)"
	}
	for _, part := range parts {
		if _, err := strconv.ParseUint(part, 10, bits); err != nil {
			return fmt.Sprintf("each part must be a %d-bit number", bits)
		}
	}
	return ""
}

// ParsePeerIP splits "ip", "ip:port" or "[ip]:port" into the address and the port (0
// when none was given).
func ParsePeerIP(s string) (netip.Addr, uint16, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a, 0, nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("not an IP address, ip:port or [ipv6]:port")
	}
	if ap.Port() == 0 {
		return netip.Addr{}, 0, fmt.Errorf("port must be 1-65535")
	}
	return ap.Addr(), ap.Port(), nil
}

func validateBGPPeer(o *BGPPeer) field.ErrorList {
	p := field.NewPath("spec")
	s := o.Spec
	var errs field.ErrorList
	if s.Node != "" && s.NodeSelector != "" {
		errs = append(errs, field.Invalid(p.Child("nodeSelector"), s.NodeSelector, "give node or nodeSelector, not both"))
	}
	errs = append(errs, validateSelector(p.Child("nodeSelector"), s.NodeSelector)...)
	errs = append(errs, validateSelector(p.Child("peerSelector"), s.PeerSelector)...)
	switch {
	case s.PeerIP != "" && s.PeerSelector != "":
		errs = append(errs, field.Invalid(p.Child("peerSelector"), s.PeerSelector, "give peerIP or peerSelector, not both"))
	case s.PeerIP == "" && s.PeerSelector == "":
		errs = append(errs, field.Required(p.Child("peerIP"), "give peerIP (an external router) or peerSelector (Tabby nodes)"))
	case s.PeerIP != "":
		if _, _, err := ParsePeerIP(s.PeerIP); err != nil {
			errs = append(errs, field.Invalid(p.Child("peerIP"), s.PeerIP, err.Error()))
		}
		if s.ASNumber == 0 {
			errs = append(errs, field.Required(p.Child("asNumber"), "the peer's AS number, 1-4294967295"))
		}
	}
	errs = append(errs, validateASN(p.Child("localASNumber"), s.LocalASNumber)...)
	errs = append(errs, validateSecretRef(p.Child("password"), s.Password)...)
	errs = append(errs, validatePositiveDuration(p.Child("keepaliveTime"), s.KeepaliveTime)...)
	errs = append(errs, validatePositiveDuration(p.Child("maxRestartTime"), s.MaxRestartTime)...)
	if s.HoldTime != nil {
		h := s.HoldTime.Duration
		switch {
		case h < 0 || (h > 0 && h < 3*time.Second):
			errs = append(errs, field.Invalid(p.Child("holdTime"), h.String(), "must be 0 (no keepalives) or at least 3s"))
		case s.KeepaliveTime != nil && h > 0 && s.KeepaliveTime.Duration >= h:
			errs = append(errs, field.Invalid(p.Child("keepaliveTime"), s.KeepaliveTime.Duration.String(), "must be shorter than holdTime "+h.String()))
		}
	}
	if s.TTLSecurity != nil && *s.TTLSecurity == 0 {
		errs = append(errs, field.Invalid(p.Child("ttlSecurity"), 0, "must be 1-255 hops"))
	}
	if s.MaxPrefixes != nil && *s.MaxPrefixes == 0 {
		errs = append(errs, field.Invalid(p.Child("maxPrefixes"), 0, "must be at least 1; leave it out for no limit"))
	}
	if s.NumAllowedLocalASNumbers != nil && (*s.NumAllowedLocalASNumbers < 0 || *s.NumAllowedLocalASNumbers > 10) {
		errs = append(errs, field.Invalid(p.Child("numAllowedLocalASNumbers"), *s.NumAllowedLocalASNumbers, "must be 0-10"))
	}
	switch s.NextHopMode {
	case "", NextHopAuto, NextHopSelf, NextHopKeep:
	default:
		errs = append(errs, field.NotSupported(p.Child("nextHopMode"), s.NextHopMode, []string{"Auto", "Self", "Keep"}))
	}
	switch s.SourceAddress {
	case "", "UseNodeIP", "None":
	default:
		errs = append(errs, field.NotSupported(p.Child("sourceAddress"), s.SourceAddress, []string{"UseNodeIP", "None"}))
	}
	for i, f := range s.Filters {
		for _, msg := range validation.IsDNS1123Subdomain(f) {
			errs = append(errs, field.Invalid(p.Child("filters").Index(i), f, msg))
		}
	}
	return errs
}

func validateBGPFilter(o *BGPFilter) field.ErrorList {
	p := field.NewPath("spec")
	var errs field.ErrorList
	errs = append(errs, validateFilterRules(p.Child("exportV4"), o.Spec.ExportV4, false)...)
	errs = append(errs, validateFilterRules(p.Child("importV4"), o.Spec.ImportV4, false)...)
	errs = append(errs, validateFilterRules(p.Child("exportV6"), o.Spec.ExportV6, true)...)
	errs = append(errs, validateFilterRules(p.Child("importV6"), o.Spec.ImportV6, true)...)
	return errs
}

func validateFilterRules(p *field.Path, rules []BGPFilterRule, v6 bool) field.ErrorList {
	var errs field.ErrorList
	maxLen := int32(32)
	if v6 {
		maxLen = 128
	}
	for i, r := range rules {
		rp := p.Index(i)
		switch r.Action {
		case BGPFilterAccept, BGPFilterReject:
		default:
			errs = append(errs, field.NotSupported(rp.Child("action"), r.Action, []string{"Accept", "Reject"}))
		}
		minLen := int32(0)
		if r.CIDR != "" {
			pfx, e := validateCIDR(rp.Child("cidr"), r.CIDR, false)
			errs = append(errs, e...)
			if len(e) == 0 && pfx.Addr().Is6() != v6 {
				errs = append(errs, field.Invalid(rp.Child("cidr"), r.CIDR, fmt.Sprintf("wrong address family for %s", p.String())))
			}
			minLen = int32(pfx.Bits())
			switch r.MatchOperator {
			case MatchEqual, MatchNotEqual, MatchIn, MatchNotIn:
			default:
				errs = append(errs, field.NotSupported(rp.Child("matchOperator"), r.MatchOperator, []string{"Equal", "NotEqual", "In", "NotIn"}))
			}
		} else if r.MatchOperator != "" {
			errs = append(errs, field.Required(rp.Child("cidr"), "matchOperator needs a cidr"))
		}
		if pl := r.PrefixLength; pl != nil {
			if pl.Min != nil && (*pl.Min < minLen || *pl.Min > maxLen) {
				errs = append(errs, field.Invalid(rp.Child("prefixLength", "min"), *pl.Min, fmt.Sprintf("must be %d-%d", minLen, maxLen)))
			}
			if pl.Max != nil && (*pl.Max < minLen || *pl.Max > maxLen) {
				errs = append(errs, field.Invalid(rp.Child("prefixLength", "max"), *pl.Max, fmt.Sprintf("must be %d-%d", minLen, maxLen)))
			}
			if pl.Min != nil && pl.Max != nil && *pl.Min > *pl.Max {
				errs = append(errs, field.Invalid(rp.Child("prefixLength"), fmt.Sprintf("min %d > max %d", *pl.Min, *pl.Max), "min must not exceed max"))
			}
		}
	}
	return errs
}

func validateNode(o *Node) field.ErrorList {
	p := field.NewPath("spec")
	var errs field.ErrorList
	if b := o.Spec.BGP; b != nil {
		bp := p.Child("bgp")
		if b.IPv4Address != "" {
			if pfx, err := netip.ParsePrefix(b.IPv4Address); err != nil || !pfx.Addr().Is4() {
				errs = append(errs, field.Invalid(bp.Child("ipv4Address"), b.IPv4Address, "must be an IPv4 address with its prefix length, e.g. 10.0.0.2/24"))
			}
		}
		if b.IPv6Address != "" {
			if pfx, err := netip.ParsePrefix(b.IPv6Address); err != nil || !pfx.Addr().Is6() {
				errs = append(errs, field.Invalid(bp.Child("ipv6Address"), b.IPv6Address, "must be an IPv6 address with its prefix length, e.g. fd00::2/64"))
			}
		}
		errs = append(errs, validateASN(bp.Child("asNumber"), b.ASNumber)...)
		if id := b.RouteReflectorClusterID; id != "" {
			if a, err := netip.ParseAddr(id); err != nil || !a.Is4() {
				errs = append(errs, field.Invalid(bp.Child("routeReflectorClusterID"), id, "must be a dotted-quad cluster ID, e.g. 224.0.0.1"))
			}
		}
	}
	for i, a := range o.Spec.Addresses {
		if _, err := netip.ParseAddr(strings.SplitN(a.Address, "/", 2)[0]); err != nil {
			errs = append(errs, field.Invalid(p.Child("addresses").Index(i).Child("address"), a.Address, "not an IP address"))
		}
	}
	return errs
}
