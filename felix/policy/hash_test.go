package policy

import (
	"errors"
	"math/rand/v2"
	"testing"
)

// TestHashMatchesLPM: the exact-match expansion decides like the LPM tables (ports 1-65535).
func TestHashMatchesLPM(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	addrs := []string{"10.0.0.1", "10.0.1.2", "10.0.0.3", "10.0.1.4", "10.0.0.5", "10.0.1.6",
		"10.0.0.6", "10.0.1.99", "10.0.7.7", "192.0.2.1", "8.8.8.8"}
	ports := []uint16{1, 53, 59, 60, 80, 81, 100, 159, 8000, 8001, 8002, 9000, 65535}
	for iter := range 200 {
		in := randomInput(r)
		c, ev := compileOK(t, in)
		entries, err := c.HashEntries(0)
		if err != nil {
			t.Fatal(err)
		}
		hev := NewHashEvaluator(c, entries)
		for range 60 {
			src, dst := addr(addrs[r.IntN(len(addrs))]), addr(addrs[r.IntN(len(addrs))])
			proto := []uint8{ProtoTCP, ProtoUDP, ProtoICMP, ProtoSCTP}[r.IntN(4)]
			port := ports[r.IntN(len(ports))]
			limit := 8 // endpoint, ipcache, 6 policy probes
			if proto == ProtoICMP {
				port, limit = probeICMP[r.IntN(len(probeICMP))], 10 // 8 policy probes
			}
			if proto == ProtoICMP && port>>8 == 255 {
				continue // type 255 has no hash encoding: it gets ICMP's protocol decision
			}
			got, want := hev.Verdict(src, dst, proto, port), ev.Verdict(src, dst, proto, port)
			if got.Ingress.Decision != want.Ingress.Decision || got.Egress.Decision != want.Egress.Decision {
				t.Fatalf("iter %d: %s -> %s proto %d port %d: hash %+v, lpm %+v", iter, src, dst, proto, port, got, want)
			}
			if got.Ingress.Lookups > limit || got.Egress.Lookups > limit {
				t.Fatalf("more than %d lookups: %+v", limit, got)
			}
		}
	}
}

func TestHashEntriesLimitAndRuleIDs(t *testing.T) {
	c, _ := compileOK(t, goldenInputs()["kube"])
	all, err := c.HashEntries(0)
	if err != nil {
		t.Fatal(err)
	}
	// x/b ingress: one pg port per class 1 and the 30000-30100 UDP range for classes 1 and 2.
	n := 0
	for _, e := range all {
		if e.Direction == Ingress && e.Proto == ProtoUDP {
			n++
		}
	}
	if n != 2*101 {
		t.Errorf("got %d UDP range entries, want 202", n)
	}
	if _, err := c.HashEntries(100); !errors.Is(err, ErrTooLarge) {
		t.Errorf("limit 100: got %v, want ErrTooLarge", err)
	}
	if DatapathRuleID(Decision{RuleID: -1}) != 0 || DatapathRuleID(Decision{RuleID: 0}) != 1 {
		t.Error("datapath rule ids must reserve 0 for defaults")
	}
}
