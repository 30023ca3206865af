package ebpf

import (
	"net/netip"
	"testing"

	"github.com/tabbynet/tabby/ebpf/ebpftest"

	"golang.org/x/sys/unix"
)

// TestSweepConntrack: flows idle past their timeout go, live ones stay and still
// pass without evaluation.
func TestSweepConntrack(t *testing.T) {
	d := setup(t)
	setIPCache(t, d, "10.1.0.0/16", classDB)
	setPolicy(t, d, PolicyKey{Direction: Egress, Proto: tcp, Port: 80, Peer: classDB},
		PolicyValue{Verdict: Allow, RuleID: 100})
	flow := out("10.1.2.3", tcp, 40000, 80)
	mustRun(t, d, Egress, flow, Pass) // opens a live flow
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	now := uint64(ts.Nano())
	old := []tabbyCtKey{
		{Ifindex: 9, Saddr: 1, Daddr: 2, Sport: 1, Dport: 2, Proto: unix.IPPROTO_TCP},
		{Ifindex: 9, Saddr: 1, Daddr: 2, Sport: 1, Dport: 2, Proto: unix.IPPROTO_UDP},
	}
	stale := []uint64{now - uint64(ConntrackTimeoutTCP) - 1e9, now - uint64(ConntrackTimeoutOther) - 1e9}
	for i, k := range old {
		if err := d.objs.TabbyConntrack.Put(k, tabbyCtValue{LastSeenNs: stale[i], State: 2}); err != nil {
			t.Fatal(err)
		}
	}
	// A UDP flow idle for longer than a TCP one may be: still live for TCP's timeout.
	liveTCP := tabbyCtKey{Ifindex: 9, Saddr: 3, Daddr: 4, Sport: 1, Dport: 2, Proto: unix.IPPROTO_TCP}
	if err := d.objs.TabbyConntrack.Put(liveTCP, tabbyCtValue{LastSeenNs: stale[1], State: 2}); err != nil {
		t.Fatal(err)
	}
	kept, deleted, err := d.SweepConntrack()
	if err != nil || deleted != 2 || kept < 2 {
		t.Fatalf("SweepConntrack = kept %d, deleted %d, %v; want 2 deleted, the live flows kept", kept, deleted, err)
	}
	var v tabbyCtValue
	for _, k := range old {
		if d.objs.TabbyConntrack.Lookup(k, &v) == nil {
			t.Fatalf("stale flow %+v kept", k)
		}
	}
	if err := d.objs.TabbyConntrack.Lookup(liveTCP, &v); err != nil {
		t.Fatalf("live TCP flow deleted: %v", err)
	}
	mustRun(t, d, Ingress, flow.reply(), Pass) // the reply of the live flow still passes
}

// TestConntrackICMPEcho: ping flows are told apart by their echo identifier, so a
// policy that now denies pings stops a new ping at once while the one already running
// goes on (conntrack), with its replies.
func TestConntrackICMPEcho(t *testing.T) {
	d := setup(t)
	setIPCache(t, d, "10.1.0.0/16", classDB)
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: icmp, Peer: classDB}, PolicyValue{Verdict: Allow, RuleID: 7})
	echo := func(id uint16, reply bool, dir Direction) []byte {
		p := ebpftest.Packet{SrcMAC: peerMAC, DstMAC: wlMAC, Src: netip.MustParseAddr("10.1.2.3"),
			Dst: netip.MustParseAddr(wlIP), Proto: icmp, ICMPID: id, ICMPReply: reply}
		if dir == Egress { // the workload's reply
			p.SrcMAC, p.DstMAC, p.Src, p.Dst = wlMAC, peerMAC, p.Dst, p.Src
		}
		return ebpftest.Frame(p)
	}
	run := func(what string, dir Direction, frame []byte, want Result) {
		t.Helper()
		got, err := d.RunPacket(dir, frame)
		if err != nil || got != want {
			t.Fatalf("%s: %v, %v; want %v", what, got, err, want)
		}
	}
	run("ping 7 while allowed", Ingress, echo(7, false, Ingress), Pass)
	run("reply to ping 7", Egress, echo(7, true, Egress), Pass) // egress defaults to deny
	if err := d.DeletePolicy(PolicyKey{Endpoint: epID, Direction: Ingress, Proto: icmp, Peer: classDB}); err != nil {
		t.Fatal(err)
	}
	run("ping 7 goes on", Ingress, echo(7, false, Ingress), Pass)
	run("its replies too", Egress, echo(7, true, Egress), Pass)
	run("a new ping (8) is denied", Ingress, echo(8, false, Ingress), Drop)
	run("a reply nobody asked for", Egress, echo(9, true, Egress), Drop)

	// The workload pings the peer (egress allowed); the peer's own request with the
	// same identifier is a request, not a reply: denied. The reply passes.
	setPolicy(t, d, PolicyKey{Direction: Egress, Proto: icmp, Peer: classDB}, PolicyValue{Verdict: Allow, RuleID: 8})
	out := func(id uint16, reply bool) []byte {
		return ebpftest.Frame(ebpftest.Packet{SrcMAC: wlMAC, DstMAC: peerMAC, Src: netip.MustParseAddr(wlIP),
			Dst: netip.MustParseAddr("10.1.2.3"), Proto: icmp, ICMPID: id, ICMPReply: reply})
	}
	run("the workload pings (5)", Egress, out(5, false), Pass)
	run("the peer's request with id 5", Ingress, echo(5, false, Ingress), Drop)
	run("the peer's reply to 5", Ingress, echo(5, true, Ingress), Pass)
}
