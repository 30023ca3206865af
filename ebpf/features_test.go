package ebpf

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tabbynet/tabby/ebpf/ebpftest"
)

// icmpIn is an ICMP message of type/code entering the workload from src.
func icmpIn(src string, typ, code uint8) []byte {
	return ebpftest.Frame(ebpftest.Packet{SrcMAC: peerMAC, DstMAC: wlMAC, Src: netip.MustParseAddr(src),
		Dst: netip.MustParseAddr(wlIP), Proto: icmp, ICMPTypeSet: true, ICMPType: typ, ICMPCode: code})
}

func runFrame(t *testing.T, d *Datapath, dir Direction, frame []byte, want Result, what string) {
	t.Helper()
	got, err := d.RunPacket(dir, frame)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got != want {
		t.Fatalf("%s: %v, want %v", what, got, want)
	}
}

// TestICMPTypeAndCode: the ICMP type and code take the port's place: exact type and
// code first, then the type, then ICMP, then any protocol; non-echo ICMP is not
// tracked, so each message is judged by policy.
func TestICMPTypeAndCode(t *testing.T) {
	d := setup(t)
	setIPCache(t, d, "10.5.0.0/16", classDB)
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: icmp, Port: ICMPTypePort(3), Peer: classDB},
		PolicyValue{Verdict: Allow, RuleID: 50})
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: icmp, Port: ICMPExactPort(3, 13), Peer: classDB},
		PolicyValue{Verdict: Deny, RuleID: 51})
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: icmp, Port: ICMPExactPort(0, 0), Peer: ClassAny},
		PolicyValue{Verdict: Allow, RuleID: 52})
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: icmp, Peer: classFE},
		PolicyValue{Verdict: Allow, RuleID: 53})
	setIPCache(t, d, "10.6.0.0/16", classFE)

	for _, c := range []struct {
		src        string
		typ, code  uint8
		want       Result
		what, rule string
	}{
		{"10.5.0.1", 3, 1, Pass, "type 3 any code", ""},
		{"10.5.0.1", 3, 13, Drop, "type 3 code 13 denied exactly", ""},
		{"10.5.0.1", 3, 1, Pass, "type 3 again: not taken for conntrack", ""},
		{"10.5.0.1", 11, 0, Drop, "type 11: default", ""},
		{"192.0.2.1", 0, 0, Pass, "echo reply from anyone (ClassAny exact)", ""},
		{"192.0.2.1", 0, 1, Drop, "type 0 code 1: not the exact entry", ""},
		{"10.6.0.1", 11, 0, Pass, "fe: ICMP any type", ""},
		{"10.6.0.1", 255, 0, Pass, "type 255: the protocol entry", ""},
		{"10.5.0.1", 255, 0, Drop, "type 255 from db: no type entry applies", ""},
	} {
		if err := d.FlushConntrack(); err != nil {
			t.Fatal(err)
		}
		runFrame(t, d, Ingress, icmpIn(c.src, c.typ, c.code), c.want, c.what)
	}
	// A denied message after an allowed one of another type from the same peer: not
	// let through by conntrack.
	runFrame(t, d, Ingress, icmpIn("10.5.0.1", 3, 2), Pass, "type 3 code 2")
	runFrame(t, d, Ingress, icmpIn("10.5.0.1", 5, 0), Drop, "type 5 right after an allowed type 3")
}

// TestLogRuleEvent: a policy value with a log rule emits a log event (then applies its
// verdict) and bumps the log rule's counter too.
func TestLogRuleEvent(t *testing.T) {
	d := setup(t)
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: tcp, Port: 80, Peer: ClassAny},
		PolicyValue{Verdict: Allow, RuleID: 60, LogRuleID: 61})
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: tcp, Port: 81, Peer: ClassAny},
		PolicyValue{Verdict: Deny, RuleID: 0, LogRuleID: 61})
	r := dropReader(t, d)

	mustRun(t, d, Ingress, in("10.4.0.1", tcp, 50100, 80), Pass)
	ev := nextDrop(t, r)
	want := DropEvent{Ifindex: LoopbackIfindex, Src: netip.MustParseAddr("10.4.0.1"),
		Dst: netip.MustParseAddr(wlIP), SrcPort: 50100, DstPort: 80, Proto: tcp,
		Reason: DropLog, Direction: Ingress, RuleID: 61, Verdict: Allow}
	if ev != want || !ev.IsLog() {
		t.Fatalf("log event\n got %+v\nwant %+v", ev, want)
	}
	// Established packets of the flow are not logged again.
	mustRun(t, d, Ingress, in("10.4.0.1", tcp, 50100, 80), Pass)

	mustRun(t, d, Ingress, in("10.4.0.1", tcp, 50101, 81), Drop)
	ev = nextDrop(t, r)
	if !ev.IsLog() || ev.RuleID != 61 || ev.Verdict != Deny || ev.DstPort != 81 {
		t.Fatalf("log event of the denied packet: %+v", ev)
	}
	ev = nextDrop(t, r)
	if ev.IsLog() || ev.Reason != DropDefault || ev.DstPort != 81 || ev.Verdict != 0 {
		t.Fatalf("drop event after the log: %+v", ev)
	}
	if c, _ := d.RuleCounter(61); c.Packets != 2 {
		t.Errorf("log rule 61 counted %d packets, want 2", c.Packets)
	}
	if c, _ := d.RuleCounter(60); c.Packets != 1 {
		t.Errorf("rule 60 counted %d packets, want 1", c.Packets)
	}
	// Explain reads an entry of rule 0 (the default, after a Log rule) as the default.
	ex, err := d.Explain(Ingress, LoopbackIfindex, in("10.4.0.1", tcp, 50104, 81).frame())
	if err != nil {
		t.Fatal(err)
	}
	if ex.Stage != StageDefault || ex.Result != Drop || ex.RuleID != 0 {
		t.Errorf("explain of the logged default: %+v", ex)
	}
	// No log rule: no event.
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: tcp, Port: 82, Peer: ClassAny},
		PolicyValue{Verdict: Allow, RuleID: 62})
	mustRun(t, d, Ingress, in("10.4.0.1", tcp, 50102, 82), Pass)
	mustRun(t, d, Ingress, in("10.4.0.1", tcp, 50103, 81), Drop)
	if ev := nextDrop(t, r); ev.DstPort != 81 || !ev.IsLog() {
		t.Fatalf("want the port 81 log next (nothing for port 82), got %+v", ev)
	}
}

// TestEndpointCounters: every IPv4 packet of a configured endpoint counts once, as
// allowed or denied, per interface and direction, established packets included.
func TestEndpointCounters(t *testing.T) {
	d := setup(t)
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: tcp, Port: 80, Peer: ClassAny},
		PolicyValue{Verdict: Allow, RuleID: 70})
	syn := in("10.4.0.1", tcp, 50200, 80)
	denied := in("10.4.0.1", tcp, 50201, 81)
	spoof := out("10.4.0.1", tcp, 1000, 80)
	spoof.src = "10.4.4.4"
	n := uint64(len(syn.frame()))
	reply := syn.reply()
	reply.srcMAC = wlMAC
	t0 := time.Now()
	mustRun(t, d, Ingress, syn, Pass)
	mustRun(t, d, Ingress, syn, Pass) // established
	mustRun(t, d, Egress, reply, Pass)
	t1 := time.Now()
	mustRun(t, d, Ingress, denied, Drop)
	mustRun(t, d, Egress, spoof, Drop)

	all, err := d.EndpointCounters()
	if err != nil {
		t.Fatal(err)
	}
	wantIn := EndpointCounter{AllowedPackets: 2, AllowedBytes: 2 * n, DeniedPackets: 1, DeniedBytes: n}
	wantOut := EndpointCounter{AllowedPackets: 1, AllowedBytes: n, DeniedPackets: 1, DeniedBytes: n}
	// The allowed packets' times fall between t0 and t1 (the conversion from the
	// monotonic clock is exact to well within the slack); denied packets leave them.
	slack := 5 * time.Millisecond
	times := func(what string, c EndpointCounter) EndpointCounter {
		t.Helper()
		if c.FirstAllowed.Before(t0.Add(-slack)) || c.LastAllowed.After(t1.Add(slack)) || c.LastAllowed.Before(c.FirstAllowed) {
			t.Errorf("%s: first %v, last %v, want both within [%v, %v]", what, c.FirstAllowed, c.LastAllowed, t0, t1)
		}
		c.FirstAllowed, c.LastAllowed = time.Time{}, time.Time{}
		return c
	}
	if got := times("ingress", all[EndpointCounterKey{LoopbackIfindex, Ingress}]); got != wantIn {
		t.Errorf("ingress: %+v, want %+v", got, wantIn)
	}
	got, _ := d.EndpointCounter(LoopbackIfindex, Egress)
	if got = times("egress", got); got != wantOut {
		t.Errorf("egress: %+v, want %+v", got, wantOut)
	}
	rules, err := d.RuleCounters()
	if err != nil {
		t.Fatal(err)
	}
	if rules[70].Packets != 1 || rules[0].Packets != 1 {
		t.Errorf("rule counters %+v: want rule 70 and the default once each", rules)
	}
	if err := d.DeleteEndpointCounters(LoopbackIfindex); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.EndpointCounter(LoopbackIfindex, Ingress); got != (EndpointCounter{}) {
		t.Errorf("after delete: %+v", got)
	}
	if err := d.DeleteRuleCounters(70, 12345); err != nil {
		t.Fatal(err)
	}
	if c, _ := d.RuleCounter(70); c != (Counter{}) {
		t.Errorf("rule 70 after delete: %+v", c)
	}
}
