package policymaps

import (
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/ebpf"
	"github.com/tabbynet/tabby/ebpf/ebpftest"
	"github.com/tabbynet/tabby/felix/policy"
	"go.uber.org/zap/zaptest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func icmpType(typ int, code ...int) *v1.ICMPFields {
	f := &v1.ICMPFields{Type: &typ}
	if len(code) > 0 {
		f.Code = &code[0]
	}
	return f
}

func protoOf(s string) *intstr.IntOrString { p := intstr.FromString(s); return &p }

// tabbyInput is input(false, false) plus Tabby policies with ICMP type/code and Log
// rules: db's ingress logs ICMP from web, allows echo requests, denies fragmentation
// needed (3/4) and allows every other ICMP but type 3 from 192.168/16, logs TCP;
// web's egress allows echo replies to db, denies unreachables, logs everything else.
func tabbyInput() *policy.Input {
	in := input(false, false)
	o := func(f float64) *float64 { return &f }
	in.GlobalPolicies = []v1.GlobalNetworkPolicy{
		{ObjectMeta: metav1.ObjectMeta{Name: "db-icmp"}, Spec: v1.GlobalNetworkPolicySpec{Order: o(10),
			Selector: "app == 'db'", Types: []v1.PolicyType{v1.PolicyTypeIngress}, Ingress: []v1.Rule{
				{Action: v1.ActionLog, Protocol: protoOf("ICMP"), Source: v1.EntityRule{Selector: "app == 'web'"}},
				{Action: v1.ActionAllow, Protocol: protoOf("ICMP"), ICMP: icmpType(8)},
				{Action: v1.ActionDeny, Protocol: protoOf("ICMP"), ICMP: icmpType(3, 4)},
				{Action: v1.ActionAllow, Protocol: protoOf("ICMP"), NotICMP: icmpType(3),
					Source: v1.EntityRule{Nets: []string{"192.168.0.0/16"}}},
				{Action: v1.ActionLog, Protocol: protoOf("TCP")},
			}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "web-icmp"}, Spec: v1.GlobalNetworkPolicySpec{Order: o(10),
			Selector: "app == 'web'", Types: []v1.PolicyType{v1.PolicyTypeEgress}, Egress: []v1.Rule{
				{Action: v1.ActionAllow, Protocol: protoOf("ICMP"), ICMP: icmpType(0, 0),
					Destination: v1.EntityRule{Selector: "app == 'db'"}},
				{Action: v1.ActionDeny, Protocol: protoOf("ICMP"), ICMP: icmpType(3)},
				{Action: v1.ActionLog},
			}}},
	}
	return in
}

// TestSyncICMPAndLog: ICMP type/code and Log rules through the Writer into the real
// program, which agrees with the evaluator packet by packet and reports Log matches.
func TestSyncICMPAndLog(t *testing.T) {
	ebpftest.Require(t)
	dp := loadAt(t, ebpftest.PinDir(t))
	w := New(dp, zaptest.NewLogger(t))
	c, err := policy.Compile(tabbyInput())
	if err != nil {
		t.Fatal(err)
	}
	for _, under := range []string{"shop/db", "shop/web"} {
		eps := endpoints(c, under)
		mustSync(t, w, c, eps)
		checkMaps(t, dp, expected(t, c, eps))
		checkVerdicts(t, dp, c, under)
	}

	// Log events: what the evaluator says a Log rule matched, the program reports.
	eps := endpoints(c, "shop/db")
	mustSync(t, w, c, eps)
	r, err := dp.NewDropReader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	drain := func() []ebpf.DropEvent {
		var events []ebpf.DropEvent
		for {
			r.SetDeadline(time.Now().Add(50 * time.Millisecond))
			e, err := r.Read()
			if err != nil {
				return events
			}
			events = append(events, e)
		}
	}
	drain() // the checks above filled the ring
	ev := policy.NewEvaluator(c)
	db := addr("10.0.0.2")
	for _, p := range []struct {
		src   string
		proto uint8
		port  uint16
	}{
		{"10.0.0.1", icmp, policy.ICMPPort(8, 0)},     // logged (web), allowed
		{"10.0.0.1", icmp, policy.ICMPPort(3, 4)},     // logged, denied
		{"10.0.0.3", icmp, policy.ICMPPort(8, 0)},     // allowed, no log
		{"192.168.5.5", icmp, policy.ICMPPort(11, 0)}, // allowed, no log
		{"10.0.0.3", tcp, 5432},                       // logged by the TCP Log rule, then denied
	} {
		if err := dp.FlushConntrack(); err != nil {
			t.Fatal(err)
		}
		src := addr(p.src)
		d := ev.Verdict(src, db, p.proto, p.port).Ingress.Decision
		sport++
		res, err := dp.RunPacket(ebpf.Ingress, frame(peerMAC, src, db, p.proto, sport, p.port))
		if err != nil {
			t.Fatal(err)
		}
		if (res == ebpf.Pass) != (d.Verdict == policy.Allow) {
			t.Errorf("%s proto %d port %#x: program %v, evaluator %+v", src, p.proto, p.port, res, d)
		}
		var logs []ebpf.DropEvent
		for _, e := range drain() {
			if e.IsLog() {
				logs = append(logs, e)
			}
		}
		switch {
		case !d.Log && len(logs) != 0:
			t.Errorf("%s proto %d port %#x: no Log rule matched, got log events %+v", src, p.proto, p.port, logs)
		case d.Log && (len(logs) != 1 || logs[0].RuleID != policy.DatapathLogRuleID(d) ||
			logs[0].Src != src || logs[0].Dst != db || (logs[0].Verdict == ebpf.Allow) != (d.Verdict == policy.Allow)):
			t.Errorf("%s proto %d port %#x: want one log event of rule %d (%s), got %+v", src, p.proto, p.port,
				policy.DatapathLogRuleID(d), c.Rules[d.LogRuleID], logs)
		case d.Log && c.Rules[logs[0].RuleID-1].Action != v1.ActionLog:
			t.Errorf("log event names %s", c.Rules[logs[0].RuleID-1])
		}
		if d.Log {
			t.Logf("%s proto %d port %#x: %v, logged by %s", src, p.proto, p.port, res, c.Rules[d.LogRuleID])
		}
	}
}
