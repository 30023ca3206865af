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
// default. For ICMP and ICMPv6 the port is HashICMPExact(type, code) or
// HashICMPType(type), and the program probes (proto, exact), (proto, type), (proto, 0),
// (0, 0) per class.
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

// DatapathLogRuleID is the log rule id the datapath stores for a decision: the Log
// rule's id shifted like DatapathRuleID, 0 when no Log rule matched.
func DatapathLogRuleID(d Decision) uint32 {
	if !d.Log || d.LogRuleID < 0 {
		return 0
	}
	return uint32(d.LogRuleID) + 1
}

// HashICMPExact is the hash layout's port of an ICMP type and code: (type+1)<<8 | code,
// never below 256. Type 255 has no encoding (see HashEntries).
func HashICMPExact(typ, code uint8) uint16 { return (uint16(typ)+1)<<8 | uint16(code) }

// HashICMPType is the hash layout's port of every code of an ICMP type: type+1 (1-255).
func HashICMPType(typ uint8) uint16 { return uint16(typ) + 1 }

// HashEntries expands the LPM tables into exact-match hash entries: class and protocol
// entries map one to one, each port block becomes one entry per port. Port 0 is the
// wildcard of the hash layout, so a block's port 0 is dropped: a TCP/UDP/SCTP packet to
// destination port 0 gets its protocol's decision. For ICMP and ICMPv6 a block of whole
// types becomes one HashICMPType entry per type, a block inside one type one
// HashICMPExact entry per code; type 255 (reserved) has no entry, so it gets its
// protocol's decision. maxPerTable (0: no limit) caps the entries of one endpoint and
// direction; beyond it the error wraps ErrTooLarge.
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
					if isICMP(e.Proto) {
						out = appendICMPBlock(out, h, e)
						break
					}
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

// appendICMPBlock expands one ICMP port block (see ICMPPort) into hash entries.
func appendICMPBlock(out []HashEntry, h HashEntry, e Entry) []HashEntry {
	first, size := uint32(e.Port), uint32(1)<<(16-e.PortBits)
	if e.PortBits <= 8 { // whole types
		for t := first >> 8; t < (first+size)>>8; t++ {
			if t < 255 {
				h.Port = HashICMPType(uint8(t))
				out = append(out, h)
			}
		}
		return out
	}
	t := uint8(first >> 8)
	if t == 255 {
		return out
	}
	for p := first; p < first+size; p++ {
		h.Port = HashICMPExact(t, uint8(p))
		out = append(out, h)
	}
	return out
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
// (at most 6 per direction for the policy map, 8 for ICMP). For ICMP, port is
// ICMPPort(type, code), as for Evaluator.Verdict.
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
		for _, try := range probes(proto, port) {
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

type hashProbe struct {
	proto uint8
	port  uint16
}

// probes are the (proto, port) keys the datapath tries for one class, most specific
// first: the exact port (left out when it is 0, the wildcard), any port, any protocol;
// for ICMP the exact type and code, the type, any, any protocol (type 255: the last two).
func probes(proto uint8, port uint16) []hashProbe {
	if isICMP(proto) {
		typ, code := uint8(port>>8), uint8(port)
		if typ == 255 {
			return []hashProbe{{proto, 0}, {0, 0}}
		}
		return []hashProbe{{proto, HashICMPExact(typ, code)}, {proto, HashICMPType(typ)}, {proto, 0}, {0, 0}}
	}
	if port == 0 {
		return []hashProbe{{proto, 0}, {0, 0}}
	}
	return []hashProbe{{proto, port}, {proto, 0}, {0, 0}}
}
