package lab

import (
	"slices"
	"strings"
	"testing"

	"github.com/tabbynet/tabby/agent/localapi"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestDenyPolicy: the embedded demo policy decodes, isolates pod-a1 for ingress with no
// rule, in the lab's namespace, selecting by PodLabel.
func TestDenyPolicy(t *testing.T) {
	np, err := DenyPolicy()
	if err != nil {
		t.Fatal(err)
	}
	if np.Namespace != PodNamespace || np.Spec.PodSelector.MatchLabels[PodLabel] != "pod-a1" || !isolatesIngress(np) || len(np.Spec.Ingress) != 0 {
		t.Errorf("demo policy %s/%s: %+v", np.Namespace, np.Name, np.Spec)
	}
}

// TestPolicyMarksAndPrint: a failed cell into a pod a policy isolates is denied, not a
// problem; the policy shows with the nodes that programmed it; a deleted policy still
// in an agent's maps and one not programmed everywhere are problems.
func TestPolicyMarksAndPrint(t *testing.T) {
	st := testState()
	np, err := DenyPolicy()
	if err != nil {
		t.Fatal(err)
	}
	np.ResourceVersion = "7"
	pols := []k8sPolicy{{np: np, isolates: []string{"demo/pod-a1"}}}
	m := newMatrix(st.Pods)
	m.Cells[0][1], m.Reachable = CellOK, 1 // pod-b1 -> pod-a1 fails
	markDenied(m, st.Pods, pols)
	if m.Cells[1][0] != CellDenied || m.Denied != 1 || m.Failed() != 0 {
		t.Fatalf("matrix after markDenied: %+v", m)
	}
	programs := func(rv string) *localapi.PolicyStatus {
		return &localapi.PolicyStatus{Enabled: true, Programmed: true, Enforced: 1,
			Sources: []localapi.PolicySource{{Kind: policyKind, Namespace: "demo", Name: np.Name, ResourceVersion: rv}}}
	}
	r := &Report{Name: "t1", StateDir: "/run/t1", Options: Options{Name: "t1", StateDir: "/run/t1", Tor: "none", Nodes: 2, PodsPerNode: 1},
		Pods: st.Pods, Matrix: m, Nodes: []NodeReport{
			{Name: "t1-a-node", Ready: true, Registered: true, Policy: programs("7")},
			{Name: "t1-b-node", Ready: true, Registered: true, Policy: programs("7")}}}
	r.Policies = policyReports(r, pols)
	r.Problems = problems(r)
	if len(r.Problems) != 0 || len(r.Policies) != 1 || r.Policies[0].Programmed != 2 || !hasPolicy(r.Policies) {
		t.Fatalf("policies %+v, problems %q", r.Policies, r.Problems)
	}
	var b strings.Builder
	if err := WritePolicyResult(&b, &PolicyResult{Action: PolicyDeny, Kind: policyKind, Namespace: "demo", Name: np.Name,
		ResourceVersion: "7", Changed: true, ProgrammedAfter: "40ms", Report: r}, Hints{Tabbyctl: "tabbyctl"}); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, s := range []string{
		"applied NetworkPolicy demo/deny-ingress-pod-a1 (resourceVersion 7)",
		"K8sNetworkPolicy  demo/deny-ingress-pod-a1  7        demo/pod-a1 (no ingress rule: nothing may connect)  by 2 of 2 nodes",
		"pod-b1 (10.91.0.65)  DENY    .",
		"1 of 2 pairs reachable: 1 pairs denied by policy",
		"tabbyctl lab --state-dir /run/t1 policy allow",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("printout lacks %q:\n%s", s, out)
		}
	}

	// Node b still holds version 6; then the policy is deleted while node b holds it.
	r.Nodes[1].Policy = programs("6")
	r.Policies = policyReports(r, pols)
	if got := policyProblems(r.Policies); !slices.Equal(got, []string{"K8sNetworkPolicy demo/deny-ingress-pod-a1 (resourceVersion 7): programmed by 1 of 2 nodes"}) {
		t.Errorf("problems of a policy half programmed: %q", got)
	}
	r.Nodes[0].Policy = &localapi.PolicyStatus{Enabled: true, Programmed: true}
	r.Policies = policyReports(r, nil)
	if got := policyProblems(r.Policies); !slices.Equal(got, []string{"K8sNetworkPolicy demo/deny-ingress-pod-a1: deleted, but still enforced by 1 of 2 nodes"}) {
		t.Errorf("problems of a deleted policy still enforced: %q", got)
	}
}

// TestIsolatesIngress: no policyTypes means Ingress; Egress alone does not isolate for
// ingress.
func TestIsolatesIngress(t *testing.T) {
	for _, c := range []struct {
		types []networkingv1.PolicyType
		want  bool
	}{{nil, true}, {[]networkingv1.PolicyType{networkingv1.PolicyTypeEgress}, false},
		{[]networkingv1.PolicyType{networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress}, true}} {
		np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: networkingv1.NetworkPolicySpec{PolicyTypes: c.types}}
		if got := isolatesIngress(np); got != c.want {
			t.Errorf("policyTypes %v: isolates ingress %v, want %v", c.types, got, c.want)
		}
	}
}
