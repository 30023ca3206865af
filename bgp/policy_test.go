package bgp

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/api"
)

func TestPrefixPolicyAllows(t *testing.T) {
	pol := &PrefixPolicy{Rules: []PrefixRule{
		{CIDR: netip.MustParsePrefix("10.60.7.0/26"), Match: MatchEqual, Action: Reject},
		{CIDR: netip.MustParsePrefix("10.60.0.0/16"), MinLen: 26, MaxLen: 28, Action: Accept},
		{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Match: MatchNotIn, Action: Accept},
	}, Default: Reject}
	for _, tc := range []struct {
		prefix string
		want   bool
	}{
		{"10.60.7.0/26", false},    // rule 0
		{"10.60.7.0/27", true},     // rule 1
		{"10.60.1.0/26", true},     // rule 1
		{"10.60.1.0/24", false},    // too short for rule 1, in 10/8: default
		{"10.60.1.0/29", false},    // too long for rule 1
		{"192.168.0.0/24", true},   // rule 2: not in 10/8
		{"fd00::/64", false},       // no IPv4 rule matches IPv6, not even NotIn
		{"10.61.0.0/26", false},    // default
		{"10.60.7.64/26", true},    // rule 1
		{"10.60.7.0/25", false},    // /25 is under rule 1's minimum
		{"10.60.255.192/26", true}, // rule 1
	} {
		if got := pol.Allows(netip.MustParsePrefix(tc.prefix)); got != tc.want {
			t.Errorf("Allows(%s) = %v, want %v", tc.prefix, got, tc.want)
		}
	}
	var none *PrefixPolicy
	if !none.Allows(netip.MustParsePrefix("10.0.0.0/8")) {
		t.Errorf("a nil policy rejected a prefix")
	}
}

func TestPeerValidate(t *testing.T) {
	ok := Peer{Address: netip.MustParseAddr("192.168.9.1"), ASN: 64512}
	if err := ok.validate(); err != nil {
		t.Fatalf("valid peer: %v", err)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Peer)
		want string
	}{
		{"no address", func(p *Peer) { p.Address = netip.Addr{} }, "address"},
		{"no as", func(p *Peer) { p.ASN = 0 }, "as number"},
		{"short hold", func(p *Peer) { p.HoldTime = time.Second }, "hold time"},
		{"gtsm and multihop", func(p *Peer) { p.TTLSecurity, p.MultihopTTL = 1, 2 }, "exclusive"},
		{"cluster id", func(p *Peer) { p.RouteReflectorClusterID = "cluster-1" }, "cluster id"},
		{"next hop", func(p *Peer) { p.NextHop = "Other" }, "next hop"},
		{"local address family", func(p *Peer) { p.LocalAddress = netip.MustParseAddr("fd00::1") }, "family"},
		{"allow own as", func(p *Peer) { p.AllowOwnAS = 11 }, "allow own as"},
		{"bad rule", func(p *Peer) {
			p.Import = &PrefixPolicy{Rules: []PrefixRule{{CIDR: netip.MustParsePrefix("10.0.0.0/24"), MaxLen: 16}}}
		}, "rule 0"},
		{"bad action", func(p *Peer) { p.Export = &PrefixPolicy{Default: "Drop"} }, "default action"},
	} {
		p := ok
		tc.mod(&p)
		err := p.validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: validate() = %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}

func TestParseCommunity(t *testing.T) {
	for _, s := range []string{"64512:100", "0:0", "65535:65535", "64512:1:2", "4294967295:0:1", "no-export", "NO-ADVERTISE"} {
		if err := ParseCommunity(s); err != nil {
			t.Errorf("ParseCommunity(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "64512", "65536:1", "1:2:3:4", "a:b", "4294967296:0:0"} {
		if err := ParseCommunity(s); err == nil {
			t.Errorf("ParseCommunity(%q) accepted it", s)
		}
	}
	std, large, err := parseCommunities([]string{"64512:100", "64512:1:2", "no-export"})
	if err != nil || len(std) != 2 || std[0] != 64512<<16|100 || std[1] != 0xFFFFFF01 || len(large) != 1 {
		t.Fatalf("parseCommunities = %v %v %v", std, large, err)
	}
}

func TestBuildPolicies(t *testing.T) {
	a := netip.MustParseAddr("10.0.0.1")
	b := netip.MustParseAddr("10.0.0.2")
	req := buildPolicies(map[netip.Addr]*Peer{
		a: {Address: a, NextHop: NextHopSelf, Export: &PrefixPolicy{
			Rules: []PrefixRule{{CIDR: netip.MustParsePrefix("10.60.0.0/16"), Match: MatchNotIn, Action: Reject}}}},
		b: {Address: b}, // no filters: nothing
	})
	if len(req.Policies) != 2 || req.Policies[0].Name != importPolicyName || req.Policies[1].Name != exportPolicyName {
		t.Fatalf("policies: %v", req.Policies)
	}
	if n := len(req.Policies[0].Statements); n != 0 {
		t.Errorf("import statements: %d, want 0", n)
	}
	exp := req.Policies[1].Statements
	if len(exp) != 2 || exp[0].Actions.Nexthop == nil || !exp[0].Actions.Nexthop.Self ||
		exp[1].Conditions.PrefixSet.Type != api.MatchSet_TYPE_INVERT ||
		exp[1].Actions.RouteAction != api.RouteAction_ROUTE_ACTION_REJECT {
		t.Errorf("export statements: %v", exp)
	}
	if len(req.DefinedSets) != 2 || req.DefinedSets[0].List[0] != "10.0.0.1/32" ||
		req.DefinedSets[1].Prefixes[0].MaskLengthMin != 16 || req.DefinedSets[1].Prefixes[0].MaskLengthMax != 32 {
		t.Errorf("defined sets: %v", req.DefinedSets)
	}
}
