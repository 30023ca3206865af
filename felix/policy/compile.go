package policy

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	v1 "github.com/tabbynet/tabby/api/v1"
)

// Compile turns the input into lookup tables. It is pure: no I/O, no global state.
func Compile(in *Input) (*Compiled, error) {
	n := &normaliser{in: in}
	policies, err := n.policies()
	if err != nil {
		return nil, err
	}
	eps := make([]*Endpoint, len(in.Endpoints))
	for i := range in.Endpoints {
		eps[i] = &in.Endpoints[i]
	}
	sort.SliceStable(eps, func(i, j int) bool { return eps[i].Key() < eps[j].Key() })
	for _, p := range policies {
		for d := range p.rules {
			p.rules[d], err = expandPeerNamedPorts(p.rules[d], eps)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", p.name, err)
			}
		}
	}
	c := &Compiled{Rules: n.rules}
	cl := newClassifier(in, eps, policies)
	c.Classes, c.IPCache = cl.classes, cl.ipcache
	for i, ep := range eps {
		t := EndpointTables{ID: uint32(i + 1), Key: ep.Key(), IPs: ep.IPs, Problems: cl.problems[ep.Key()]}
		ids := cl.localIdentities(ep)
		nsL, saL := in.Namespaces[ep.Namespace], in.ServiceAccounts[ep.Namespace+"/"+ep.ServiceAccount]
		for d := range 2 {
			var rules []*lRule
			selected := false
			for _, p := range policies {
				if !p.types[d] || !p.applies(ep, nsL, saL) {
					continue
				}
				selected = true
				for _, r := range p.rules[d] {
					if lr := instantiate(r, ep, ids); lr != nil {
						rules = append(rules, lr)
					}
				}
			}
			dt := DirTable{Selected: selected, Default: Decision{Verdict: Allow, Reason: ReasonNoPolicy, RuleID: -1}}
			if selected {
				dt.Default = Decision{Verdict: Deny, Reason: ReasonEndOfTier, RuleID: -1}
				dt.Entries = cl.table(rules, dt.Default)
			}
			if d == int(Ingress) {
				t.Ingress = dt
			} else {
				t.Egress = dt
			}
		}
		c.Endpoints = append(c.Endpoints, t)
	}
	return c, nil
}

// byName returns the indexes 0..n-1 sorted by key(i): rule ids are given in that order,
// so they do not depend on the order of the input lists (a watch cache's map order).
func byName(n int, key func(i int) string) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(a, b int) bool { return key(idx[a]) < key(idx[b]) })
	return idx
}

// policies normalises every policy of the input and sorts them by order, then name.
func (n *normaliser) policies() ([]*pPolicy, error) {
	var out []*pPolicy
	in := n.in
	for _, i := range byName(len(in.KubePolicies), func(i int) string {
		return in.KubePolicies[i].Namespace + "/" + in.KubePolicies[i].Name
	}) {
		p, err := n.kubePolicy(&n.in.KubePolicies[i])
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
		out = append(out, p)
	}
	for _, i := range byName(len(in.Policies), func(i int) string {
		return in.Policies[i].Namespace + "/" + in.Policies[i].Name
	}) {
		o := &n.in.Policies[i]
		s := o.Spec
		p, err := n.tabbyPolicy(o, "np "+o.Namespace+"/"+o.Name, o.Namespace, s.Order, s.Selector, "",
			s.ServiceAccountSelector, s.Types, s.Ingress, s.Egress)
		if err != nil {
			return nil, wrapInvalid(err)
		}
		out = append(out, p)
	}
	for _, i := range byName(len(in.GlobalPolicies), func(i int) string { return in.GlobalPolicies[i].Name }) {
		o := &n.in.GlobalPolicies[i]
		s := o.Spec
		p, err := n.tabbyPolicy(o, "gnp "+o.Name, "", s.Order, s.Selector, s.NamespaceSelector,
			s.ServiceAccountSelector, s.Types, s.Ingress, s.Egress)
		if err != nil {
			return nil, wrapInvalid(err)
		}
		out = append(out, p)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].order != out[j].order {
			return out[i].order < out[j].order
		}
		return out[i].name < out[j].name
	})
	return out, nil
}

func wrapInvalid(err error) error {
	if isUnsupported(err) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrInvalid, err)
}

// expandPeerNamedPorts replaces a rule whose destination ports name ports of the peer by
// one rule for its numeric ports plus one per distinct resolution of each name, with the
// resolution folded into the peer matcher (so it becomes part of the peer class).
func expandPeerNamedPorts(rules []*pRule, eps []*Endpoint) ([]*pRule, error) {
	var out []*pRule
	for _, r := range rules {
		if !r.portsOnPeer || !hasNamed(r.ports) && !hasNamed(r.notPorts) {
			out = append(out, r)
			continue
		}
		if hasNamed(r.notPorts) {
			return nil, fmt.Errorf("named notPorts on the peer side: %w", ErrUnsupported)
		}
		var numeric []portSpec
		for _, p := range r.ports {
			if p.name == "" {
				numeric = append(numeric, p)
			}
		}
		if len(numeric) > 0 {
			nr := *r
			nr.ports = numeric
			out = append(out, &nr)
		}
		proto := uint8(0)
		if len(r.protos) == 1 {
			proto = r.protos[0]
		}
		for _, p := range r.ports {
			if p.name == "" {
				continue
			}
			var found []uint16
			for _, ep := range eps {
				for _, np := range ep.NamedPorts {
					if np.Name == p.name && np.Proto == proto && !slices.Contains(found, np.Port) {
						found = append(found, np.Port)
					}
				}
			}
			slices.Sort(found)
			for _, port := range found {
				nr := *r
				nr.peer = and(r.peer, matchNamedPort{name: p.name, proto: proto, port: port})
				nr.ports = []portSpec{{first: port, last: port}}
				out = append(out, &nr)
			}
		}
	}
	return out, nil
}

func hasNamed(ps []portSpec) bool {
	return slices.ContainsFunc(ps, func(p portSpec) bool { return p.name != "" })
}

// lRule is a rule instantiated for one local endpoint: named ports resolved, local side
// checked, peer reduced to its index among the classifier's matchers.
type lRule struct {
	id        int32
	action    v1.Action
	protos    []uint8
	notProtos []uint8
	peer      int        // index into classifier.matchers
	ports     []portSpec // numeric only
	notPorts  []portSpec
	hasPorts  bool
}

// instantiate resolves a rule for ep, or returns nil if it can never match there.
func instantiate(r *pRule, ep *Endpoint, ids []*identity) *lRule {
	for _, id := range ids {
		if !r.local.match(id) {
			return nil
		}
	}
	proto := uint8(0)
	if len(r.protos) == 1 {
		proto = r.protos[0]
	}
	resolve := func(ps []portSpec) []portSpec {
		var out []portSpec
		for _, p := range ps {
			if p.name == "" {
				out = append(out, p)
				continue
			}
			for _, np := range ep.NamedPorts {
				if np.Name == p.name && np.Proto == proto {
					out = append(out, portSpec{first: np.Port, last: np.Port})
				}
			}
		}
		return out
	}
	l := &lRule{id: r.id, action: r.action, protos: r.protos, notProtos: r.notProtos, hasPorts: r.hasPorts,
		ports: resolve(r.ports), notPorts: resolve(r.notPorts), peer: r.peerIdx}
	if l.hasPorts && len(l.ports) == 0 {
		return nil
	}
	return l
}

func isUnsupported(err error) bool { return errors.Is(err, ErrUnsupported) }
