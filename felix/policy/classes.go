package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"

	v1 "github.com/tabbynet/tabby/api/v1"
)

// classifier partitions peer addresses into classes: identities that every peer matcher
// of every rule treats alike share a class.
type classifier struct {
	in        *Input
	matchers  []matcher
	classes   []Class
	ipcache   []IPCacheEntry
	classTrue [][]int // class id -> indices of the matchers true for it (id 0 unused)
	problems  map[string][]string
}

func newClassifier(in *Input, eps []*Endpoint, policies []*pPolicy) *classifier {
	cl := &classifier{in: in, problems: map[string][]string{}}
	index := map[string]int{}
	var mentioned []netip.Prefix
	for _, p := range policies {
		for d := range p.rules {
			for _, r := range p.rules[d] {
				k := r.peer.key()
				i, ok := index[k]
				if !ok {
					i = len(cl.matchers)
					index[k] = i
					cl.matchers = append(cl.matchers, r.peer)
					mentioned = prefixesOf(r.peer, mentioned)
				}
				r.peerIdx = i
			}
		}
	}
	var ids []*identity
	hosts := map[netip.Prefix]string{}
	for _, ep := range eps {
		for _, a := range ep.IPs {
			hp := netip.PrefixFrom(a, a.BitLen())
			if owner, dup := hosts[hp]; dup {
				cl.problems[ep.Key()] = append(cl.problems[ep.Key()],
					fmt.Sprintf("address %s already belongs to %s; ignored as a peer", a, owner))
				continue
			}
			hosts[hp] = ep.Key()
			ids = append(ids, cl.identityOf(ep, hp))
		}
	}
	mentioned = append(mentioned, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0"))
	sort.Slice(mentioned, func(i, j int) bool { return comparePrefix(mentioned[i], mentioned[j]) < 0 })
	mentioned = slices.Compact(mentioned)
	for _, p := range mentioned {
		if _, isHost := hosts[p]; !isHost {
			ids = append(ids, &identity{prefix: p})
		}
	}
	bySig := map[string]uint32{}
	cl.classTrue = [][]int{nil}
	sig := make([]byte, len(cl.matchers))
	for _, id := range ids {
		var trues []int
		for i, m := range cl.matchers {
			sig[i] = 0
			if m.match(id) {
				sig[i] = 1
				trues = append(trues, i)
			}
		}
		c, ok := bySig[string(sig)]
		if !ok {
			c = uint32(len(cl.classes) + 1)
			bySig[string(sig)] = c
			cl.classes = append(cl.classes, Class{ID: c})
			cl.classTrue = append(cl.classTrue, trues)
		}
		member := id.prefix.String()
		if id.ep != nil {
			member = id.ep.Key() + " " + id.prefix.Addr().String()
		}
		cl.classes[c-1].Members = append(cl.classes[c-1].Members, member)
		cl.ipcache = append(cl.ipcache, IPCacheEntry{Prefix: id.prefix, Class: c})
	}
	sort.Slice(cl.ipcache, func(i, j int) bool { return comparePrefix(cl.ipcache[i].Prefix, cl.ipcache[j].Prefix) < 0 })
	return cl
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func (cl *classifier) identityOf(ep *Endpoint, p netip.Prefix) *identity {
	return &identity{ep: ep, prefix: p, nsLabels: cl.in.Namespaces[ep.Namespace],
		saLabels: cl.in.ServiceAccounts[ep.Namespace+"/"+ep.ServiceAccount]}
}

// localIdentities are the identities of ep's own addresses (one without an address if it
// has none), for checking the local side of rules.
func (cl *classifier) localIdentities(ep *Endpoint) []*identity {
	if len(ep.IPs) == 0 {
		return []*identity{cl.identityOf(ep, netip.Prefix{})}
	}
	var ids []*identity
	for _, a := range ep.IPs {
		ids = append(ids, cl.identityOf(ep, netip.PrefixFrom(a, a.BitLen())))
	}
	return ids
}

// table builds the LPM entries of one endpoint and direction from its ordered rules.
func (cl *classifier) table(rules []*lRule, def Decision) []Entry {
	byPeer := map[int][]int{}
	for i, r := range rules {
		byPeer[r.peer] = append(byPeer[r.peer], i)
	}
	var out []Entry
	var cand []*lRule
	var pos []int
	for c := 1; c < len(cl.classTrue); c++ {
		pos = pos[:0]
		for _, m := range cl.classTrue[c] {
			pos = append(pos, byPeer[m]...)
		}
		slices.Sort(pos)
		cand = cand[:0]
		for _, p := range pos {
			cand = append(cand, rules[p])
		}
		out = appendClassEntries(out, uint32(c), cand, def)
	}
	sortEntries(out)
	return out
}

// firstMatch is the decision of the first rule matching proto and port; a Log rule
// matching before it is recorded in the decision (the first one) and evaluation goes on.
func firstMatch(rules []*lRule, proto uint8, port uint16, def Decision) Decision {
	var d Decision
	logged := false
	var logID int32
	for _, r := range rules {
		if !r.matches(proto, port) {
			continue
		}
		switch r.action {
		case v1.ActionAllow:
			d = Decision{Verdict: Allow, Reason: ReasonRule, RuleID: r.id}
		case v1.ActionDeny:
			d = Decision{Verdict: Deny, Reason: ReasonRule, RuleID: r.id}
		case v1.ActionPass:
			d = Decision{Verdict: Allow, Reason: ReasonPass, RuleID: r.id}
		case v1.ActionLog:
			if !logged {
				logged, logID = true, r.id
			}
			continue
		default:
			continue
		}
		if logged {
			d.Log, d.LogRuleID = true, logID
		}
		return d
	}
	if logged {
		def.Log, def.LogRuleID = true, logID
	}
	return def
}

func (r *lRule) matches(proto uint8, port uint16) bool {
	if len(r.protos) > 0 && !slices.Contains(r.protos, proto) || slices.Contains(r.notProtos, proto) {
		return false
	}
	if r.hasPorts && !inPorts(r.ports, port) {
		return false
	}
	return !inPorts(r.notPorts, port)
}

func inPorts(ps []portSpec, port uint16) bool {
	for _, p := range ps {
		if p.first <= port && port <= p.last {
			return true
		}
	}
	return false
}

// appendClassEntries appends the entries of one class: a class-level entry for protocols
// no candidate rule names, a proto-level entry per named protocol, and port blocks where
// the decision differs from the protocol's. Entries equal to what the next less specific
// level (or the default) gives are left out.
func appendClassEntries(out []Entry, class uint32, rules []*lRule, def Decision) []Entry {
	var protos []uint8
	for _, r := range rules {
		protos = append(protos, r.protos...)
		protos = append(protos, r.notProtos...)
	}
	slices.Sort(protos)
	protos = slices.Compact(protos)
	classDec := def
	for p := 0; p < 256; p++ {
		if _, found := slices.BinarySearch(protos, uint8(p)); !found {
			classDec = firstMatch(rules, uint8(p), 0, def)
			break
		}
	}
	if classDec != def {
		out = append(out, Entry{Class: class, Level: LevelClass, Decision: classDec})
	}
	for _, proto := range protos {
		cuts := []uint32{0, 65536}
		for _, r := range rules {
			if len(r.protos) > 0 && !slices.Contains(r.protos, proto) {
				continue
			}
			for _, ps := range [][]portSpec{r.ports, r.notPorts} {
				for _, p := range ps {
					cuts = append(cuts, uint32(p.first), uint32(p.last)+1)
				}
			}
		}
		slices.Sort(cuts)
		cuts = slices.Compact(cuts)
		type span struct {
			lo, hi uint32 // [lo, hi)
			d      Decision
		}
		var spans []span
		width := map[Decision]uint32{}
		for i := 0; i+1 < len(cuts); i++ {
			d := firstMatch(rules, proto, uint16(cuts[i]), def)
			width[d] += cuts[i+1] - cuts[i]
			if n := len(spans); n > 0 && spans[n-1].d == d {
				spans[n-1].hi = cuts[i+1]
				continue
			}
			spans = append(spans, span{cuts[i], cuts[i+1], d})
		}
		protoDec := spans[0].d
		for _, s := range spans {
			if width[s.d] > width[protoDec] {
				protoDec = s.d
			}
		}
		if protoDec != classDec {
			out = append(out, Entry{Class: class, Level: LevelProto, Proto: proto, Decision: protoDec})
		}
		for _, s := range spans {
			if s.d == protoDec {
				continue
			}
			for _, b := range portBlocks(s.lo, s.hi) {
				out = append(out, Entry{Class: class, Level: LevelPort, Proto: proto, Port: b.port,
					PortBits: b.bits, Decision: s.d})
			}
		}
	}
	return out
}

type portBlock struct {
	port uint16
	bits uint8
}

// portBlocks splits [lo, hi) into the fewest aligned power-of-two blocks (at most 30 for
// 16-bit ports), each an LPM prefix of the port.
func portBlocks(lo, hi uint32) []portBlock {
	var out []portBlock
	for lo < hi {
		size := uint32(1)
		bits := uint8(16)
		for bits > 0 && lo%(size*2) == 0 && lo+size*2 <= hi {
			size *= 2
			bits--
		}
		out = append(out, portBlock{port: uint16(lo), bits: bits})
		lo += size
	}
	return out
}
