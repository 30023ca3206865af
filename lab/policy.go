package lab

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/datastore"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// DenyPolicyYAML is the policy demo's NetworkPolicy (lab/policies/deny-pod-a1.yaml):
// it isolates pod-a1 for ingress with no rule, so nothing connects to it.
//
//go:embed policies/deny-pod-a1.yaml
var DenyPolicyYAML []byte

// Actions of the policy demo.
const (
	PolicyDeny  = "deny"  // apply DenyPolicyYAML
	PolicyAllow = "allow" // remove it
)

// policyKind is the kind the agents report Kubernetes NetworkPolicies as.
const policyKind = "K8sNetworkPolicy"

// DenyPolicy decodes DenyPolicyYAML.
func DenyPolicy() (*networkingv1.NetworkPolicy, error) {
	var np networkingv1.NetworkPolicy
	if err := yaml.UnmarshalStrict(DenyPolicyYAML, &np); err != nil {
		return nil, fmt.Errorf("decode the demo policy: %w", err)
	}
	return &np, nil
}

// PolicyReport is a network policy in force: in the API server, in the agents' maps,
// or both.
type PolicyReport struct {
	// Kind is as the agents report it: K8sNetworkPolicy, NetworkPolicy or
	// GlobalNetworkPolicy.
	Kind            string `json:"kind"`
	Namespace       string `json:"namespace,omitempty"`
	Name            string `json:"name"`
	ResourceVersion string `json:"resourceVersion"`
	// Isolates are the pods (namespace/name) a Kubernetes NetworkPolicy isolates for
	// ingress: only its ingress rules may reach them (none: nothing may).
	Isolates []string `json:"isolates,omitempty"`
	// IngressRules counts the policy's ingress rules (Kubernetes NetworkPolicies).
	IngressRules int `json:"ingressRules"`
	// Programmed counts the nodes whose agent's maps were written from this version;
	// Nodes counts the nodes.
	Programmed int `json:"programmed"`
	Nodes      int `json:"nodes"`
	// Gone: no longer in the API server, but still in some agent's maps.
	Gone bool `json:"gone,omitempty"`
}

// k8sPolicy is a Kubernetes NetworkPolicy and the pods it isolates for ingress.
type k8sPolicy struct {
	np       *networkingv1.NetworkPolicy
	isolates []string // namespace/name
}

// listPolicies reads the Kubernetes NetworkPolicies and the pods they isolate.
func listPolicies(ctx context.Context, store datastore.Store) ([]k8sPolicy, error) {
	objs, err := store.List(ctx, datastore.KindK8sNetworkPolicy, datastore.ListOptions{})
	if err != nil || len(objs) == 0 {
		return nil, err
	}
	podObjs, err := store.List(ctx, datastore.KindPod, datastore.ListOptions{})
	if err != nil {
		return nil, err
	}
	var out []k8sPolicy
	for _, o := range objs {
		np, ok := o.(*networkingv1.NetworkPolicy)
		if !ok {
			continue
		}
		kp := k8sPolicy{np: np}
		sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
		if err == nil && isolatesIngress(np) {
			for _, po := range podObjs {
				if p, ok := po.(*corev1.Pod); ok && p.Namespace == np.Namespace && sel.Matches(labels.Set(p.Labels)) {
					kp.isolates = append(kp.isolates, p.Namespace+"/"+p.Name)
				}
			}
		}
		out = append(out, kp)
	}
	return out, nil
}

// isolatesIngress: a NetworkPolicy isolates its pods for ingress when its policyTypes
// list Ingress, or list nothing (then Ingress is implied).
func isolatesIngress(np *networkingv1.NetworkPolicy) bool {
	return len(np.Spec.PolicyTypes) == 0 || slices.Contains(np.Spec.PolicyTypes, networkingv1.PolicyTypeIngress)
}

// policyReports lists the policies in force: the Kubernetes NetworkPolicies of the API
// server, then what the agents hold besides (Tabby's own policy kinds, or a deleted
// policy an agent still enforces), each with the nodes that programmed it.
func policyReports(r *Report, pols []k8sPolicy) []PolicyReport {
	out := []PolicyReport{}
	seen := map[string]bool{}
	key := func(kind, ns, name string) string { return kind + "/" + ns + "/" + name }
	for _, kp := range pols {
		np := kp.np
		pr := PolicyReport{Kind: policyKind, Namespace: np.Namespace, Name: np.Name, ResourceVersion: np.ResourceVersion,
			Isolates: kp.isolates, IngressRules: len(np.Spec.Ingress), Nodes: len(r.Nodes)}
		for _, n := range r.Nodes {
			if n.Policy != nil && n.Policy.Programs(pr.Kind, pr.Namespace, pr.Name, pr.ResourceVersion) {
				pr.Programmed++
			}
		}
		seen[key(pr.Kind, pr.Namespace, pr.Name)] = true
		out = append(out, pr)
	}
	for _, n := range r.Nodes {
		if n.Policy == nil {
			continue
		}
		for _, src := range n.Policy.Sources {
			k := key(src.Kind, src.Namespace, src.Name)
			if !strings.HasSuffix(src.Kind, "Policy") || seen[k] {
				continue
			}
			seen[k] = true
			pr := PolicyReport{Kind: src.Kind, Namespace: src.Namespace, Name: src.Name, ResourceVersion: src.ResourceVersion,
				Nodes: len(r.Nodes), Gone: src.Kind == policyKind}
			for _, m := range r.Nodes {
				if m.Policy != nil && m.Policy.Programs(pr.Kind, pr.Namespace, pr.Name, pr.ResourceVersion) {
					pr.Programmed++
				}
			}
			out = append(out, pr)
		}
	}
	return out
}

// markDenied turns each failed cell whose destination a NetworkPolicy isolates into a
// denied one.
func markDenied(m *Matrix, pods []PodState, pols []k8sPolicy) {
	isolated := map[string]bool{}
	for _, kp := range pols {
		for _, p := range kp.isolates {
			isolated[p] = true
		}
	}
	for i := range m.Cells {
		for j, c := range m.Cells[i] {
			if c == CellFail && j < len(pods) && isolated[pods[j].Namespace+"/"+pods[j].Name] {
				m.Cells[i][j] = CellDenied
				m.Denied++
			}
		}
	}
}

// policyProblems lists the policies not (or no longer) everywhere they should be.
func policyProblems(ps []PolicyReport) []string {
	var out []string
	for _, p := range ps {
		switch {
		case p.Gone:
			out = append(out, fmt.Sprintf("%s %s: deleted, but still enforced by %d of %d nodes", p.Kind, nsName(p.Namespace, p.Name), p.Programmed, p.Nodes))
		case p.Programmed < p.Nodes:
			out = append(out, fmt.Sprintf("%s %s (resourceVersion %s): programmed by %d of %d nodes", p.Kind, nsName(p.Namespace, p.Name),
				p.ResourceVersion, p.Programmed, p.Nodes))
		}
	}
	return out
}

func nsName(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// PolicyResult is the answer of the policy demo (tabbyctl lab policy deny|allow).
type PolicyResult struct {
	Action          string `json:"action"`
	Kind            string `json:"kind"`
	Namespace       string `json:"namespace"`
	Name            string `json:"name"`
	ResourceVersion string `json:"resourceVersion,omitempty"`
	// Changed is false when the policy already was there (deny) or was not (allow).
	Changed bool `json:"changed"`
	// ProgrammedAfter is the time from the write until every node's agent reported
	// its maps written from it (deny) or without it (allow).
	ProgrammedAfter string `json:"programmedAfter"`
	// Report is the lab's report after, with its matrix.
	Report *Report `json:"report"`
}

// policyDemo applies (deny) or removes (allow) the demo's policy, waits until every
// node's agent reports it programmed, and collects a report with the matrix.
func (s *supervisor) policyDemo(ctx context.Context, action string) (*PolicyResult, error) {
	np, err := DenyPolicy()
	if err != nil {
		return nil, err
	}
	res := &PolicyResult{Action: action, Kind: policyKind, Namespace: np.Namespace, Name: np.Name}
	store := s.lab.store
	t0 := time.Now()
	switch action {
	case PolicyDeny:
		obj, err := store.Create(ctx, np)
		if errors.Is(err, datastore.ErrAlreadyExists) {
			obj, err = store.Get(ctx, datastore.KindK8sNetworkPolicy, np.Namespace, np.Name)
		} else {
			res.Changed = err == nil
		}
		if err != nil {
			return nil, fmt.Errorf("apply NetworkPolicy %s/%s: %w", np.Namespace, np.Name, err)
		}
		res.ResourceVersion = obj.GetResourceVersion()
	case PolicyAllow:
		err := store.Delete(ctx, datastore.KindK8sNetworkPolicy, np.Namespace, np.Name, datastore.DeleteOptions{})
		res.Changed = err == nil
		if err != nil && !errors.Is(err, datastore.ErrNotFound) {
			return nil, fmt.Errorf("delete NetworkPolicy %s/%s: %w", np.Namespace, np.Name, err)
		}
	default:
		return nil, fmt.Errorf("policy action %q: want %s or %s", action, PolicyDeny, PolicyAllow)
	}
	st := s.snapshot()
	if err := waitProgrammed(ctx, st.Nodes, res.Kind, res.Namespace, res.Name, res.ResourceVersion); err != nil {
		return nil, err
	}
	res.ProgrammedAfter = time.Since(t0).Round(time.Millisecond).String()
	s.p.detail("policy %s: %s %s/%s (resourceVersion %q) programmed by every node after %s", action, res.Kind,
		res.Namespace, res.Name, res.ResourceVersion, res.ProgrammedAfter)
	res.Report = collect(ctx, &st, s.lab, true)
	return res, nil
}

// waitProgrammed waits until every node's agent reports its maps written from kind
// ns/name at resourceVersion rv ("": without it), and programmed.
func waitProgrammed(ctx context.Context, nodes []NodeState, kind, ns, name, rv string) error {
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, n := range nodes {
		wg.Go(func() {
			c := localapi.NewClient(n.Socket, agentTimeout)
			// Every 10 ms: the demo says how long the agents took.
			err := pollEach(ctx, policyTimeout, 10*time.Millisecond, func() error {
				p, err := c.Policy(ctx)
				switch {
				case err != nil:
					return err
				case !p.Enabled:
					return permanent(errors.New("policy enforcement is off"))
				case !p.Programs(kind, ns, name, rv):
					return fmt.Errorf("its maps hold %s", sourcesOf(p, kind, ns, name))
				case !p.Programmed:
					return fmt.Errorf("not programmed: %s", p.Error)
				}
				return nil
			})
			if err != nil {
				errs[i] = fmt.Errorf("node %s: %w", n.Name, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		what := "with"
		if rv == "" {
			what = "without"
		}
		return fmt.Errorf("the agents did not program their maps %s %s %s/%s within %v: %w", what, kind, ns, name, policyTimeout, err)
	}
	return nil
}

// sourcesOf says which version of kind ns/name p's maps hold.
func sourcesOf(p *localapi.PolicyStatus, kind, ns, name string) string {
	for _, s := range p.Sources {
		if s.Kind == kind && s.Namespace == ns && s.Name == name {
			return "resourceVersion " + s.ResourceVersion
		}
	}
	return "no such policy"
}
