package ebpf

import (
	"testing"

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
