package ebpf

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/tabbynet/tabby/ebpf/ebpftest"
)

// BenchmarkPolicyMiss measures the worst case (every policy lookup misses, the
// endpoint default decides) with few and many rules: the cost must not grow with
// the number of rules.
func BenchmarkPolicyMiss(b *testing.B) {
	for _, n := range []int{10, 10000} {
		b.Run(fmt.Sprintf("rules=%d", n), func(b *testing.B) {
			d := benchSetup(b, n)
			frame := in("10.1.2.3", tcp, 1234, 65000).frame()
			prog, _ := d.program(Ingress)
			b.ResetTimer()
			ret, per, err := prog.Benchmark(frame, b.N, nil)
			if err != nil {
				b.Fatal(err)
			}
			if Result(int32(ret)) != Drop {
				b.Fatalf("result %d, want drop", int32(ret))
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/run")
		})
	}
}

func benchSetup(b *testing.B, rules int) *Datapath {
	b.Helper()
	ebpftest.Require(b)
	d, err := Load(Options{PinDir: ebpftest.PinDir(b)})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Close() })
	if err := d.SetEndpoint(LoopbackIfindex, Endpoint{ID: epID, IngressDefault: Deny, EgressDefault: Deny}); err != nil {
		b.Fatal(err)
	}
	if err := d.SetIPCache(netip.MustParsePrefix("10.1.0.0/16"), classDB); err != nil {
		b.Fatal(err)
	}
	for i := range rules {
		k := PolicyKey{Endpoint: epID, Direction: Ingress, Proto: tcp, Port: uint16(1 + i%60000), Peer: classDB + uint32(i/60000)}
		if err := d.SetPolicy(k, PolicyValue{Verdict: Allow, RuleID: uint32(i + 1)}); err != nil {
			b.Fatal(err)
		}
	}
	return d
}
