package policy

import (
	"errors"
	"testing"

	v1 "github.com/tabbynet/tabby/api/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var (
	ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	tcp         = corev1.ProtocolTCP
	udp         = corev1.ProtocolUDP
)

// Pods used by most tests: x/a 10.0.0.1 (app=web), x/b 10.0.0.2 (app=db), y/a 10.0.1.1
// (app=web), y/b 10.0.1.2 (app=db). 192.0.2.9 is outside the cluster.
func basicInput() *Input {
	return &Input{Namespaces: namespaces("x", "y"), Endpoints: []Endpoint{
		pod("x", "a", "10.0.0.1", "app", "web"), pod("x", "b", "10.0.0.2", "app", "db"),
		pod("y", "a", "10.0.1.1", "app", "web"), pod("y", "b", "10.0.1.2", "app", "db"),
	}}
}

func TestNoPolicyAllows(t *testing.T) {
	checkProbes(t, basicInput(), []probe{
		{"10.0.0.1", "10.0.0.2", ProtoTCP, 80, true},
		{"192.0.2.9", "10.0.0.2", ProtoUDP, 53, true},
	})
}

func TestIPBlockExcept(t *testing.T) {
	in := basicInput()
	in.KubePolicies = []networkingv1.NetworkPolicy{knp("x", "cidr", sel("app", "db"), ingressOnly,
		[]networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
			CIDR: "10.0.0.0/16", Except: []string{"10.0.1.0/24", "10.0.0.128/25"}}}}}}, nil)}
	in.Endpoints = append(in.Endpoints, pod("z", "far", "10.0.0.200"))
	checkProbes(t, in, []probe{
		{"10.0.0.1", "10.0.0.2", ProtoTCP, 80, true},    // pod inside cidr
		{"10.0.1.1", "10.0.0.2", ProtoTCP, 80, false},   // pod inside except
		{"10.0.2.7", "10.0.0.2", ProtoUDP, 9, true},     // external, inside cidr
		{"10.0.1.77", "10.0.0.2", ProtoTCP, 80, false},  // external, inside except
		{"10.0.0.129", "10.0.0.2", ProtoTCP, 80, false}, // second except
		{"10.0.0.200", "10.0.0.2", ProtoTCP, 80, false}, // endpoint inside second except
		{"10.1.0.1", "10.0.0.2", ProtoTCP, 80, false},   // outside cidr
		{"10.0.1.1", "10.0.0.1", ProtoTCP, 80, true},    // x/a is not selected
	})
}

func TestNamedPortIngress(t *testing.T) {
	in := basicInput()
	in.Endpoints[1].NamedPorts = []NamedPort{{Name: "http", Proto: ProtoTCP, Port: 8080}}
	in.KubePolicies = []networkingv1.NetworkPolicy{knp("x", "named", sel(), ingressOnly,
		[]networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{kport(tcp, intstr.FromString("http"))}}}, nil)}
	checkProbes(t, in, []probe{
		{"10.0.1.1", "10.0.0.2", ProtoTCP, 8080, true},
		{"10.0.1.1", "10.0.0.2", ProtoTCP, 80, false},
		{"10.0.1.1", "10.0.0.2", ProtoUDP, 8080, false}, // the named port is TCP
		{"10.0.1.1", "10.0.0.1", ProtoTCP, 8080, false}, // x/a has no port "http"
	})
}

func TestNamedPortEgressResolvesAtPeer(t *testing.T) {
	in := basicInput()
	in.Endpoints[2].NamedPorts = []NamedPort{{Name: "http", Proto: ProtoTCP, Port: 8080}}
	in.Endpoints[3].NamedPorts = []NamedPort{{Name: "http", Proto: ProtoTCP, Port: 9090}}
	in.KubePolicies = []networkingv1.NetworkPolicy{knp("x", "named", sel("app", "web"), egressOnly, nil,
		[]networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{kport(tcp, intstr.FromString("http"))}}})}
	checkProbes(t, in, []probe{
		{"10.0.0.1", "10.0.1.1", ProtoTCP, 8080, true},
		{"10.0.0.1", "10.0.1.1", ProtoTCP, 9090, false},
		{"10.0.0.1", "10.0.1.2", ProtoTCP, 9090, true},
		{"10.0.0.1", "10.0.1.2", ProtoTCP, 8080, false},
		{"10.0.0.1", "192.0.2.9", ProtoTCP, 8080, false}, // no endpoint, no named port
	})
}

func TestEndPortRange(t *testing.T) {
	in := basicInput()
	in.KubePolicies = []networkingv1.NetworkPolicy{knp("x", "range", sel("app", "db"), ingressOnly,
		[]networkingv1.NetworkPolicyIngressRule{{Ports: []networkingv1.NetworkPolicyPort{kport(tcp, intstr.FromInt32(32000), 32768)}}}, nil)}
	var probes []probe
	for _, p := range []struct {
		port uint16
		ok   bool
	}{{31999, false}, {32000, true}, {32001, true}, {32767, true}, {32768, true}, {32769, false}, {0, false}, {65535, false}} {
		probes = append(probes, probe{"10.0.1.1", "10.0.0.2", ProtoTCP, p.port, p.ok})
	}
	probes = append(probes, probe{"10.0.1.1", "10.0.0.2", ProtoUDP, 32000, false})
	checkProbes(t, in, probes)
}

func TestPolicyTypesDefaulting(t *testing.T) {
	in := basicInput()
	// No policyTypes and no egress rules: Ingress only (deny all ingress to x/b).
	in.KubePolicies = []networkingv1.NetworkPolicy{knp("x", "ing", sel("app", "db"), nil, nil, nil)}
	checkProbes(t, in, []probe{
		{"10.0.0.1", "10.0.0.2", ProtoTCP, 80, false},
		{"10.0.0.2", "10.0.0.1", ProtoTCP, 80, true}, // egress of x/b untouched
	})
	// No policyTypes with egress rules: Ingress and Egress.
	in.KubePolicies = []networkingv1.NetworkPolicy{knp("x", "both", sel("app", "db"), nil, nil,
		[]networkingv1.NetworkPolicyEgressRule{{Ports: []networkingv1.NetworkPolicyPort{kport(udp, intstr.FromInt32(53))}}})}
	checkProbes(t, in, []probe{
		{"10.0.0.1", "10.0.0.2", ProtoTCP, 80, false},
		{"10.0.0.2", "10.0.0.1", ProtoTCP, 80, false},
		{"10.0.0.2", "192.0.2.9", ProtoUDP, 53, true},
	})
}

func TestEgressDefaultDeny(t *testing.T) {
	in := basicInput()
	in.KubePolicies = []networkingv1.NetworkPolicy{knp("x", "deny-egress", sel(), egressOnly, nil, nil)}
	checkProbes(t, in, []probe{
		{"10.0.0.1", "10.0.1.1", ProtoTCP, 80, false},
		{"10.0.0.1", "192.0.2.9", ProtoICMP, 0, false},
		{"10.0.1.1", "10.0.0.1", ProtoTCP, 80, true}, // ingress to x is not selected
	})
}

func TestPodAndNamespaceSelectors(t *testing.T) {
	in := basicInput()
	in.KubePolicies = []networkingv1.NetworkPolicy{
		knp("x", "same-ns-web", sel("app", "db"), ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web")}}}}, nil),
		knp("y", "combined", sel("app", "db"), ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: sel("app", "web"), NamespaceSelector: sel("ns", "x")}}}}, nil),
		knp("y", "ns-only", sel("app", "web"), ingressOnly, []networkingv1.NetworkPolicyIngressRule{{
			From: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}}}, nil),
	}
	checkProbes(t, in, []probe{
		{"10.0.0.1", "10.0.0.2", ProtoTCP, 80, true},   // x/a -> x/b: same namespace web
		{"10.0.1.1", "10.0.0.2", ProtoTCP, 80, false},  // y/a is web but in y
		{"10.0.0.1", "10.0.1.2", ProtoTCP, 80, true},   // combined: web in x
		{"10.0.1.1", "10.0.1.2", ProtoTCP, 80, false},  // combined: web in y is not enough
		{"10.0.0.2", "10.0.1.1", ProtoTCP, 80, true},   // any pod of any namespace
		{"192.0.2.9", "10.0.1.1", ProtoTCP, 80, false}, // but not an external address
	})
}

func TestTabbyOrderPassDenyLog(t *testing.T) {
	in := basicInput()
	in.GlobalPolicies = []v1.GlobalNetworkPolicy{
		gnp("a-log", order(1), "app == 'db'", []v1.Rule{{Action: v1.ActionLog}}, nil),
		gnp("b-pass-ssh", order(5), "app == 'db'", []v1.Rule{{Action: v1.ActionPass, Protocol: proto("TCP"),
			Destination: v1.EntityRule{Ports: []intstr.IntOrString{intstr.FromInt32(22)}}}}, nil),
		gnp("c-deny-web", order(10), "app == 'db'", []v1.Rule{{Action: v1.ActionDeny,
			Source: v1.EntityRule{Selector: "app == 'web'"}}}, nil),
		gnp("d-allow-tcp", order(20), "app == 'db'", []v1.Rule{{Action: v1.ActionAllow, Protocol: proto("TCP")}}, nil),
	}
	checkProbes(t, in, []probe{
		{"10.0.0.1", "10.0.0.2", ProtoTCP, 80, false}, // web denied by order 10 before the allow
		{"10.0.0.1", "10.0.0.2", ProtoTCP, 22, true},  // Pass at order 5 skips the deny
		{"10.0.1.2", "10.0.0.2", ProtoTCP, 80, true},  // db peer: allowed by order 20
		{"10.0.1.2", "10.0.0.2", ProtoUDP, 80, false}, // nothing matches: end of tier
	})
	c, ev := compileOK(t, in)
	r := ev.Verdict(addr("10.0.0.1"), addr("10.0.0.2"), ProtoTCP, 22)
	if d := r.Ingress.Decision; d.Reason != ReasonPass || c.Rules[d.RuleID].Policy != "gnp b-pass-ssh" {
		t.Errorf("want pass by gnp b-pass-ssh, got %s", c.Explain(r))
	}
}

func TestKubePolicyOrderAmongTabby(t *testing.T) {
	in := basicInput()
	in.KubePolicies = []networkingv1.NetworkPolicy{knp("x", "allow-all", sel(), ingressOnly,
		[]networkingv1.NetworkPolicyIngressRule{{}}, nil)}
	in.GlobalPolicies = []v1.GlobalNetworkPolicy{
		gnp("early-deny", order(100), "app == 'db'", []v1.Rule{{Action: v1.ActionDeny, Protocol: proto("UDP")}}, nil),
		gnp("late-deny", nil, "all()", []v1.Rule{{Action: v1.ActionDeny}}, nil),
	}
	checkProbes(t, in, []probe{
		{"10.0.1.1", "10.0.0.2", ProtoUDP, 53, false}, // order 100 < 1000
		{"10.0.1.1", "10.0.0.2", ProtoTCP, 53, true},  // the Kubernetes allow comes before no-order
		{"10.0.0.1", "10.0.1.1", ProtoTCP, 53, false}, // y: only the late deny
	})
}

func TestGlobalPolicyNamespaceSelector(t *testing.T) {
	in := basicInput()
	p := gnp("only-y", order(1), "all()", []v1.Rule{{Action: v1.ActionDeny, Source: v1.EntityRule{Nets: []string{"192.0.2.0/24"}}}}, nil)
	p.Spec.NamespaceSelector = "ns == 'y'"
	in.GlobalPolicies = []v1.GlobalNetworkPolicy{p}
	checkProbes(t, in, []probe{
		{"192.0.2.9", "10.0.1.1", ProtoTCP, 80, false},
		{"192.0.2.9", "10.0.0.1", ProtoTCP, 80, true}, // x not selected
		{"10.0.0.1", "10.0.1.1", ProtoTCP, 80, false}, // y selected, no match: end of tier
	})
}

func TestNetworkSets(t *testing.T) {
	in := basicInput()
	in.GlobalNetworkSets = []v1.GlobalNetworkSet{{ObjectMeta: metav1.ObjectMeta{Name: "partners",
		Labels: map[string]string{"role": "partner"}}, Spec: v1.NetworkSetSpec{Nets: []string{"198.51.100.0/24"}}}}
	in.NetworkSets = []v1.NetworkSet{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "office", Labels: map[string]string{"role": "office"}},
			Spec: v1.NetworkSetSpec{Nets: []string{"203.0.113.0/24"}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "y", Name: "office", Labels: map[string]string{"role": "office"}},
			Spec: v1.NetworkSetSpec{Nets: []string{"192.0.2.0/24"}}},
	}
	in.GlobalPolicies = []v1.GlobalNetworkPolicy{gnp("partners", order(1), "app == 'web'",
		[]v1.Rule{{Action: v1.ActionAllow, Source: v1.EntityRule{Selector: "role == 'partner'"}}}, nil)}
	in.Policies = []v1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "office"},
		Spec: v1.NetworkPolicySpec{Selector: "app == 'db'", Ingress: []v1.Rule{{Action: v1.ActionAllow,
			Source: v1.EntityRule{Selector: "role == 'office'"}}}}}}
	checkProbes(t, in, []probe{
		{"198.51.100.7", "10.0.0.1", ProtoTCP, 443, true},
		{"203.0.113.7", "10.0.0.1", ProtoTCP, 443, false},
		{"203.0.113.7", "10.0.0.2", ProtoTCP, 443, true},   // x's office set
		{"192.0.2.7", "10.0.0.2", ProtoTCP, 443, false},    // y's office set is not in scope
		{"198.51.100.7", "10.0.0.2", ProtoTCP, 443, false}, // global set not in a namespaced selector
	})
}

func TestNotProtocolNotPortsAndNotNets(t *testing.T) {
	in := basicInput()
	in.GlobalPolicies = []v1.GlobalNetworkPolicy{
		gnp("not", order(1), "app == 'db'", []v1.Rule{
			{Action: v1.ActionDeny, NotProtocol: proto("TCP")},
			{Action: v1.ActionAllow, Protocol: proto("TCP"), Source: v1.EntityRule{NotNets: []string{"10.0.1.0/24"}},
				Destination: v1.EntityRule{NotPorts: []intstr.IntOrString{intstr.FromString("1000:2000")}}},
		}, nil),
	}
	checkProbes(t, in, []probe{
		{"10.0.0.1", "10.0.0.2", ProtoUDP, 53, false},
		{"10.0.0.1", "10.0.0.2", ProtoTCP, 53, true},
		{"10.0.0.1", "10.0.0.2", ProtoTCP, 1500, false},
		{"10.0.0.1", "10.0.0.2", ProtoTCP, 2001, true},
		{"10.0.1.1", "10.0.0.2", ProtoTCP, 53, false},
	})
}

func TestBadInput(t *testing.T) {
	in := basicInput()
	in.KubePolicies = []networkingv1.NetworkPolicy{knp("x", "bad", sel(), ingressOnly,
		[]networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/33"}}}}}, nil)}
	if _, err := Compile(in); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad cidr: got %v, want ErrInvalid", err)
	}
	in = basicInput()
	in.GlobalPolicies = []v1.GlobalNetworkPolicy{gnp("sp", order(1), "all()", []v1.Rule{{Action: v1.ActionAllow,
		Protocol: proto("TCP"), Source: v1.EntityRule{Ports: []intstr.IntOrString{intstr.FromInt32(53)}}}}, nil)}
	if _, err := Compile(in); !errors.Is(err, ErrUnsupported) {
		t.Errorf("source ports: got %v, want ErrUnsupported", err)
	}
	in = basicInput()
	in.GlobalPolicies = []v1.GlobalNetworkPolicy{gnp("sel", order(1), "app ==", nil, nil)}
	if _, err := Compile(in); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad selector: got %v, want ErrInvalid", err)
	}
}

func TestExceptOutsideCIDRIsInvalid(t *testing.T) {
	in := basicInput()
	in.KubePolicies = []networkingv1.NetworkPolicy{knp("x", "bad", sel(), ingressOnly,
		[]networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{
			CIDR: "10.0.0.0/16", Except: []string{"10.1.0.0/24"}}}}}}, nil)}
	if _, err := Compile(in); !errors.Is(err, ErrInvalid) {
		t.Errorf("got %v, want ErrInvalid", err)
	}
}

func TestEndpointFromWorkload(t *testing.T) {
	w := &v1.WorkloadEndpoint{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "node1-k8s-a-eth0",
		Labels: map[string]string{"app": "web"}}, Spec: v1.WorkloadEndpointSpec{Workload: "a",
		IPNetworks: []string{"10.0.0.1/32", "fd00::1/128"}, ServiceAccountName: "sa",
		Ports: []v1.WorkloadEndpointPort{{Name: "http", Protocol: "TCP", Port: 8080}}}}
	ep, err := EndpointFromWorkload(w)
	if err != nil {
		t.Fatal(err)
	}
	if ep.Key() != "x/a" || len(ep.IPs) != 2 || ep.IPs[1] != addr("fd00::1") || ep.ServiceAccount != "sa" ||
		len(ep.NamedPorts) != 1 || ep.NamedPorts[0] != (NamedPort{Name: "http", Proto: ProtoTCP, Port: 8080}) {
		t.Errorf("got %+v", ep)
	}
	w.Spec.IPNetworks = []string{"nope"}
	if _, err := EndpointFromWorkload(w); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad address: got %v, want ErrInvalid", err)
	}
}

func TestServiceAccountsAndIPVersion(t *testing.T) {
	in := basicInput()
	in.Endpoints[0].ServiceAccount = "frontend"
	in.Endpoints[1].IPs = append(in.Endpoints[1].IPs, addr("fd00::2"))
	in.ServiceAccounts = map[string]map[string]string{"x/frontend": {"tier": "fe"}}
	v6 := 6
	in.Policies = []v1.NetworkPolicy{{ObjectMeta: metav1.ObjectMeta{Namespace: "x", Name: "sa"},
		Spec: v1.NetworkPolicySpec{Selector: "app == 'db'", Ingress: []v1.Rule{
			{Action: v1.ActionAllow, Source: v1.EntityRule{ServiceAccounts: &v1.ServiceAccountMatch{Selector: "tier == 'fe'"}}},
			{Action: v1.ActionAllow, IPVersion: &v6},
		}}}}
	checkProbes(t, in, []probe{
		{"10.0.0.1", "10.0.0.2", ProtoTCP, 80, true},  // frontend account
		{"10.0.1.1", "10.0.0.2", ProtoTCP, 80, false}, // no account
		{"fd00::9", "fd00::2", ProtoTCP, 80, true},    // any IPv6 peer
		{"192.0.2.1", "10.0.0.2", ProtoTCP, 80, false},
	})
}
