package policy

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/tabbynet/tabby/api/v1/selector"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// identity is one thing a peer address can be: an endpoint's address, or a CIDR
// fragment (the addresses whose longest mentioned prefix is prefix).
type identity struct {
	ep       *Endpoint // nil for a fragment
	prefix   netip.Prefix
	nsLabels map[string]string
	saLabels map[string]string
}

// inNet reports whether every address of the identity is inside c.
func (id *identity) inNet(c netip.Prefix) bool {
	if !id.prefix.IsValid() || c.Addr().Is4() != id.prefix.Addr().Is4() {
		return false
	}
	return c.Bits() <= id.prefix.Bits() && c.Contains(id.prefix.Addr())
}

// matcher is a predicate over identities. key is canonical: equal keys, equal predicates.
type matcher interface {
	key() string
	match(id *identity) bool
}

type matchAll struct{}

func (matchAll) key() string          { return "all" }
func (matchAll) match(*identity) bool { return true }

type matchNets struct{ nets []netip.Prefix }

func (m matchNets) key() string {
	s := make([]string, len(m.nets))
	for i, n := range m.nets {
		s[i] = n.String()
	}
	return "nets(" + strings.Join(s, ",") + ")"
}

func (m matchNets) match(id *identity) bool {
	for _, n := range m.nets {
		if id.inNet(n) {
			return true
		}
	}
	return false
}

type matchFamily struct{ v4 bool }

func (m matchFamily) key() string {
	if m.v4 {
		return "ipv4"
	}
	return "ipv6"
}

func (m matchFamily) match(id *identity) bool {
	return id.prefix.IsValid() && id.prefix.Addr().Is4() == m.v4
}

// matchKubePeer is a Kubernetes peer selector: pods (endpoints only) chosen by a pod
// selector in the namespace ns, or in namespaces chosen by nsSel when it is set.
type matchKubePeer struct {
	pods  labels.Selector
	ns    string
	nsSel labels.Selector
}

func (m matchKubePeer) key() string {
	k := "kpods(" + m.pods.String() + ")"
	if m.nsSel != nil {
		return k + " in kns(" + m.nsSel.String() + ")"
	}
	return k + " in ns " + m.ns
}

func (m matchKubePeer) match(id *identity) bool {
	if id.ep == nil {
		return false
	}
	if m.nsSel != nil {
		if !m.nsSel.Matches(labels.Set(id.nsLabels)) {
			return false
		}
	} else if id.ep.Namespace != m.ns {
		return false
	}
	return m.pods.Matches(labels.Set(id.ep.Labels))
}

// matchSelector is a Tabby entity selector: endpoints whose labels match sel and whose
// namespace is ns (when set) or matches nsSel (when set), plus addresses inside the nets
// of network sets chosen the same way (resolved at construction into sets).
type matchSelector struct {
	sel   *selector.Selector
	ns    string
	nsSel *selector.Selector
	sets  []netip.Prefix
}

func (m matchSelector) key() string {
	k := "sel(" + m.sel.String() + ")"
	switch {
	case m.nsSel != nil:
		k += " in nssel(" + m.nsSel.String() + ")"
	case m.ns != "":
		k += " in ns " + m.ns
	}
	return k + " sets" + matchNets{m.sets}.key()
}

func (m matchSelector) match(id *identity) bool {
	if id.ep != nil && m.inScope(id.ep.Namespace, id.nsLabels) && m.sel.Evaluate(id.ep.Labels) {
		return true
	}
	return matchNets{m.sets}.match(id)
}

func (m matchSelector) inScope(ns string, nsLabels map[string]string) bool {
	if m.nsSel != nil {
		return m.nsSel.Evaluate(nsLabels)
	}
	return m.ns == "" || m.ns == ns
}

type matchServiceAccount struct {
	names []string
	sel   *selector.Selector // nil: names only
	ns    string
}

func (m matchServiceAccount) key() string {
	k := "sa(" + strings.Join(m.names, ",") + ")"
	if m.sel != nil {
		k += " sasel(" + m.sel.String() + ")"
	}
	return k + " in ns " + m.ns
}

func (m matchServiceAccount) match(id *identity) bool {
	if id.ep == nil || id.ep.ServiceAccount == "" || (m.ns != "" && id.ep.Namespace != m.ns) {
		return false
	}
	if len(m.names) > 0 && !slices.Contains(m.names, id.ep.ServiceAccount) {
		return false
	}
	return m.sel == nil || m.sel.Evaluate(id.saLabels)
}

// matchNamedPort: the peer is an endpoint whose named port name/proto is port.
type matchNamedPort struct {
	name  string
	proto uint8
	port  uint16
}

func (m matchNamedPort) key() string {
	return "namedport(" + m.name + "/" + strconv.Itoa(int(m.proto)) + "=" + strconv.Itoa(int(m.port)) + ")"
}

func (m matchNamedPort) match(id *identity) bool {
	if id.ep == nil {
		return false
	}
	for _, np := range id.ep.NamedPorts {
		if np.Name == m.name && np.Proto == m.proto && np.Port == m.port {
			return true
		}
	}
	return false
}

type matchNot struct{ m matcher }

func (m matchNot) key() string             { return "!" + m.m.key() }
func (m matchNot) match(id *identity) bool { return !m.m.match(id) }

type matchAnd struct{ parts []matcher }

func (m matchAnd) key() string {
	s := make([]string, len(m.parts))
	for i, p := range m.parts {
		s[i] = p.key()
	}
	return "(" + strings.Join(s, " && ") + ")"
}

func (m matchAnd) match(id *identity) bool {
	for _, p := range m.parts {
		if !p.match(id) {
			return false
		}
	}
	return true
}

// and combines matchers, dropping matchAll.
func and(ms ...matcher) matcher {
	var parts []matcher
	for _, m := range ms {
		switch t := m.(type) {
		case matchAll:
		case matchAnd:
			parts = append(parts, t.parts...)
		default:
			parts = append(parts, m)
		}
	}
	switch len(parts) {
	case 0:
		return matchAll{}
	case 1:
		return parts[0]
	}
	return matchAnd{parts}
}

// prefixesOf appends every CIDR a matcher mentions.
func prefixesOf(m matcher, dst []netip.Prefix) []netip.Prefix {
	switch t := m.(type) {
	case matchNets:
		return append(dst, t.nets...)
	case matchSelector:
		return append(dst, t.sets...)
	case matchNot:
		return prefixesOf(t.m, dst)
	case matchAnd:
		for _, p := range t.parts {
			dst = prefixesOf(p, dst)
		}
	}
	return dst
}

func intOrStr(s string) intstr.IntOrString { return intstr.FromString(s) }
