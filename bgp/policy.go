package bgp

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/osrg/gobgp/v4/api"
)

// Action is what a PrefixPolicy does with a route.
type Action string

// Actions; the zero Action is Accept.
const (
	Accept Action = "Accept"
	Reject Action = "Reject"
)

// MatchOp compares a route's prefix with a rule's CIDR (Calico's BGPFilter operators).
type MatchOp string

// Match operators; the zero MatchOp is In.
const (
	// MatchIn: the prefix is CIDR or inside it (and its length within MinLen-MaxLen).
	MatchIn MatchOp = "In"
	// MatchEqual: the prefix is exactly CIDR.
	MatchEqual MatchOp = "Equal"
	// MatchNotIn and MatchNotEqual are the negations (within CIDR's address family).
	MatchNotIn    MatchOp = "NotIn"
	MatchNotEqual MatchOp = "NotEqual"
)

// PrefixPolicy is an ordered prefix list: the first rule that matches a route decides;
// Default decides for routes no rule matches.
type PrefixPolicy struct {
	Rules   []PrefixRule
	Default Action
}

// PrefixRule matches routes by prefix.
type PrefixRule struct {
	CIDR  netip.Prefix
	Match MatchOp
	// MinLen and MaxLen bound the prefix length for In and NotIn; 0 means CIDR's length
	// and the family's maximum (32 or 128).
	MinLen, MaxLen uint8
	Action         Action
}

func (p *PrefixPolicy) validate() error {
	if p == nil {
		return nil
	}
	if !validAction(p.Default) {
		return fmt.Errorf("default action %q is not Accept or Reject", p.Default)
	}
	for i, r := range p.Rules {
		if !r.CIDR.IsValid() {
			return fmt.Errorf("rule %d: cidr is not valid", i)
		}
		if !validAction(r.Action) {
			return fmt.Errorf("rule %d: action %q is not Accept or Reject", i, r.Action)
		}
		switch r.Match {
		case "", MatchIn, MatchEqual, MatchNotIn, MatchNotEqual:
		default:
			return fmt.Errorf("rule %d: match %q is not In, Equal, NotIn or NotEqual", i, r.Match)
		}
		if lo, hi := r.lengths(); lo > hi || hi > r.CIDR.Addr().BitLen() {
			return fmt.Errorf("rule %d: prefix length range %d-%d is empty or too long for %s", i, lo, hi, r.CIDR)
		}
	}
	return nil
}

func validAction(a Action) bool { return a == "" || a == Accept || a == Reject }

// lengths is the range of prefix lengths the rule's prefix set matches.
func (r PrefixRule) lengths() (lo, hi int) {
	bits := r.CIDR.Bits()
	if r.Match == MatchEqual || r.Match == MatchNotEqual {
		return bits, bits
	}
	lo, hi = bits, r.CIDR.Addr().BitLen()
	if int(r.MinLen) > lo {
		lo = int(r.MinLen)
	}
	if r.MaxLen != 0 {
		hi = int(r.MaxLen)
	}
	return lo, hi
}

// Matches says whether prefix matches the rule, as the router evaluates it: a rule
// never matches a prefix of the other address family, whatever its operator.
func (r PrefixRule) Matches(prefix netip.Prefix) bool {
	if prefix.Addr().BitLen() != r.CIDR.Addr().BitLen() {
		return false
	}
	lo, hi := r.lengths()
	in := prefix.Bits() >= r.CIDR.Bits() && r.CIDR.Contains(prefix.Addr()) &&
		prefix.Bits() >= lo && prefix.Bits() <= hi
	if r.Match == MatchNotIn || r.Match == MatchNotEqual {
		return !in
	}
	return in
}

// Allows says whether the policy accepts prefix; a nil policy accepts everything.
func (p *PrefixPolicy) Allows(prefix netip.Prefix) bool {
	if p == nil {
		return true
	}
	for _, r := range p.Rules {
		if r.Matches(prefix) {
			return r.Action != Reject
		}
	}
	return p.Default != Reject
}

// Names of the two global policies all per-peer statements live in. gobgp applies
// import and export policies per peer only to route-server clients; for the others the
// global policy applies, so each statement is scoped to its peer by a neighbor set.
const (
	importPolicyName = "tabby-import"
	exportPolicyName = "tabby-export"
)

// buildPolicies turns every peer's filters and next-hop mode into gobgp defined sets and
// the two global policies, peers in address order.
func buildPolicies(peers map[netip.Addr]*Peer) *api.SetPoliciesRequest {
	addrs := make([]netip.Addr, 0, len(peers))
	for a := range peers {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, func(a, b netip.Addr) int { return a.Compare(b) })

	req := &api.SetPoliciesRequest{}
	imp := &api.Policy{Name: importPolicyName}
	exp := &api.Policy{Name: exportPolicyName}
	for _, a := range addrs {
		p := peers[a]
		if !hasFilters(p) {
			continue
		}
		nbr := "tabby-nbr-" + a.String()
		req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{
			DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR,
			Name:        nbr,
			List:        []string{netip.PrefixFrom(a, a.BitLen()).String()},
		})
		if p.NextHop == NextHopAuto && len(p.ThirdPartyNextHops) > 0 {
			// gobgp matches the next hop the route had before eBGP's next-hop-self.
			nhs := make([]string, len(p.ThirdPartyNextHops))
			for i, nh := range p.ThirdPartyNextHops {
				nhs[i] = nh.String()
			}
			exp.Statements = append(exp.Statements, &api.Statement{
				Name:       "tabby-nh-" + a.String(),
				Conditions: &api.Conditions{NeighborSet: anySet(nbr), NextHopInList: nhs},
				Actions:    &api.Actions{Nexthop: &api.NexthopAction{Unchanged: true}},
			})
		}
		if p.NextHop != NextHopAuto {
			// No route action: the statement only sets the next hop and evaluation goes on.
			nh := &api.NexthopAction{Self: p.NextHop == NextHopSelf, Unchanged: p.NextHop == NextHopKeep}
			exp.Statements = append(exp.Statements, &api.Statement{
				Name:       "tabby-nh-" + a.String(),
				Conditions: &api.Conditions{NeighborSet: anySet(nbr)},
				Actions:    &api.Actions{Nexthop: nh},
			})
		}
		imp.Statements = appendFilter(req, imp.Statements, p.Import, nbr, "tabby-imp-"+a.String())
		exp.Statements = appendFilter(req, exp.Statements, p.Export, nbr, "tabby-exp-"+a.String())
	}
	req.Policies = []*api.Policy{imp, exp}
	return req
}

// appendFilter adds a peer's rules (one prefix set each) and, if it rejects by default,
// a last statement rejecting whatever else comes from or goes to that peer.
func appendFilter(req *api.SetPoliciesRequest, stmts []*api.Statement, f *PrefixPolicy, nbr, name string) []*api.Statement {
	if f == nil {
		return stmts
	}
	for i, r := range f.Rules {
		set := fmt.Sprintf("%s-%d", name, i)
		lo, hi := r.lengths()
		req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{
			DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX,
			Name:        set,
			Prefixes: []*api.Prefix{{IpPrefix: r.CIDR.Masked().String(),
				MaskLengthMin: uint32(lo), MaskLengthMax: uint32(hi)}},
		})
		match := anySet(set)
		if r.Match == MatchNotIn || r.Match == MatchNotEqual {
			match.Type = api.MatchSet_TYPE_INVERT
		}
		stmts = append(stmts, &api.Statement{
			Name:       set,
			Conditions: &api.Conditions{NeighborSet: anySet(nbr), PrefixSet: match},
			Actions:    &api.Actions{RouteAction: routeAction(r.Action)},
		})
	}
	if f.Default == Reject {
		stmts = append(stmts, &api.Statement{
			Name:       name + "-default",
			Conditions: &api.Conditions{NeighborSet: anySet(nbr)},
			Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT},
		})
	}
	return stmts
}

func anySet(name string) *api.MatchSet {
	return &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: name}
}

func routeAction(a Action) api.RouteAction {
	if a == Reject {
		return api.RouteAction_ROUTE_ACTION_REJECT
	}
	return api.RouteAction_ROUTE_ACTION_ACCEPT
}

func hasFilters(p *Peer) bool {
	return p.Import != nil || p.Export != nil || p.NextHop != NextHopAuto || len(p.ThirdPartyNextHops) > 0
}

// filtersEqual says whether two peers have the same filters and next-hop mode.
func filtersEqual(a, b *Peer) bool {
	return a.NextHop == b.NextHop && slices.Equal(a.ThirdPartyNextHops, b.ThirdPartyNextHops) && policyEqual(a.Import, b.Import) && policyEqual(a.Export, b.Export)
}

func policyEqual(a, b *PrefixPolicy) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Default == b.Default && slices.Equal(a.Rules, b.Rules)
}
