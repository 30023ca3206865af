package controller

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Builders of test objects.

func mkNode(name, ip string, labels map[string]string, mut ...func(*v1.NodeBGPSpec)) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if ip != "" || len(mut) > 0 {
		n.Spec.BGP = &v1.NodeBGPSpec{IPv4Address: ip}
		for _, m := range mut {
			m(n.Spec.BGP)
		}
	}
	return n
}

func rr(id string) func(*v1.NodeBGPSpec) {
	return func(b *v1.NodeBGPSpec) { b.RouteReflectorClusterID = id }
}

func asn(n uint32) *v1.ASNumber { a := v1.ASNumber(n); return &a }

func mkPool(name, cidr string, noExport bool) *v1.IPPool {
	p := &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1.IPPoolSpec{CIDR: cidr, DisableBGPExport: noExport}}
	v1.Default(p)
	return p
}

// mkBlock is a block affine to node ("" for none) whose ordinals in borrowedBy are
// held by the named nodes.
func mkBlock(cidr, node string, borrowedBy map[int]string) *v1.IPAMBlock {
	pfx := netip.MustParsePrefix(cidr)
	size := 1 << (32 - pfx.Bits())
	b := &v1.IPAMBlock{ObjectMeta: metav1.ObjectMeta{Name: strings.NewReplacer(".", "-", "/", "-").Replace(cidr)},
		Spec: v1.IPAMBlockSpec{CIDR: cidr, Allocations: make([]int, size)}}
	if node != "" {
		aff := "host:" + node
		b.Spec.Affinity = &aff
	}
	for i := range b.Spec.Allocations {
		b.Spec.Allocations[i] = -1
	}
	for ord, holder := range borrowedBy {
		b.Spec.Allocations[ord] = len(b.Spec.Attributes)
		b.Spec.Attributes = append(b.Spec.Attributes, v1.AllocationAttribute{Secondary: map[string]string{"node": holder}})
	}
	return b
}

func mkPeer(name string, spec v1.BGPPeerSpec) *v1.BGPPeer {
	p := &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
	v1.Default(p)
	return p
}

func mkConfig(name string, spec v1.BGPConfigurationSpec) *v1.BGPConfiguration {
	return &v1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

func mkSecret(name string, data map[string]string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: DefaultSecretNamespace}, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

func secretRef(name, key string) *v1.BGPPassword {
	return &v1.BGPPassword{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: name}, Key: key}}
}

func dur(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }
func ptr[T any](v T) *T                    { return &v }

var (
	poolA   = mkPool("pool-a", "10.65.0.0/16", false)
	poolOff = mkPool("pool-noexport", "10.66.0.0/16", true)
	three   = []*v1.Node{
		mkNode("a", "192.168.9.1/24", map[string]string{"rack": "r1"}),
		mkNode("b", "192.168.9.2/24", map[string]string{"rack": "r1"}),
		mkNode("c", "192.168.9.3/24", map[string]string{"rack": "r2"}),
	}
)

func meshOff() *v1.BGPConfiguration {
	return mkConfig("default", v1.BGPConfigurationSpec{NodeToNodeMeshEnabled: ptr(false)})
}

// TestCalc is the golden table: each input's Desired, printed.
func TestCalc(t *testing.T) {
	cases := []struct {
		name string
		in   Input
		want string
	}{{
		name: "no node",
		in:   Input{NodeName: "a", Pools: []*v1.IPPool{poolA}},
		want: `global: none
pool 10.65.0.0/16
problem Node a: not found (or invalid): BGP is off on this node
`,
	}, {
		name: "node without an IPv4 address",
		in:   Input{NodeName: "a", Nodes: []*v1.Node{mkNode("a", "", nil), three[1]}},
		want: `global: none
problem Node a: has no spec.bgp.ipv4Address: BGP is off on this node
`,
	}, {
		name: "mesh, own blocks and borrowed addresses",
		in: Input{NodeName: "a",
			Nodes: append([]*v1.Node{mkNode("d", "", nil)}, three...),
			Pools: []*v1.IPPool{poolA, poolOff},
			Blocks: []*v1.IPAMBlock{
				mkBlock("10.65.0.0/26", "a", map[int]string{1: "a", 2: "b"}),
				mkBlock("10.65.0.64/26", "b", map[int]string{5: "a", 6: "b"}),
				mkBlock("10.65.1.0/26", "", map[int]string{63: "a"}),
				mkBlock("10.66.0.0/26", "a", nil),
				mkBlock("10.67.0.0/26", "a", nil),
				func() *v1.IPAMBlock { b := mkBlock("10.65.2.0/26", "a", nil); b.Spec.Deleted = true; return b }(),
			}},
		want: `global: router-id 192.168.9.1 as 64512 port 179
peer 192.168.9.2 port 179 as 64512 local-as 64512 type mesh (mesh) node b source 192.168.9.1 timers 30s/1m30s restart 2m0s
peer 192.168.9.3 port 179 as 64512 local-as 64512 type mesh (mesh) node c source 192.168.9.1 timers 30s/1m30s restart 2m0s
advertise 10.65.0.0/26
advertise 10.65.0.69/32 borrowed
advertise 10.65.1.63/32 borrowed
pool 10.65.0.0/16
pool 10.66.0.0/16 no-export
problem IPAMBlock 10-67-0-0-26: 10.67.0.0/26 is in no IPPool: not advertised
`,
	}, {
		name: "configuration: AS, ports, communities, mesh password",
		in: Input{NodeName: "a",
			Nodes: []*v1.Node{three[0], mkNode("b", "192.168.9.2/24", nil, func(b *v1.NodeBGPSpec) { b.ASNumber = asn(65002) }), three[2]},
			Configs: []*v1.BGPConfiguration{
				mkConfig("default", v1.BGPConfigurationSpec{ASNumber: asn(65000), ListenPort: 1790,
					Communities:          []v1.Community{{Name: "pods", Value: "65000:100"}},
					PrefixAdvertisements: []v1.PrefixAdvertisement{{CIDR: "10.65.0.0/16", Communities: []string{"pods", "65000:1:2"}}},
					NodeMeshPassword:     secretRef("mesh", "pw"), NodeMeshMaxRestartTime: dur(time.Minute)}),
				mkConfig("node.a", v1.BGPConfigurationSpec{ListenPort: 1791, LogSeverityScreen: "Debug",
					Communities: []v1.Community{{Name: "pods", Value: "65000:200"}}}),
				mkConfig("node.c", v1.BGPConfigurationSpec{ListenPort: 1793}),
			},
			Secrets: []*corev1.Secret{mkSecret("mesh", map[string]string{"pw": "s3cret"})},
			Pools:   []*v1.IPPool{poolA},
			Blocks:  []*v1.IPAMBlock{mkBlock("10.65.0.0/26", "a", nil)}},
		want: `global: router-id 192.168.9.1 as 65000 port 1791
peer 192.168.9.2 port 1790 as 65002 local-as 65000 type mesh (mesh) node b password source 192.168.9.1 timers 30s/1m30s restart 1m0s
peer 192.168.9.3 port 1793 as 65000 local-as 65000 type mesh (mesh) node c password source 192.168.9.1 timers 30s/1m30s restart 1m0s
advertise 10.65.0.0/26 communities 65000:1:2,65000:200
pool 10.65.0.0/16
`,
	}, {
		name: "external peers: global, node, nodeSelector, session settings, filters",
		in: Input{NodeName: "a", Nodes: three,
			Configs: []*v1.BGPConfiguration{meshOff()},
			Peers: []*v1.BGPPeer{
				mkPeer("tor", v1.BGPPeerSpec{PeerIP: "192.168.9.254", ASNumber: 65100,
					Password: secretRef("tor", "password"), NumAllowedLocalASNumbers: ptr(int32(1)), Filters: []string{"tor-in", "gone"}}),
				mkPeer("tor-r1", v1.BGPPeerSpec{NodeSelector: "rack == 'r1'", PeerIP: "192.168.9.253:1179", ASNumber: 65101,
					LocalASNumber: asn(65201), HoldTime: dur(9 * time.Second), MaxRestartTime: dur(10 * time.Second),
					TTLSecurity: ptr(uint8(1)), MaxPrefixes: ptr(uint32(1000)), NextHopMode: v1.NextHopSelf, SourceAddress: "None"}),
				mkPeer("tor-r2", v1.BGPPeerSpec{NodeSelector: "rack == 'r2'", PeerIP: "192.168.9.252", ASNumber: 65102}),
				mkPeer("only-b", v1.BGPPeerSpec{Node: "b", PeerIP: "192.168.9.251", ASNumber: 65103}),
				mkPeer("only-a", v1.BGPPeerSpec{Node: "a", PeerIP: "192.168.9.250", ASNumber: 65104,
					HoldTime: dur(0), KeepaliveTime: dur(time.Second)}),
			},
			Filters: []*v1.BGPFilter{{ObjectMeta: metav1.ObjectMeta{Name: "tor-in"},
				Spec: v1.BGPFilterSpec{ImportV4: []v1.BGPFilterRule{{CIDR: "0.0.0.0/0", MatchOperator: v1.MatchEqual, Action: v1.BGPFilterAccept}}}}},
			Secrets: []*corev1.Secret{mkSecret("tor", map[string]string{"password": "x"})},
		},
		want: `global: router-id 192.168.9.1 as 64512 port 179
peer 192.168.9.250 port 179 as 65104 local-as 64512 type node (BGPPeer only-a) source 192.168.9.1 timers 0s/0s restart 2m0s third-party-next-hops [192.168.9.2 192.168.9.3]
peer 192.168.9.253 port 1179 as 65101 local-as 65201 type node (BGPPeer tor-r1) timers 3s/9s restart 10s ttl-security 1 max-prefixes 1000 next-hop Self
peer 192.168.9.254 port 179 as 65100 local-as 64512 type global (BGPPeer tor) password source 192.168.9.1 timers 30s/1m30s restart 2m0s allow-own-as 1 third-party-next-hops [192.168.9.2 192.168.9.3] filter tor-in
problem BGPPeer tor: BGPFilter "gone" not found (or invalid): left out
`,
	}, {
		name: "route reflector: the reflector's clients",
		in:   rrInput("rr1"),
		want: `global: router-id 192.168.9.10 as 64512 port 179
peer 192.168.9.1 port 179 as 64512 local-as 64512 type reflector (BGPPeer to-rr) node a rr-client cluster 224.0.0.1 source 192.168.9.10 timers 30s/1m30s restart 2m0s
peer 192.168.9.2 port 179 as 64512 local-as 64512 type reflector (BGPPeer to-rr) node b rr-client cluster 224.0.0.1 source 192.168.9.10 timers 30s/1m30s restart 2m0s
peer 192.168.9.11 port 179 as 64512 local-as 64512 type reflector (BGPPeer to-rr) node rr2 source 192.168.9.10 timers 30s/1m30s restart 2m0s
problem BGPPeer to-rr: node c has no spec.bgp.ipv4Address: no session with it
`,
	}, {
		name: "route reflector: a client",
		in:   rrInput("a"),
		want: `global: router-id 192.168.9.1 as 64512 port 179
peer 192.168.9.10 port 179 as 64512 local-as 64512 type reflector (BGPPeer to-rr) node rr1 source 192.168.9.1 timers 30s/1m30s restart 2m0s
peer 192.168.9.11 port 179 as 64512 local-as 64512 type reflector (BGPPeer to-rr) node rr2 source 192.168.9.1 timers 30s/1m30s restart 2m0s
`,
	}, {
		name: "bad objects are skipped with a reason",
		in: Input{NodeName: "a",
			Nodes: append([]*v1.Node{mkNode("dup", "192.168.9.2/24", nil), mkNode("bad", "10.0.0.1", nil)}, three...),
			Peers: []*v1.BGPPeer{
				mkPeer("both", v1.BGPPeerSpec{PeerIP: "192.168.9.200", PeerSelector: "all()", ASNumber: 1}),
				mkPeer("self", v1.BGPPeerSpec{PeerIP: "192.168.9.1", ASNumber: 1}),
				mkPeer("x-first", v1.BGPPeerSpec{Node: "a", PeerIP: "192.168.9.3", ASNumber: 65003}),
				mkPeer("x-second", v1.BGPPeerSpec{PeerIP: "192.168.9.3", ASNumber: 65004}),
				mkPeer("nosecret", v1.BGPPeerSpec{PeerIP: "192.168.9.201", ASNumber: 1, Password: secretRef("missing", "k")}),
				mkPeer("nokey", v1.BGPPeerSpec{PeerIP: "192.168.9.202", ASNumber: 1, Password: secretRef("tor", "other")}),
			},
			Configs: []*v1.BGPConfiguration{mkConfig("default", v1.BGPConfigurationSpec{ASNumber: asn(0)})},
			Pools:   []*v1.IPPool{{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1.IPPoolSpec{CIDR: "10.1.2.3/8", BlockSize: 26}}},
			Blocks:  []*v1.IPAMBlock{{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: v1.IPAMBlockSpec{CIDR: "nope"}}},
			Secrets: []*corev1.Secret{mkSecret("tor", map[string]string{"password": "x"})},
		},
		want: `global: router-id 192.168.9.1 as 64512 port 179
peer 192.168.9.2 port 179 as 64512 local-as 64512 type mesh (mesh) node b source 192.168.9.1 timers 30s/1m30s restart 2m0s
peer 192.168.9.3 port 179 as 65003 local-as 64512 type node (BGPPeer x-first) source 192.168.9.1 timers 30s/1m30s restart 2m0s third-party-next-hops [192.168.9.2]
problem BGPConfiguration default: invalid, ignored: ` + invalidMsg(mkConfig("default", v1.BGPConfigurationSpec{ASNumber: asn(0)})) + `
problem BGPPeer both: invalid, ignored: ` + invalidMsg(mkPeer("both", v1.BGPPeerSpec{PeerIP: "192.168.9.200", PeerSelector: "all()", ASNumber: 1})) + `
problem BGPPeer nokey: spec.password: secret tabby-system/tor has no key "other"; no session
problem BGPPeer nosecret: spec.password: secret tabby-system/missing not found; no session
problem BGPPeer self: peer 192.168.9.1 is this node's own address: no session
problem BGPPeer x-second: peer 192.168.9.3 already has a session from BGPPeer x-first: ignored
problem IPAMBlock x: spec.cidr "nope": netip.ParsePrefix("nope"): no '/'
problem IPPool p: invalid, ignored: ` + invalidMsg(&v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1.IPPoolSpec{CIDR: "10.1.2.3/8", BlockSize: 26}}) + `
problem Node bad: invalid, ignored: ` + invalidMsg(mkNode("bad", "10.0.0.1", nil)) + `
problem Node dup: spec.bgp.ipv4Address 192.168.9.2 is also node b's: no mesh session
`,
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := Calc(tc.in).String()
			if got != tc.want {
				t.Errorf("Calc:\n--- got\n%s--- want\n%s", got, tc.want)
			}
			if again := Calc(tc.in).String(); again != got {
				t.Errorf("Calc is not deterministic:\n%s\nthen\n%s", got, again)
			}
		})
	}
}

func invalidMsg(o v1.Object) string { return v1.Validate(o).Error() }

// rrInput: rr1 and rr2 reflect cluster 224.0.0.1; a and b are clients; c has no
// address. One BGPPeer: every node peers with the nodes labelled rr=true.
func rrInput(me string) Input {
	return Input{NodeName: me,
		Nodes: []*v1.Node{
			mkNode("rr1", "192.168.9.10/24", map[string]string{"rr": "true"}, rr("224.0.0.1")),
			mkNode("rr2", "192.168.9.11/24", map[string]string{"rr": "true"}, rr("224.0.0.1")),
			three[0], three[1], mkNode("c", "", nil),
		},
		Configs: []*v1.BGPConfiguration{meshOff()},
		Peers:   []*v1.BGPPeer{mkPeer("to-rr", v1.BGPPeerSpec{NodeSelector: "all()", PeerSelector: "rr == 'true'"})},
	}
}

func TestAccept(t *testing.T) {
	in := Input{NodeName: "a", Nodes: three, Pools: []*v1.IPPool{poolA, poolOff},
		Blocks: []*v1.IPAMBlock{
			mkBlock("10.65.0.0/26", "a", nil),
			mkBlock("10.66.0.0/26", "a", nil), // own, not exported
			mkBlock("10.65.0.64/26", "b", map[int]string{1: "a"}),
		},
		Peers: []*v1.BGPPeer{
			mkPeer("tor", v1.BGPPeerSpec{PeerIP: "192.168.9.254", ASNumber: 65100, Filters: []string{"f"}}),
			mkPeer("plain", v1.BGPPeerSpec{PeerIP: "192.168.9.253", ASNumber: 65100}),
		},
		Filters: []*v1.BGPFilter{{ObjectMeta: metav1.ObjectMeta{Name: "f"}, Spec: v1.BGPFilterSpec{ImportV4: []v1.BGPFilterRule{
			{CIDR: "0.0.0.0/0", MatchOperator: v1.MatchEqual, Action: v1.BGPFilterAccept},
			{CIDR: "10.65.9.0/24", MatchOperator: v1.MatchIn, Action: v1.BGPFilterReject},
			{CIDR: "172.16.0.0/12", MatchOperator: v1.MatchIn, PrefixLength: &v1.BGPFilterPrefixLength{Max: ptr(int32(24))}, Action: v1.BGPFilterAccept},
			{CIDR: "10.0.0.0/8", MatchOperator: v1.MatchNotIn, PrefixLength: &v1.BGPFilterPrefixLength{Min: ptr(int32(32))}, Action: v1.BGPFilterAccept},
		}}}},
	}
	d := Calc(in)
	mesh, tor, plain, stranger := "192.168.9.2", "192.168.9.254", "192.168.9.253", "192.168.9.99"
	cases := []struct {
		from, prefix string
		want         bool
	}{
		{mesh, "10.65.0.128/26", true},   // another node's block
		{mesh, "10.65.0.0/26", false},    // my block
		{mesh, "10.66.0.0/26", false},    // my block, even though not exported
		{mesh, "10.65.0.65/32", false},   // the address I borrowed
		{mesh, "10.65.0.5/32", true},     // an address another node borrowed from my block
		{mesh, "10.66.1.0/26", true},     // a non-exporting pool's prefix is still a pool prefix
		{mesh, "10.67.0.0/26", false},    // outside every pool
		{mesh, "0.0.0.0/0", false},       // default route: not from Tabby nodes
		{tor, "0.0.0.0/0", true},         // filter: accept Equal
		{tor, "10.65.9.0/26", false},     // filter: reject In, though inside a pool
		{tor, "10.65.8.0/26", true},      // no rule: the default, pool prefixes
		{tor, "172.16.5.0/24", true},     // In with max length
		{tor, "172.16.5.0/25", true},     // too long for In; NotIn matches (not a /32 in 10/8)
		{tor, "192.0.2.1/32", true},      // NotIn
		{tor, "10.1.0.1/32", false},      // in NotIn's set: no rule, not in a pool
		{tor, "10.65.0.0/26", false},     // own block, whatever the filter says
		{plain, "10.65.3.0/26", true},    // external without filters: pool prefixes
		{plain, "0.0.0.0/0", false},      // ... only
		{stranger, "10.65.3.0/26", true}, // unknown source: the default
		{stranger, "8.8.8.0/24", false},
	}
	for _, tc := range cases {
		got := d.Accept(netip.MustParseAddr(tc.from), netip.MustParsePrefix(tc.prefix))
		if got != tc.want {
			t.Errorf("Accept(from %s, %s) = %v, want %v", tc.from, tc.prefix, got, tc.want)
		}
	}
}

func TestAddrAt(t *testing.T) {
	for _, tc := range []struct {
		base string
		ord  int
		want string
	}{{"10.0.0.0", 0, "10.0.0.0"}, {"10.0.0.192", 70, "10.0.1.6"}, {"10.0.255.255", 1, "10.1.0.0"},
		{"fd00::", 0x1ff, "fd00::1ff"}, {"fd00::ffff:ffff", 1, "fd00::1:0:0"}} {
		if got := addrAt(netip.MustParseAddr(tc.base), tc.ord); got.String() != tc.want {
			t.Errorf("addrAt(%s, %d) = %s, want %s", tc.base, tc.ord, got, tc.want)
		}
	}
}

func TestParseCommunity(t *testing.T) {
	c, err := ParseCommunity("65000:100")
	if err != nil || c.Large || c.Standard != 65000<<16|100 {
		t.Errorf("standard: %+v %v", c, err)
	}
	c, err = ParseCommunity("4200000000:1:2")
	if err != nil || !c.Large || c.Global != 4200000000 || c.Local1 != 1 || c.Local2 != 2 {
		t.Errorf("large: %+v %v", c, err)
	}
	for _, bad := range []string{"", "1", "70000:1", "1:2:3:4", "a:b"} {
		if _, err := ParseCommunity(bad); err == nil {
			t.Errorf("ParseCommunity(%q) accepted", bad)
		}
	}
}
