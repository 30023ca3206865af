package policy

import (
	"errors"
	"testing"

	v1 "github.com/tabbynet/tabby/api/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func icmpFields(typ int, code ...int) *v1.ICMPFields {
	f := &v1.ICMPFields{Type: &typ}
	if len(code) > 0 {
		f.Code = &code[0]
	}
	return f
}

// TestICMPTypeCode: Calico v3 semantics of icmp and notICMP, in the LPM tables and in
// the hash layout.
func TestICMPTypeCode(t *testing.T) {
	in := basicInput()
	in.GlobalPolicies = []v1.GlobalNetworkPolicy{
		gnp("icmp", order(1), "app == 'db'", []v1.Rule{
			// Echo requests from anyone; unreachable/frag-needed from web; no other type 11.
			{Action: v1.ActionAllow, Protocol: proto("ICMP"), ICMP: icmpFields(8)},
			{Action: v1.ActionAllow, Protocol: proto("ICMP"), ICMP: icmpFields(3, 4),
				Source: v1.EntityRule{Selector: "app == 'web'"}},
			{Action: v1.ActionDeny, Protocol: proto("ICMP"), ICMP: icmpFields(11)},
			// Every ICMP but type 5 from y.
			{Action: v1.ActionAllow, Protocol: proto("ICMP"), NotICMP: icmpFields(5),
				Source: v1.EntityRule{Nets: []string{"10.0.1.0/24"}}},
		}, nil),
	}
	probes := []probe{
		{"192.0.2.9", "10.0.0.2", ProtoICMP, ICMPPort(8, 0), true},
		{"192.0.2.9", "10.0.0.2", ProtoICMP, ICMPPort(8, 9), true}, // a type alone: every code
		{"192.0.2.9", "10.0.0.2", ProtoICMP, ICMPPort(0, 0), false},
		{"10.0.0.1", "10.0.0.2", ProtoICMP, ICMPPort(3, 4), true},
		{"10.0.0.1", "10.0.0.2", ProtoICMP, ICMPPort(3, 3), false}, // type and code: that code only
		{"192.0.2.9", "10.0.0.2", ProtoICMP, ICMPPort(3, 4), false},
		{"10.0.1.1", "10.0.0.2", ProtoICMP, ICMPPort(11, 0), false}, // denied before the notICMP allow
		{"10.0.1.1", "10.0.0.2", ProtoICMP, ICMPPort(5, 1), false},  // notICMP type 5
		{"10.0.1.1", "10.0.0.2", ProtoICMP, ICMPPort(13, 0), true},
		{"10.0.1.1", "10.0.0.2", ProtoTCP, 80, false}, // icmp rules say nothing of TCP
	}
	checkProbes(t, in, probes)
	c, _ := compileOK(t, in)
	entries, err := c.HashEntries(0)
	if err != nil {
		t.Fatal(err)
	}
	hev := NewHashEvaluator(c, entries)
	for _, p := range probes {
		r := hev.Verdict(addr(p.src), addr(p.dst), p.proto, p.port)
		if r.Allowed != p.allowed {
			t.Errorf("hash layout: %s -> %s proto %d port %#x: allowed=%t, want %t", p.src, p.dst, p.proto, p.port,
				r.Allowed, p.allowed)
		}
		if max := 2 + 8; r.Ingress.Lookups > max {
			t.Errorf("hash layout: %d lookups, want at most %d", r.Ingress.Lookups, max)
		}
	}
	for _, e := range entries {
		if e.Proto == ProtoICMP && e.Port != 0 && e.Port != HashICMPType(uint8(e.Port-1)) &&
			e.Port < HashICMPExact(0, 0) {
			t.Errorf("entry %+v: port is neither a type nor a type and code", e)
		}
	}

	// icmp without protocol ICMP is invalid (api/v1 validation).
	bad := basicInput()
	bad.GlobalPolicies = []v1.GlobalNetworkPolicy{gnp("bad", order(1), "all()",
		[]v1.Rule{{Action: v1.ActionAllow, Protocol: proto("TCP"), ICMP: icmpFields(8)}}, nil)}
	if _, err := Compile(bad); !errors.Is(err, ErrInvalid) {
		t.Errorf("icmp with protocol TCP: %v, want ErrInvalid", err)
	}
}

// TestLogRules: a Log rule gives no verdict, but the decision taken after it (a later
// rule's or the end-of-tier default) names it, in the LPM tables and the hash layout.
func TestLogRules(t *testing.T) {
	in := basicInput()
	in.GlobalPolicies = []v1.GlobalNetworkPolicy{
		gnp("a", order(1), "app == 'db'", []v1.Rule{
			{Action: v1.ActionLog, Protocol: proto("TCP"), Source: v1.EntityRule{Selector: "app == 'web'"}},
			{Action: v1.ActionLog}, // never named when the first one matched
			{Action: v1.ActionAllow, Protocol: proto("TCP"),
				Destination: v1.EntityRule{Ports: []intstr.IntOrString{intstr.FromInt32(80)}}},
		}, nil),
	}
	c, ev := compileOK(t, in)
	entries, err := c.HashEntries(0)
	if err != nil {
		t.Fatal(err)
	}
	hev := NewHashEvaluator(c, entries)
	for _, p := range []struct {
		src     string
		proto   uint8
		port    uint16
		verdict Verdict
		ruleID  int32 // -1: default
		logRule int32
	}{
		{"10.0.0.1", ProtoTCP, 80, Allow, 2, 0},  // web: first Log rule, then allowed
		{"10.0.0.1", ProtoTCP, 81, Deny, -1, 0},  // web: logged, then end of tier
		{"10.0.1.2", ProtoTCP, 80, Allow, 2, 1},  // db peer: only the second Log rule
		{"10.0.1.2", ProtoUDP, 53, Deny, -1, 1},  // logged, denied by default
		{"10.0.0.1", ProtoUDP, 53, Deny, -1, 1},  // web over UDP: not the TCP Log rule
		{"10.0.0.1", ProtoICMP, 0, Deny, -1, 1},  // ICMP too
		{"192.0.2.9", ProtoTCP, 80, Allow, 2, 1}, // not an endpoint
	} {
		for name, r := range map[string]Result{
			"lpm":  ev.Verdict(addr(p.src), addr("10.0.0.2"), p.proto, p.port),
			"hash": hev.Verdict(addr(p.src), addr("10.0.0.2"), p.proto, p.port),
		} {
			d := r.Ingress.Decision
			if d.Verdict != p.verdict || d.RuleID != p.ruleID || !d.Log || d.LogRuleID != p.logRule {
				t.Errorf("%s: %s proto %d port %d: %+v, want %s rule %d log rule %d", name, p.src, p.proto,
					p.port, d, p.verdict, p.ruleID, p.logRule)
			}
			if d.Log && c.Rules[d.LogRuleID].Action != v1.ActionLog {
				t.Errorf("%s: log rule %d is %s", name, d.LogRuleID, c.Rules[d.LogRuleID])
			}
		}
	}
	// Another endpoint is not selected: no log.
	if d := ev.Verdict(addr("10.0.0.2"), addr("10.0.0.1"), ProtoTCP, 80).Ingress.Decision; d.Log {
		t.Errorf("unselected endpoint logs: %+v", d)
	}
}

// TestRuleIDsIgnoreInputOrder: rule ids (the datapath's counter keys) do not depend on
// the order of the input lists.
func TestRuleIDsIgnoreInputOrder(t *testing.T) {
	in := basicInput()
	for _, name := range []string{"c", "a", "b"} {
		in.GlobalPolicies = append(in.GlobalPolicies, gnp(name, order(1), "all()",
			[]v1.Rule{{Action: v1.ActionAllow}, {Action: v1.ActionDeny}}, nil))
	}
	c1, _ := compileOK(t, in)
	in.GlobalPolicies[0], in.GlobalPolicies[2] = in.GlobalPolicies[2], in.GlobalPolicies[0]
	c2, _ := compileOK(t, in)
	if len(c1.Rules) != 6 || c1.Rules[0].Policy != "gnp a" {
		t.Fatalf("rules %v", c1.Rules)
	}
	for i := range c1.Rules {
		if c1.Rules[i] != c2.Rules[i] {
			t.Errorf("rule %d: %s, then %s", i, c1.Rules[i], c2.Rules[i])
		}
	}
}
