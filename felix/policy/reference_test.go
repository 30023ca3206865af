package policy

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sort"
	"testing"

	v1 "github.com/tabbynet/tabby/api/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// reference evaluates one direction straight from the normal form: no classes, no
// ipcache, no tables. It is the specification the tables must reproduce.
func reference(t *testing.T, in *Input, local, peer netip.Addr, dir Direction, proto uint8, port uint16) Decision {
	n := &normaliser{in: in}
	policies, err := n.policies()
	if err != nil {
		t.Fatal(err)
	}
	eps := make([]*Endpoint, len(in.Endpoints))
	for i := range in.Endpoints {
		eps[i] = &in.Endpoints[i]
	}
	sort.SliceStable(eps, func(i, j int) bool { return eps[i].Key() < eps[j].Key() })
	cl := &classifier{in: in}
	var ep *Endpoint
	peerID := &identity{prefix: netip.PrefixFrom(peer, peer.BitLen())}
	for _, e := range eps {
		for _, a := range e.IPs {
			if a == local && ep == nil {
				ep = e
			}
			if a == peer && peerID.ep == nil {
				peerID = cl.identityOf(e, netip.PrefixFrom(a, a.BitLen()))
			}
		}
	}
	noPolicy := Decision{Verdict: Allow, Reason: ReasonNoPolicy, RuleID: -1}
	if ep == nil {
		return noPolicy
	}
	var rules []*lRule
	selected := false
	for _, p := range policies {
		if !p.types[dir] || !p.applies(ep, in.Namespaces[ep.Namespace], nil) {
			continue
		}
		selected = true
		rs, err := expandPeerNamedPorts(p.rules[dir], eps)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rs {
			if !r.peer.match(peerID) {
				continue
			}
			if lr := instantiate(r, ep, cl.localIdentities(ep)); lr != nil {
				rules = append(rules, lr)
			}
		}
	}
	if !selected {
		return noPolicy
	}
	return firstMatch(rules, proto, port, Decision{Verdict: Deny, Reason: ReasonEndOfTier, RuleID: -1})
}

func randomInput(r *rand.Rand) *Input {
	in := &Input{Namespaces: namespaces("x", "y")}
	apps := []string{"web", "db", "cache"}
	for i := range 6 {
		ns := []string{"x", "y"}[i%2]
		ep := pod(ns, fmt.Sprintf("p%d", i), fmt.Sprintf("10.0.%d.%d", i%2, 1+i), "app", apps[r.IntN(3)])
		ep.NamedPorts = []NamedPort{{Name: "http", Proto: ProtoTCP, Port: uint16(8000 + r.IntN(3))}}
		in.Endpoints = append(in.Endpoints, ep)
	}
	cidrs := []string{"10.0.0.0/16", "10.0.1.0/24", "10.0.0.4/30", "192.0.2.0/24", "0.0.0.0/0"}
	peer := func() networkingv1.NetworkPolicyPeer {
		switch r.IntN(4) {
		case 0:
			return networkingv1.NetworkPolicyPeer{PodSelector: sel("app", apps[r.IntN(3)])}
		case 1:
			return networkingv1.NetworkPolicyPeer{NamespaceSelector: sel("ns", []string{"x", "y"}[r.IntN(2)])}
		case 2:
			return networkingv1.NetworkPolicyPeer{PodSelector: sel("app", apps[r.IntN(3)]), NamespaceSelector: sel()}
		}
		return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/16", Except: []string{cidrs[1+r.IntN(2)]}}}
	}
	ports := func() []networkingv1.NetworkPolicyPort {
		switch r.IntN(4) {
		case 0:
			return nil
		case 1:
			return []networkingv1.NetworkPolicyPort{kport(tcp, intstr.FromString("http"))}
		case 2:
			return []networkingv1.NetworkPolicyPort{kport(udp, intstr.FromInt32(int32(50+r.IntN(10))), int32(60+r.IntN(100)))}
		}
		return []networkingv1.NetworkPolicyPort{kport(tcp, intstr.FromInt32(80)), kport(tcp, intstr.FromInt32(8001))}
	}
	for i := range 1 + r.IntN(3) {
		var ing []networkingv1.NetworkPolicyIngressRule
		var eg []networkingv1.NetworkPolicyEgressRule
		for range r.IntN(3) {
			ing = append(ing, networkingv1.NetworkPolicyIngressRule{From: []networkingv1.NetworkPolicyPeer{peer()}, Ports: ports()})
			eg = append(eg, networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{peer()}, Ports: ports()})
		}
		in.KubePolicies = append(in.KubePolicies, knp([]string{"x", "y"}[i%2], fmt.Sprintf("k%d", i),
			sel("app", apps[r.IntN(3)]), nil, ing, eg))
	}
	actions := []v1.Action{v1.ActionAllow, v1.ActionDeny, v1.ActionPass, v1.ActionLog}
	for i := range r.IntN(3) {
		var rules []v1.Rule
		for range 1 + r.IntN(4) {
			rule := v1.Rule{Action: actions[r.IntN(4)]}
			switch r.IntN(6) {
			case 4:
				rule.Protocol = proto("ICMP")
				rule.ICMP = randomICMP(r)
			case 5:
				rule.Protocol = proto("ICMP")
				rule.NotICMP = randomICMP(r)
			case 0:
				rule.Protocol = proto("TCP")
				rule.Destination.Ports = []intstr.IntOrString{intstr.FromString(fmt.Sprintf("%d:%d", 70+r.IntN(20), 90+r.IntN(8000)))}
			case 1:
				rule.NotProtocol = proto("UDP")
			case 2:
				rule.Protocol = proto("UDP")
				rule.Destination.NotPorts = []intstr.IntOrString{intstr.FromInt32(int32(50 + r.IntN(20)))}
			}
			switch r.IntN(3) {
			case 0:
				rule.Source.Nets = []string{cidrs[r.IntN(len(cidrs))]}
			case 1:
				rule.Source.Selector = "app == '" + apps[r.IntN(3)] + "'"
			}
			rules = append(rules, rule)
		}
		in.GlobalPolicies = append(in.GlobalPolicies, gnp(fmt.Sprintf("g%d", i), order(float64(r.IntN(2000))), "all()", rules, nil))
	}
	return in
}

// randomICMP is icmp {type} or {type, code} over a few types and codes, or {} (no
// condition).
func randomICMP(r *rand.Rand) *v1.ICMPFields {
	f := &v1.ICMPFields{}
	if r.IntN(5) == 0 {
		return f
	}
	t := []int{0, 3, 8, 11, 254}[r.IntN(5)]
	f.Type = &t
	if r.IntN(2) == 0 {
		c := []int{0, 1, 4, 255}[r.IntN(4)]
		f.Code = &c
	}
	return f
}

// probeICMP are ICMPPort values worth probing: around the types and codes randomICMP
// uses, and type 255.
var probeICMP = []uint16{ICMPPort(0, 0), ICMPPort(0, 7), ICMPPort(3, 0), ICMPPort(3, 1), ICMPPort(3, 4),
	ICMPPort(3, 255), ICMPPort(5, 0), ICMPPort(8, 0), ICMPPort(8, 1), ICMPPort(11, 0), ICMPPort(254, 255),
	ICMPPort(255, 0)}

// TestTablesMatchReference compares the evaluator with the reference on random inputs.
func TestTablesMatchReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	addrs := []string{"10.0.0.1", "10.0.1.2", "10.0.0.3", "10.0.1.4", "10.0.0.5", "10.0.1.6",
		"10.0.0.6", "10.0.1.99", "10.0.7.7", "192.0.2.1", "8.8.8.8"}
	ports := []uint16{0, 53, 59, 60, 80, 81, 100, 159, 8000, 8001, 8002, 9000, 65535}
	checked := 0
	for iter := range 300 {
		in := randomInput(r)
		_, ev := compileOK(t, in)
		for range 60 {
			src, dst := addr(addrs[r.IntN(len(addrs))]), addr(addrs[r.IntN(len(addrs))])
			proto := []uint8{ProtoTCP, ProtoUDP, ProtoICMP, ProtoSCTP}[r.IntN(4)]
			port := ports[r.IntN(len(ports))]
			if proto == ProtoICMP {
				port = probeICMP[r.IntN(len(probeICMP))]
			}
			got := ev.Verdict(src, dst, proto, port)
			wantI := reference(t, in, dst, src, Ingress, proto, port)
			wantE := reference(t, in, src, dst, Egress, proto, port)
			if got.Ingress.Decision != wantI || got.Egress.Decision != wantE {
				t.Fatalf("iter %d: %s -> %s proto %d port %d: got ingress %+v egress %+v, want %+v %+v",
					iter, src, dst, proto, port, got.Ingress.Decision, got.Egress.Decision, wantI, wantE)
			}
			checked++
		}
	}
	t.Logf("%d random probes agree with the reference", checked)
}
