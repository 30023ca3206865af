package policy

import (
	"errors"
	"fmt"
	"net/netip"
)

// ErrTooLarge is wrapped when exact-match expansion would exceed the caller's limit.
var ErrTooLarge = errors.New("policy table too large")

// ClassAny is the peer class of hash entries that match every class (never emitted by
// HashEntries, listed because the datapath looks it up).
const ClassAny uint32 = 0xffffffff

// HashEntry is one entry of an exact-match policy hash map with wildcards, the layout
// the ebpf/ datapath reads (its PolicyKey/PolicyValue): Proto 0 = any protocol, Port 0
// = any port. The datapath looks up (proto, port, class), (proto, 0, class),
// (0, 0, class), then the same with ClassAny; the first hit decides, else the endpoint's
// default.
type HashEntry struct {
	Endpoint  uint32
	Direction Direction
	Proto     uint8
	Port      uint16
	Class     uint32
	Decision  Decision
}

// DatapathRuleID is the rule id the datapath stores for a decision: rule ids shift by
// one because the datapath reserves 0 for endpoint defaults.
func DatapathRuleID(d Decision) uint32 {
	if d.RuleID < 0 {
		return 0
	}
	return uint32(d.RuleID) + 1
}

// HashEntries expands the LPM tables into exact-match hash entries: class and protocol
// entries map one to one, each port block becomes one entry per port. Port 0 is the
// wildcard of the hash layout, so a block's port 0 is dropped: a TCP/UDP/SCTP packet to
// destination port 0 gets its protocol's decision. maxPerTable (0: no limit) caps the
// entries of one endpoint and direction; beyond it the error wraps ErrTooLarge.
func (c *Compiled) HashEntries(maxPerTable int) ([]HashEntry, error) {
	var out []HashEntry
	for _, t := range c.Endpoints {
		for d, dt := range [2]*DirTable{&t.Ingress, &t.Egress} {
			start := len(out)
			for _, e := range dt.Entries {
				h := HashEntry{Endpoint: t.ID, Direction: Direction(d), Class: e.Class, Decision: e.Decision}
				switch e.Level {
				case LevelClass:
					out = append(out, h)
				case LevelProto:
					h.Proto = e.Proto
					out = append(out, h)
				case LevelPort:
					h.Proto = e.Proto
					size := uint32(1) << (16 - e.PortBits)
					for p := uint32(e.Port); p < uint32(e.Port)+size; p++ {
						if p == 0 {
							continue
						}
						h.Port = uint16(p)
						out = append(out, h)
					}
				}
				if maxPerTable > 0 && len(out)-start > maxPerTable {
					return nil, fmt.Errorf("endpoint %s %s: more than %d entries: %w", t.Key, Direction(d), maxPerTable, ErrTooLarge)
				}
			}
		}
	}
	return out, nil
}

type hashKey struct {
	ep    uint32
	dir   Direction
	proto uint8
	port  uint16
	class uint32
}

// HashEvaluator answers verdicts from hash entries exactly as the datapath does.
type HashEvaluator struct {
	ev      *Evaluator // for the endpoint config and the ipcache
	entries map[hashKey]Decision
}

// NewHashEvaluator indexes the hash entries of c (from HashEntries) for lookups.
func NewHashEvaluator(c *Compiled, entries []HashEntry) *HashEvaluator {
	h := &HashEvaluator{ev: NewEvaluator(c), entries: make(map[hashKey]Decision, len(entries))}
	for _, e := range entries {
		h.entries[hashKey{e.Endpoint, e.Direction, e.Proto, e.Port, e.Class}] = e.Decision
	}
	return h
}

// Verdict is Evaluator.Verdict over the hash layout; Lookups counts every hash probe
// (at most 6 per direction for the policy map).
func (h *HashEvaluator) Verdict(src, dst netip.Addr, proto uint8, port uint16) Result {
	src, dst = src.Unmap(), dst.Unmap()
	r := Result{
		Egress:  h.step(src, dst, Egress, proto, port),
		Ingress: h.step(dst, src, Ingress, proto, port),
	}
	r.Allowed = r.Egress.Decision.Verdict == Allow && r.Ingress.Decision.Verdict == Allow
	return r
}

func (h *HashEvaluator) step(local, peer netip.Addr, dir Direction, proto uint8, port uint16) Step {
	i, ok := h.ev.byIP[local]
	if !ok {
		return Step{Decision: Decision{Verdict: Allow, Reason: ReasonNoPolicy, RuleID: -1}}
	}
	t := &h.ev.c.Endpoints[i]
	dt := &t.Ingress
	if dir == Egress {
		dt = &t.Egress
	}
	s := Step{Endpoint: t.Key, Lookups: 1}
	if !dt.Selected {
		s.Decision = dt.Default
		return s
	}
	s.Lookups++
	s.PeerClass = h.ev.classOf(peer)
	for _, class := range []uint32{s.PeerClass, ClassAny} {
		k := hashKey{t.ID, dir, proto, port, class}
		for _, try := range []struct {
			proto uint8
			port  uint16
		}{{proto, port}, {proto, 0}, {0, 0}}[skip(port):] {
			k.proto, k.port = try.proto, try.port
			s.Lookups++
			if d, ok := h.entries[k]; ok {
				s.Decision = d
				return s
			}
		}
	}
	s.Decision = dt.Default
	return s
}

// skip is how many probes of (port), (any port), (any proto) the datapath leaves out:
// the exact-port probe when the port is 0 (the wildcard).
func skip(port uint16) int {
	if port == 0 {
		return 1
	}
	return 0
}
