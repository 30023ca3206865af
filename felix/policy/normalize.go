package policy

import (
	"fmt"
	"math"
	"net/netip"
	"sort"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/api/v1/selector"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// kubeOrder is the order Kubernetes NetworkPolicies get among Tabby policies (as in
// Calico).
const kubeOrder = 1000

// portSpec is a destination port range of one protocol, or a named port (name set).
type portSpec struct {
	first, last uint16
	name        string
}

// pRule is a rule in normal form: one action, protocols, a peer matcher, a local matcher
// and destination ports. Several pRules can share an id (one source rule).
type pRule struct {
	id        int32
	action    v1.Action
	protos    []uint8 // empty: any
	notProtos []uint8
	peer      matcher
	peerIdx   int     // set by the classifier
	local     matcher // checked against the local endpoint's addresses at compile time
	ports     []portSpec
	notPorts  []portSpec
	hasPorts  bool // ports is a constraint (nil ports with hasPorts matches nothing)
	// portsOnPeer: named ports resolve against the peer (egress), not the local endpoint.
	portsOnPeer bool
}

// pPolicy is a policy in normal form.
type pPolicy struct {
	name    string
	order   float64
	applies func(ep *Endpoint, nsLabels, saLabels map[string]string) bool
	types   [2]bool
	rules   [2][]*pRule
}

type normaliser struct {
	in    *Input
	rules []RuleRef
}

func (n *normaliser) addRef(policy string, dir Direction, idx int, a v1.Action) int32 {
	n.rules = append(n.rules, RuleRef{Policy: policy, Direction: dir, Index: idx, Action: a})
	return int32(len(n.rules) - 1)
}

func kubeSelector(ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return labels.Everything(), nil
	}
	s, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return nil, fmt.Errorf("label selector: %w", err)
	}
	return s, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, err2 := netip.ParseAddr(s)
		if err2 != nil {
			return netip.Prefix{}, fmt.Errorf("cidr %q: %w", s, err)
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-(p.Addr().BitLen()-p.Addr().Unmap().BitLen())).Masked(), nil
}

func kubeProto(p *corev1.Protocol) (uint8, error) {
	if p == nil {
		return ProtoTCP, nil
	}
	switch *p {
	case corev1.ProtocolTCP:
		return ProtoTCP, nil
	case corev1.ProtocolUDP:
		return ProtoUDP, nil
	case corev1.ProtocolSCTP:
		return ProtoSCTP, nil
	}
	return 0, fmt.Errorf("protocol %q: want TCP, UDP or SCTP", *p)
}

// kubePolicy converts a networking.k8s.io/v1 NetworkPolicy.
func (n *normaliser) kubePolicy(np *networkingv1.NetworkPolicy) (*pPolicy, error) {
	name := "knp " + np.Namespace + "/" + np.Name
	sel, err := kubeSelector(&np.Spec.PodSelector)
	if err != nil {
		return nil, fmt.Errorf("%s: podSelector: %w", name, err)
	}
	p := &pPolicy{name: name, order: kubeOrder}
	ns := np.Namespace
	p.applies = func(ep *Endpoint, _, _ map[string]string) bool {
		return ep.Namespace == ns && sel.Matches(labels.Set(ep.Labels))
	}
	if len(np.Spec.PolicyTypes) == 0 {
		p.types[Ingress] = true
		p.types[Egress] = len(np.Spec.Egress) > 0
	}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			p.types[Ingress] = true
		case networkingv1.PolicyTypeEgress:
			p.types[Egress] = true
		default:
			return nil, fmt.Errorf("%s: policyTypes: unknown type %q", name, t)
		}
	}
	for i, r := range np.Spec.Ingress {
		id := n.addRef(name, Ingress, i, v1.ActionAllow)
		rs, err := n.kubeRule(id, ns, r.From, r.Ports, false)
		if err != nil {
			return nil, fmt.Errorf("%s: ingress[%d]: %w", name, i, err)
		}
		p.rules[Ingress] = append(p.rules[Ingress], rs...)
	}
	for i, r := range np.Spec.Egress {
		id := n.addRef(name, Egress, i, v1.ActionAllow)
		rs, err := n.kubeRule(id, ns, r.To, r.Ports, true)
		if err != nil {
			return nil, fmt.Errorf("%s: egress[%d]: %w", name, i, err)
		}
		p.rules[Egress] = append(p.rules[Egress], rs...)
	}
	return p, nil
}

// kubeRule expands one Kubernetes rule into peers x ports Allow pRules (their order does
// not matter: they all allow).
func (n *normaliser) kubeRule(id int32, ns string, peers []networkingv1.NetworkPolicyPeer,
	ports []networkingv1.NetworkPolicyPort, egress bool) ([]*pRule, error) {
	var ms []matcher
	for j, peer := range peers {
		m, err := kubePeer(ns, &peer)
		if err != nil {
			return nil, fmt.Errorf("peer[%d]: %w", j, err)
		}
		ms = append(ms, m)
	}
	if len(peers) == 0 {
		ms = []matcher{matchAll{}}
	}
	var out []*pRule
	for _, m := range ms {
		if len(ports) == 0 {
			out = append(out, &pRule{id: id, action: v1.ActionAllow, peer: m, local: matchAll{}})
			continue
		}
		for j, port := range ports {
			proto, err := kubeProto(port.Protocol)
			if err != nil {
				return nil, fmt.Errorf("ports[%d]: %w", j, err)
			}
			r := &pRule{id: id, action: v1.ActionAllow, protos: []uint8{proto}, peer: m, local: matchAll{},
				portsOnPeer: egress}
			if port.Port != nil {
				r.hasPorts = true
				ps, err := kubePort(port.Port, port.EndPort)
				if err != nil {
					return nil, fmt.Errorf("ports[%d]: %w", j, err)
				}
				r.ports = []portSpec{ps}
			}
			out = append(out, r)
		}
	}
	return out, nil
}

func kubePort(p *intstr.IntOrString, end *int32) (portSpec, error) {
	if p.Type == intstr.String {
		if end != nil {
			return portSpec{}, fmt.Errorf("endPort needs a numeric port")
		}
		if p.StrVal == "" {
			return portSpec{}, fmt.Errorf("empty port name")
		}
		return portSpec{name: p.StrVal}, nil
	}
	if p.IntVal < 1 || p.IntVal > 65535 {
		return portSpec{}, fmt.Errorf("port %d: must be 1-65535", p.IntVal)
	}
	ps := portSpec{first: uint16(p.IntVal), last: uint16(p.IntVal)}
	if end != nil {
		if *end < p.IntVal || *end > 65535 {
			return portSpec{}, fmt.Errorf("endPort %d: must be %d-65535", *end, p.IntVal)
		}
		ps.last = uint16(*end)
	}
	return ps, nil
}

func kubePeer(ns string, peer *networkingv1.NetworkPolicyPeer) (matcher, error) {
	if peer.IPBlock != nil {
		if peer.PodSelector != nil || peer.NamespaceSelector != nil {
			return nil, fmt.Errorf("ipBlock cannot be combined with selectors")
		}
		cidr, err := parsePrefix(peer.IPBlock.CIDR)
		if err != nil {
			return nil, fmt.Errorf("ipBlock: %w", err)
		}
		var except []netip.Prefix
		for _, e := range peer.IPBlock.Except {
			p, err := parsePrefix(e)
			if err != nil {
				return nil, fmt.Errorf("ipBlock except: %w", err)
			}
			if p.Addr().Is4() != cidr.Addr().Is4() || p.Bits() <= cidr.Bits() || !cidr.Contains(p.Addr()) {
				return nil, fmt.Errorf("ipBlock except %s: must be strictly inside cidr %s", p, cidr)
			}
			except = append(except, p)
		}
		if len(except) == 0 {
			return matchNets{[]netip.Prefix{cidr}}, nil
		}
		return and(matchNets{[]netip.Prefix{cidr}}, matchNot{matchNets{except}}), nil
	}
	if peer.PodSelector == nil && peer.NamespaceSelector == nil {
		return nil, fmt.Errorf("peer needs podSelector, namespaceSelector or ipBlock")
	}
	pods, err := kubeSelector(peer.PodSelector)
	if err != nil {
		return nil, fmt.Errorf("podSelector: %w", err)
	}
	m := matchKubePeer{pods: pods, ns: ns}
	if peer.NamespaceSelector != nil {
		if m.nsSel, err = kubeSelector(peer.NamespaceSelector); err != nil {
			return nil, fmt.Errorf("namespaceSelector: %w", err)
		}
	}
	return m, nil
}

func orderOf(o *float64) float64 {
	if o == nil {
		return math.Inf(1)
	}
	return *o
}

func parseSel(s string) (*selector.Selector, error) {
	if s == "" {
		return nil, nil
	}
	return selector.Parse(s)
}

// tabbyPolicy converts a Tabby NetworkPolicy (ns != "") or GlobalNetworkPolicy.
func (n *normaliser) tabbyPolicy(obj v1.Object, name, ns string, order *float64, sel, nsSel, saSel string,
	types []v1.PolicyType, ingress, egress []v1.Rule) (*pPolicy, error) {
	if err := v1.Validate(obj); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	epSel, err := parseSel(sel)
	if err != nil {
		return nil, fmt.Errorf("%s: selector: %w", name, err)
	}
	nsS, err := parseSel(nsSel)
	if err != nil {
		return nil, fmt.Errorf("%s: namespaceSelector: %w", name, err)
	}
	saS, err := parseSel(saSel)
	if err != nil {
		return nil, fmt.Errorf("%s: serviceAccountSelector: %w", name, err)
	}
	p := &pPolicy{name: name, order: orderOf(order)}
	p.applies = func(ep *Endpoint, nsLabels, saLabels map[string]string) bool {
		if ns != "" && ep.Namespace != ns {
			return false
		}
		if nsS != nil && !nsS.Evaluate(nsLabels) {
			return false
		}
		if saS != nil && (ep.ServiceAccount == "" || !saS.Evaluate(saLabels)) {
			return false
		}
		return epSel.Evaluate(ep.Labels)
	}
	if len(types) == 0 {
		p.types[Ingress] = true
		p.types[Egress] = len(egress) > 0
	}
	for _, t := range types {
		p.types[Ingress] = p.types[Ingress] || t == v1.PolicyTypeIngress
		p.types[Egress] = p.types[Egress] || t == v1.PolicyTypeEgress
	}
	for d, rules := range [2][]v1.Rule{ingress, egress} {
		dir := Direction(d)
		for i := range rules {
			r := &rules[i]
			id := n.addRef(name, dir, i, r.Action)
			pr, err := n.tabbyRule(id, ns, dir, r)
			if err != nil {
				return nil, fmt.Errorf("%s: %s[%d]: %w", name, dir, i, err)
			}
			p.rules[dir] = append(p.rules[dir], pr)
		}
	}
	return p, nil
}

func (n *normaliser) tabbyRule(id int32, ns string, dir Direction, r *v1.Rule) (*pRule, error) {
	if len(r.Source.Ports) > 0 || len(r.Source.NotPorts) > 0 {
		return nil, fmt.Errorf("source ports: %w", ErrUnsupported)
	}
	pr := &pRule{id: id, action: r.Action, portsOnPeer: dir == Egress}
	if r.Protocol != nil {
		p, err := v1.ProtocolNumber(*r.Protocol)
		if err != nil {
			return nil, fmt.Errorf("protocol: %w", err)
		}
		pr.protos = []uint8{uint8(p)}
	}
	if r.NotProtocol != nil {
		p, err := v1.ProtocolNumber(*r.NotProtocol)
		if err != nil {
			return nil, fmt.Errorf("notProtocol: %w", err)
		}
		pr.notProtos = []uint8{uint8(p)}
	}
	src, err := n.entity(ns, &r.Source)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	dst, err := n.entity(ns, &r.Destination)
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	pr.peer, pr.local = src, dst
	if dir == Egress {
		pr.peer, pr.local = dst, src
	}
	if r.IPVersion != nil {
		pr.peer = and(pr.peer, matchFamily{v4: *r.IPVersion == 4})
	}
	for _, list := range []struct {
		in  []intstr.IntOrString
		out *[]portSpec
	}{{r.Destination.Ports, &pr.ports}, {r.Destination.NotPorts, &pr.notPorts}} {
		for _, p := range list.in {
			pp, err := v1.ParsePort(p)
			if err != nil {
				return nil, fmt.Errorf("port %s: %w", p.String(), err)
			}
			*list.out = append(*list.out, portSpec{first: pp.First, last: pp.Last, name: pp.Name})
		}
	}
	pr.hasPorts = len(r.Destination.Ports) > 0
	if r.ICMP != nil || r.NotICMP != nil {
		if len(pr.protos) != 1 || !isICMP(pr.protos[0]) || pr.hasPorts || len(pr.notPorts) > 0 {
			return nil, fmt.Errorf("icmp/notICMP need protocol ICMP or ICMPv6 and no ports")
		}
		if ps, ok := icmpPorts(r.ICMP); ok {
			pr.ports, pr.hasPorts = []portSpec{ps}, true
		}
		if ps, ok := icmpPorts(r.NotICMP); ok {
			pr.notPorts = []portSpec{ps}
		}
	}
	return pr, nil
}

// icmpPorts turns icmp {type, code} into the ICMPPort range it matches (Calico v3: a
// type alone matches every code of it); ok is false when f sets no type (no condition).
func icmpPorts(f *v1.ICMPFields) (portSpec, bool) {
	if f == nil || f.Type == nil {
		return portSpec{}, false
	}
	t := uint8(*f.Type)
	if f.Code == nil {
		return portSpec{first: ICMPPort(t, 0), last: ICMPPort(t, 255)}, true
	}
	return portSpec{first: ICMPPort(t, uint8(*f.Code)), last: ICMPPort(t, uint8(*f.Code))}, true
}

// entity converts one side of a Tabby rule (without its ports) to a matcher.
func (n *normaliser) entity(ns string, e *v1.EntityRule) (matcher, error) {
	var parts []matcher
	if e.Selector != "" || e.NamespaceSelector != "" {
		m, err := n.selectorMatch(ns, e.Selector, e.NamespaceSelector)
		if err != nil {
			return nil, err
		}
		parts = append(parts, m)
	}
	if e.NotSelector != "" {
		m, err := n.selectorMatch(ns, e.NotSelector, e.NamespaceSelector)
		if err != nil {
			return nil, err
		}
		parts = append(parts, matchNot{m})
	}
	for _, l := range []struct {
		nets []string
		neg  bool
	}{{e.Nets, false}, {e.NotNets, true}} {
		if len(l.nets) == 0 {
			continue
		}
		var ps []netip.Prefix
		for _, s := range l.nets {
			p, err := parsePrefix(s)
			if err != nil {
				return nil, err
			}
			ps = append(ps, p)
		}
		var m matcher = matchNets{ps}
		if l.neg {
			m = matchNot{m}
		}
		parts = append(parts, m)
	}
	if sa := e.ServiceAccounts; sa != nil {
		s, err := parseSel(sa.Selector)
		if err != nil {
			return nil, fmt.Errorf("serviceAccounts selector: %w", err)
		}
		names := append([]string(nil), sa.Names...)
		sort.Strings(names)
		parts = append(parts, matchServiceAccount{names: names, sel: s, ns: ns})
	}
	return and(parts...), nil
}

// selectorMatch builds a selector matcher scoped like Calico: a namespaced policy sees its
// own namespace unless nsSel is set; a global one sees everything. Network sets in scope
// whose labels match are resolved to their nets now.
func (n *normaliser) selectorMatch(ns, sel, nsSel string) (matcher, error) {
	s, err := selector.Parse(sel)
	if err != nil {
		return nil, fmt.Errorf("selector: %w", err)
	}
	m := matchSelector{sel: s, ns: ns}
	if nsSel != "" {
		if m.nsSel, err = selector.Parse(nsSel); err != nil {
			return nil, fmt.Errorf("namespaceSelector: %w", err)
		}
		m.ns = ""
	}
	add := func(lbls map[string]string, nets []string) error {
		if !s.Evaluate(lbls) {
			return nil
		}
		for _, c := range nets {
			p, err := parsePrefix(c)
			if err != nil {
				return fmt.Errorf("network set: %w", err)
			}
			m.sets = append(m.sets, p)
		}
		return nil
	}
	for i := range n.in.NetworkSets {
		set := &n.in.NetworkSets[i]
		if !m.inScope(set.Namespace, n.in.Namespaces[set.Namespace]) {
			continue
		}
		if err := add(set.Labels, set.Spec.Nets); err != nil {
			return nil, err
		}
	}
	if ns == "" && nsSel == "" {
		for i := range n.in.GlobalNetworkSets {
			set := &n.in.GlobalNetworkSets[i]
			if err := add(set.Labels, set.Spec.Nets); err != nil {
				return nil, err
			}
		}
	}
	sort.Slice(m.sets, func(i, j int) bool { return m.sets[i].String() < m.sets[j].String() })
	return m, nil
}
