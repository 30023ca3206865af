package controller

import (
	"net/netip"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bgp"
)

// NamedFilter is a BGPFilter a session names.
type NamedFilter struct {
	Name string
	Spec v1.BGPFilterSpec
}

// ImportPolicy is what the session with peer takes: the rules of its BGPFilters
// (importV4, importV6), in order, first match wins; then any prefix inside an IPPool;
// nothing else. Tabby nodes (mesh, reflector) name no filters, so they take pool
// prefixes only.
func (d *Desired) ImportPolicy(peer netip.Addr) *bgp.PrefixPolicy {
	pol := &bgp.PrefixPolicy{Default: bgp.Reject}
	for _, f := range d.Filters[peer] {
		pol.Rules = appendRules(pol.Rules, f.Spec.ImportV4, false)
		pol.Rules = appendRules(pol.Rules, f.Spec.ImportV6, true)
	}
	for _, p := range d.Pools {
		pol.Rules = append(pol.Rules, bgp.PrefixRule{CIDR: p, Match: bgp.MatchIn, Action: bgp.Accept})
	}
	return pol
}

// ExportPolicy is what the session with peer sends: the rules of its BGPFilters
// (exportV4, exportV6) first; then nothing inside a pool with disableBGPExport; then
// any prefix inside an IPPool (our blocks and borrowed addresses, and the routes a
// route reflector passes on); nothing else (no transit of outside routes).
func (d *Desired) ExportPolicy(peer netip.Addr) *bgp.PrefixPolicy {
	pol := &bgp.PrefixPolicy{Default: bgp.Reject}
	for _, f := range d.Filters[peer] {
		pol.Rules = appendRules(pol.Rules, f.Spec.ExportV4, false)
		pol.Rules = appendRules(pol.Rules, f.Spec.ExportV6, true)
	}
	for _, p := range d.NoExport {
		pol.Rules = append(pol.Rules, bgp.PrefixRule{CIDR: p, Match: bgp.MatchIn, Action: bgp.Reject})
	}
	for _, p := range d.Pools {
		pol.Rules = append(pol.Rules, bgp.PrefixRule{CIDR: p, Match: bgp.MatchIn, Action: bgp.Accept})
	}
	return pol
}

// appendRules translates BGPFilter rules; one that names no CIDR matches the whole
// family (within its prefix lengths). Rules that do not parse are left out (the
// datastore never holds one: they are validated).
func appendRules(dst []bgp.PrefixRule, rules []v1.BGPFilterRule, v6 bool) []bgp.PrefixRule {
	for _, r := range rules {
		out := bgp.PrefixRule{Match: bgp.MatchIn, Action: bgp.Accept}
		if r.Action == v1.BGPFilterReject {
			out.Action = bgp.Reject
		}
		if r.CIDR == "" {
			out.CIDR = netip.MustParsePrefix("0.0.0.0/0")
			if v6 {
				out.CIDR = netip.MustParsePrefix("::/0")
			}
		} else {
			c, err := netip.ParsePrefix(r.CIDR)
			if err != nil {
				continue
			}
			out.CIDR = c.Masked()
			switch r.MatchOperator {
			case v1.MatchEqual:
				out.Match = bgp.MatchEqual
			case v1.MatchNotEqual:
				out.Match = bgp.MatchNotEqual
			case v1.MatchNotIn:
				out.Match = bgp.MatchNotIn
			}
		}
		if pl := r.PrefixLength; pl != nil {
			if pl.Min != nil {
				out.MinLen = uint8(*pl.Min)
			}
			switch {
			case pl.Max == nil:
			case *pl.Max > 0:
				out.MaxLen = uint8(*pl.Max)
			case out.Match == bgp.MatchIn: // max 0: only a /0, which the CIDR must be
				out.Match = bgp.MatchEqual
			case out.Match == bgp.MatchNotIn:
				out.Match = bgp.MatchNotEqual
			}
		}
		dst = append(dst, out)
	}
	return dst
}

// Accept says whether this node takes a route to prefix from peer from: never one of
// its own prefixes (its affine blocks and borrowed addresses; a /32 another node
// borrowed from one of its blocks is taken), else what the session's ImportPolicy
// says. A source that is no configured peer gets the default (pool prefixes only).
func (d *Desired) Accept(from netip.Addr, prefix netip.Prefix) bool {
	prefix = prefix.Masked()
	return !d.Own[prefix] && d.ImportPolicy(from).Allows(prefix)
}

// SpeakerGlobal is the speaker's Global.
func (g Global) SpeakerGlobal() bgp.Global {
	return bgp.Global{RouterID: g.RouterID, ASN: g.ASN, ListenPort: g.ListenPort}
}

// SpeakerPeer is the speaker's configuration of the session with p, with its import
// and export policies. Graceful restart is on with MaxRestartTime.
func (d *Desired) SpeakerPeer(p Peer) bgp.Peer {
	nh := bgp.NextHopAuto
	switch p.NextHopMode {
	case v1.NextHopSelf:
		nh = bgp.NextHopSelf
	case v1.NextHopKeep:
		nh = bgp.NextHopKeep
	}
	return bgp.Peer{
		Address: p.Address, Port: p.Port, LocalAddress: p.LocalAddress, ASN: p.ASN, LocalASN: p.LocalASN,
		Password: p.Password, KeepaliveTime: p.KeepaliveTime, HoldTime: p.HoldTime,
		TTLSecurity: p.TTLSecurity, MaxPrefixes: p.MaxPrefixes,
		GracefulRestart: p.MaxRestartTime > 0, RestartTime: p.MaxRestartTime,
		RouteReflectorClient: p.RRClient, RouteReflectorClusterID: p.RRClusterID,
		NextHop: nh, ThirdPartyNextHops: p.ThirdPartyNextHops, AllowOwnAS: int(p.AllowOwnAS), Type: string(p.Type),
		Import: d.ImportPolicy(p.Address), Export: d.ExportPolicy(p.Address),
	}
}
