package policy

import (
	"fmt"
	"strings"
)

// String renders a decision with its rule, e.g. "allow rule 3 (knp x/a ingress[0] Allow)".
func (c *Compiled) describe(d Decision) string {
	s := d.Verdict.String() + " " + d.Reason.String()
	if d.RuleID >= 0 && int(d.RuleID) < len(c.Rules) {
		s += fmt.Sprintf(" #%d (%s)", d.RuleID, c.Rules[d.RuleID])
	}
	if d.Log && d.LogRuleID >= 0 && int(d.LogRuleID) < len(c.Rules) {
		s += fmt.Sprintf(", log #%d (%s)", d.LogRuleID, c.Rules[d.LogRuleID])
	}
	return s
}

// Explain renders a Result for humans (the body of `policy explain`).
func (c *Compiled) Explain(r Result) string {
	var b strings.Builder
	verdict := "blocked"
	if r.Allowed {
		verdict = "allowed"
	}
	fmt.Fprintf(&b, "%s (%d lookups)\n", verdict, r.Lookups())
	for _, s := range []struct {
		name string
		st   Step
	}{{"egress", r.Egress}, {"ingress", r.Ingress}} {
		if s.st.Endpoint == "" {
			fmt.Fprintf(&b, "  %s: not an endpoint, not enforced\n", s.name)
			continue
		}
		fmt.Fprintf(&b, "  %s at %s: peer class %d: %s\n", s.name, s.st.Endpoint, s.st.PeerClass, c.describe(s.st.Decision))
	}
	return b.String()
}

// Dump renders the whole compiled output in a stable text form (golden files, debugging).
func (c *Compiled) Dump() string {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i, r := range c.Rules {
		fmt.Fprintf(&b, "  #%d %s\n", i, r)
	}
	b.WriteString("classes:\n")
	for _, cl := range c.Classes {
		fmt.Fprintf(&b, "  %d: %s\n", cl.ID, strings.Join(cl.Members, ", "))
	}
	b.WriteString("ipcache:\n")
	for _, e := range c.IPCache {
		fmt.Fprintf(&b, "  %s -> %d\n", e.Prefix, e.Class)
	}
	for _, t := range c.Endpoints {
		fmt.Fprintf(&b, "endpoint %d %s %v\n", t.ID, t.Key, t.IPs)
		for _, p := range t.Problems {
			fmt.Fprintf(&b, "  problem: %s\n", p)
		}
		for _, d := range []struct {
			name string
			dt   *DirTable
		}{{"ingress", &t.Ingress}, {"egress", &t.Egress}} {
			fmt.Fprintf(&b, "  %s selected=%t default=%s\n", d.name, d.dt.Selected, c.describe(d.dt.Default))
			for _, e := range d.dt.Entries {
				key := fmt.Sprintf("class %d", e.Class)
				switch e.Level {
				case LevelProto:
					key += fmt.Sprintf(" proto %d", e.Proto)
				case LevelPort:
					key += fmt.Sprintf(" proto %d port %d/%d", e.Proto, e.Port, e.PortBits)
				}
				fmt.Fprintf(&b, "    %s -> %s\n", key, c.describe(e.Decision))
			}
		}
	}
	return b.String()
}
