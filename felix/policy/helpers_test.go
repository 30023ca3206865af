package policy

import (
	"net/netip"
	"testing"

	v1 "github.com/tabbynet/tabby/api/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// pod makes an endpoint; kv are label key/value pairs.
func pod(ns, name, ip string, kv ...string) Endpoint {
	l := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return Endpoint{Namespace: ns, Name: name, IPs: []netip.Addr{addr(ip)}, Labels: l}
}

func namespaces(names ...string) map[string]map[string]string {
	m := map[string]map[string]string{}
	for _, n := range names {
		m[n] = map[string]string{"kubernetes.io/metadata.name": n, "ns": n}
	}
	return m
}

func sel(kv ...string) *metav1.LabelSelector {
	l := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		l[kv[i]] = kv[i+1]
	}
	return &metav1.LabelSelector{MatchLabels: l}
}

func knp(ns, name string, podSel *metav1.LabelSelector, types []networkingv1.PolicyType,
	ingress []networkingv1.NetworkPolicyIngressRule, egress []networkingv1.NetworkPolicyEgressRule) networkingv1.NetworkPolicy {
	return networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: *podSel, PolicyTypes: types, Ingress: ingress, Egress: egress}}
}

func kport(proto corev1.Protocol, port intstr.IntOrString, end ...int32) networkingv1.NetworkPolicyPort {
	p := networkingv1.NetworkPolicyPort{Protocol: &proto, Port: &port}
	if len(end) > 0 {
		p.EndPort = &end[0]
	}
	return p
}

func order(f float64) *float64 { return &f }

func proto(s string) *intstr.IntOrString { p := intstr.FromString(s); return &p }

func gnp(name string, o *float64, selector string, ingress, egress []v1.Rule) v1.GlobalNetworkPolicy {
	return v1.GlobalNetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.GlobalNetworkPolicySpec{Order: o, Selector: selector, Ingress: ingress, Egress: egress}}
}

// check compiles in and asserts each probe's combined verdict.
type probe struct {
	src, dst string
	proto    uint8
	port     uint16
	allowed  bool
}

func compileOK(t *testing.T, in *Input) (*Compiled, *Evaluator) {
	t.Helper()
	c, err := Compile(in)
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return c, NewEvaluator(c)
}

func checkProbes(t *testing.T, in *Input, probes []probe) {
	t.Helper()
	c, ev := compileOK(t, in)
	for _, p := range probes {
		r := ev.Verdict(addr(p.src), addr(p.dst), p.proto, p.port)
		if r.Allowed != p.allowed {
			t.Errorf("%s -> %s proto %d port %d: allowed=%t, want %t\n%s", p.src, p.dst, p.proto, p.port,
				r.Allowed, p.allowed, c.Explain(r))
		}
	}
}
