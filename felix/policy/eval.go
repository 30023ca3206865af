package policy

import (
	"net/netip"
	"slices"
)

// tableKey is a policy LPM key with its prefix length folded in (bits = port bits kept).
type tableKey struct {
	ep    uint32
	dir   Direction
	class uint32
	level Level
	proto uint8
	port  uint16
	bits  uint8
}

// Evaluator answers verdicts from a Compiled the way the BPF program will: it reads the
// endpoint's config (one lookup), the peer's class from the ipcache LPM (one lookup) and
// the decision from the policy LPM (one lookup), else the endpoint's default.
type Evaluator struct {
	c        *Compiled
	byIP     map[netip.Addr]int
	ipcache  map[netip.Prefix]uint32
	ipLens   [2][]int // per family (0: v4, 1: v6), prefix lengths in use, longest first
	policy   map[tableKey]Decision
	portLens []uint8 // port prefix lengths in use, longest first
}

// NewEvaluator indexes a Compiled for lookups.
func NewEvaluator(c *Compiled) *Evaluator {
	e := &Evaluator{c: c, byIP: map[netip.Addr]int{}, ipcache: map[netip.Prefix]uint32{},
		policy: map[tableKey]Decision{}}
	for i, t := range c.Endpoints {
		for _, a := range t.IPs {
			if _, dup := e.byIP[a]; !dup {
				e.byIP[a] = i
			}
		}
		for d, dt := range [2]*DirTable{&t.Ingress, &t.Egress} {
			for _, en := range dt.Entries {
				k := tableKey{ep: t.ID, dir: Direction(d), class: en.Class, level: en.Level, proto: en.Proto,
					port: en.Port, bits: en.PortBits}
				e.policy[k] = en.Decision
				if en.Level == LevelPort && !slices.Contains(e.portLens, en.PortBits) {
					e.portLens = append(e.portLens, en.PortBits)
				}
			}
		}
	}
	slices.Sort(e.portLens)
	slices.Reverse(e.portLens)
	for _, en := range c.IPCache {
		e.ipcache[en.Prefix] = en.Class
		f := family(en.Prefix.Addr())
		if !slices.Contains(e.ipLens[f], en.Prefix.Bits()) {
			e.ipLens[f] = append(e.ipLens[f], en.Prefix.Bits())
		}
	}
	for f := range e.ipLens {
		slices.Sort(e.ipLens[f])
		slices.Reverse(e.ipLens[f])
	}
	return e
}

func family(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

// Step is the outcome of one direction.
type Step struct {
	// Endpoint enforcing this direction ("" when the address is no endpoint: not enforced).
	Endpoint  string
	PeerClass uint32
	Decision  Decision
	// Lookups is the number of map lookups the BPF program makes for this step.
	Lookups int
}

// Result is the verdict for a packet: egress at the source endpoint, then ingress at the
// destination endpoint; it is allowed when both allow.
type Result struct {
	Allowed bool
	Egress  Step
	Ingress Step
}

// Lookups is the total number of map lookups.
func (r Result) Lookups() int { return r.Egress.Lookups + r.Ingress.Lookups }

// Verdict evaluates a packet from src to dst with protocol proto and destination port.
func (e *Evaluator) Verdict(src, dst netip.Addr, proto uint8, port uint16) Result {
	src, dst = src.Unmap(), dst.Unmap()
	r := Result{
		Egress:  e.step(src, dst, Egress, proto, port),
		Ingress: e.step(dst, src, Ingress, proto, port),
	}
	r.Allowed = r.Egress.Decision.Verdict == Allow && r.Ingress.Decision.Verdict == Allow
	return r
}

// step evaluates one direction at the endpoint owning local against the peer address.
func (e *Evaluator) step(local, peer netip.Addr, dir Direction, proto uint8, port uint16) Step {
	i, ok := e.byIP[local]
	if !ok {
		return Step{Decision: Decision{Verdict: Allow, Reason: ReasonNoPolicy, RuleID: -1}}
	}
	t := &e.c.Endpoints[i]
	dt := &t.Ingress
	if dir == Egress {
		dt = &t.Egress
	}
	s := Step{Endpoint: t.Key, Lookups: 1} // endpoint config: id, defaults
	if !dt.Selected {
		s.Decision = dt.Default
		return s
	}
	s.Lookups++ // ipcache LPM
	s.PeerClass = e.classOf(peer)
	s.Lookups++ // policy LPM
	if d, ok := e.lookupPolicy(t.ID, dir, s.PeerClass, proto, port); ok {
		s.Decision = d
	} else {
		s.Decision = dt.Default
	}
	return s
}

// classOf is the ipcache longest-prefix match.
func (e *Evaluator) classOf(a netip.Addr) uint32 {
	f := family(a)
	for _, bits := range e.ipLens[f] {
		p, _ := a.Prefix(bits)
		if c, ok := e.ipcache[p]; ok {
			return c
		}
	}
	return 0
}

// lookupPolicy is the policy longest-prefix match over {class, proto, port}.
func (e *Evaluator) lookupPolicy(ep uint32, dir Direction, class uint32, proto uint8, port uint16) (Decision, bool) {
	k := tableKey{ep: ep, dir: dir, class: class, level: LevelPort, proto: proto}
	for _, bits := range e.portLens {
		k.bits = bits
		k.port = port &^ uint16((uint32(1)<<(16-bits))-1)
		if d, ok := e.policy[k]; ok {
			return d, true
		}
	}
	k.port, k.bits = 0, 0
	k.level = LevelProto
	if d, ok := e.policy[k]; ok {
		return d, true
	}
	k.level, k.proto = LevelClass, 0
	d, ok := e.policy[k]
	return d, ok
}
