package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"

	v1 "github.com/tabbynet/tabby/api/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// ErrInvalid is wrapped by every error Compile returns for input it cannot accept.
var ErrInvalid = errors.New("invalid policy input")

// ErrUnsupported is wrapped by errors for valid rules this compiler cannot yet express
// in the lookup tables (source ports, named notPorts on the peer).
var ErrUnsupported = errors.New("unsupported policy feature")

// IP protocol numbers used by the compiler.
const (
	ProtoICMP   uint8 = 1
	ProtoTCP    uint8 = 6
	ProtoUDP    uint8 = 17
	ProtoICMPv6 uint8 = 58
	ProtoSCTP   uint8 = 132
)

// NamedPort is a port name an endpoint serves, e.g. "http" -> TCP/8080.
type NamedPort struct {
	Name  string
	Proto uint8
	Port  uint16
}

// Endpoint is a workload endpoint as the compiler sees it.
type Endpoint struct {
	Namespace      string
	Name           string
	IPs            []netip.Addr
	Labels         map[string]string
	ServiceAccount string
	NamedPorts     []NamedPort
}

// Key is "namespace/name".
func (e *Endpoint) Key() string { return e.Namespace + "/" + e.Name }

// EndpointFromWorkload converts a WorkloadEndpoint; the pod name is the workload name.
func EndpointFromWorkload(w *v1.WorkloadEndpoint) (Endpoint, error) {
	ep := Endpoint{Namespace: w.Namespace, Name: w.Spec.Workload, Labels: w.Labels,
		ServiceAccount: w.Spec.ServiceAccountName}
	if ep.Name == "" {
		ep.Name = w.Name
	}
	for _, s := range w.Spec.IPNetworks {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, err2 := netip.ParseAddr(s)
			if err2 != nil {
				return Endpoint{}, fmt.Errorf("endpoint %s: ipNetworks %q: %w", ep.Key(), s, ErrInvalid)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		ep.IPs = append(ep.IPs, p.Addr().Unmap())
	}
	for _, p := range w.Spec.Ports {
		n, err := v1.ProtocolNumber(intOrStr(p.Protocol))
		if err != nil {
			return Endpoint{}, fmt.Errorf("endpoint %s: port %q: %w", ep.Key(), p.Name, err)
		}
		ep.NamedPorts = append(ep.NamedPorts, NamedPort{Name: p.Name, Proto: uint8(n), Port: p.Port})
	}
	return ep, nil
}

// Input is everything the compiler reads. It is not modified.
type Input struct {
	// Namespaces maps a namespace name to its labels.
	Namespaces map[string]map[string]string
	// ServiceAccounts maps "namespace/name" to the service account's labels.
	ServiceAccounts map[string]map[string]string
	Endpoints       []Endpoint
	// KubePolicies are networking.k8s.io/v1 NetworkPolicies.
	KubePolicies      []networkingv1.NetworkPolicy
	Policies          []v1.NetworkPolicy
	GlobalPolicies    []v1.GlobalNetworkPolicy
	NetworkSets       []v1.NetworkSet
	GlobalNetworkSets []v1.GlobalNetworkSet
}

// Verdict is the outcome of a lookup.
type Verdict uint8

// Verdicts.
const (
	Deny Verdict = iota
	Allow
)

func (v Verdict) String() string {
	if v == Allow {
		return "allow"
	}
	return "deny"
}

// Reason says why a decision was taken.
type Reason uint8

// Reasons.
const (
	// ReasonNoPolicy: no policy selects the endpoint in this direction (allow).
	ReasonNoPolicy Reason = iota
	// ReasonRule: an Allow or Deny rule matched first.
	ReasonRule
	// ReasonPass: a Pass rule matched first; the profile allows.
	ReasonPass
	// ReasonEndOfTier: policies select the endpoint but no rule matched (deny).
	ReasonEndOfTier
)

func (r Reason) String() string {
	return [...]string{"no-policy", "rule", "pass", "end-of-tier"}[r]
}

// Decision is what a table entry holds: the verdict and, for rule and pass reasons, the
// id of the deciding rule in Compiled.Rules (-1 otherwise). Log is set when a Log rule
// matched before the decision was taken (whatever decided, an end-of-tier default
// included); LogRuleID is then the first such rule's id. The datapath reports the
// packet naming that rule, then applies the verdict.
type Decision struct {
	Verdict   Verdict
	Reason    Reason
	RuleID    int32
	Log       bool
	LogRuleID int32
}

// ICMPPort is the value that stands for an ICMP (or ICMPv6) packet's type and code
// wherever a destination port goes (Evaluator.Verdict, table entries): type<<8 | code.
// A rule's icmp {type} is the port block of that type (8 bits), {type, code} one port.
func ICMPPort(typ, code uint8) uint16 { return uint16(typ)<<8 | uint16(code) }

// isICMP reports whether proto's "port" is ICMPPort(type, code).
func isICMP(proto uint8) bool { return proto == ProtoICMP || proto == ProtoICMPv6 }

// Direction of traffic relative to the endpoint a table belongs to.
type Direction uint8

// Directions.
const (
	Ingress Direction = iota
	Egress
)

func (d Direction) String() string {
	if d == Egress {
		return "egress"
	}
	return "ingress"
}

// RuleRef names a source rule, for counters and explain.
type RuleRef struct {
	// Policy is "kind namespace/name" (or "kind name" for global kinds).
	Policy    string
	Direction Direction
	// Index of the rule in the policy's ingress or egress list.
	Index  int
	Action v1.Action
}

func (r RuleRef) String() string {
	return fmt.Sprintf("%s %s[%d] %s", r.Policy, r.Direction, r.Index, r.Action)
}

// Level says which part of the policy key an entry fixes (its LPM prefix).
type Level uint8

// Levels, from least to most specific.
const (
	// LevelClass: any protocol, any port.
	LevelClass Level = iota
	// LevelProto: the protocol, any port.
	LevelProto
	// LevelPort: the protocol and the top PortBits bits of the port.
	LevelPort
)

// Entry is one row of a policy LPM table of one endpoint and direction.
type Entry struct {
	Class    uint32
	Level    Level
	Proto    uint8
	Port     uint16
	PortBits uint8
	Decision Decision
}

// PrefixLen is the entry's LPM prefix length over the key {class u32, proto u8, port u16}.
func (e Entry) PrefixLen() int {
	switch e.Level {
	case LevelClass:
		return 32
	case LevelProto:
		return 40
	}
	return 40 + int(e.PortBits)
}

// DirTable is the table of one endpoint in one direction.
type DirTable struct {
	// Selected: some policy selects the endpoint in this direction.
	Selected bool
	// Default is used when no entry matches (no-policy allow, or end-of-tier deny).
	Default Decision
	Entries []Entry
}

// EndpointTables holds the tables of one endpoint.
type EndpointTables struct {
	ID       uint32
	Key      string
	IPs      []netip.Addr
	Ingress  DirTable
	Egress   DirTable
	Problems []string
}

// IPCacheEntry maps an address or CIDR to a peer class.
type IPCacheEntry struct {
	Prefix netip.Prefix
	Class  uint32
}

// Class describes a peer class: what its members are (for explain and golden files).
type Class struct {
	ID      uint32
	Members []string
}

// Compiled is the compiler's output. Build lookups with NewEvaluator.
type Compiled struct {
	Rules     []RuleRef
	Classes   []Class
	IPCache   []IPCacheEntry
	Endpoints []EndpointTables
}

func sortEntries(es []Entry) {
	sort.Slice(es, func(i, j int) bool {
		a, b := es[i], es[j]
		if a.Class != b.Class {
			return a.Class < b.Class
		}
		if a.Level != b.Level {
			return a.Level < b.Level
		}
		if a.Proto != b.Proto {
			return a.Proto < b.Proto
		}
		if a.Port != b.Port {
			return a.Port < b.Port
		}
		return a.PortBits < b.PortBits
	})
}
