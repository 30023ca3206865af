package ebpf

import "testing"

// TestDHCPAlwaysAllowed: with both directions denied by default, the workload's DHCP
// requests and the host's replies from 169.254.1.1:67 pass, and explain says why; a
// "reply" from anyone else and other UDP to port 68 or 67 are still judged by policy.
func TestDHCPAlwaysAllowed(t *testing.T) {
	d := setup(t)
	cases := []struct {
		what  string
		dir   Direction
		p     pkt
		want  Result
		stage Stage
	}{
		{"discover from no address", Egress, pkt{src: "0.0.0.0", dst: "255.255.255.255", proto: udp, sport: 68, dport: 67}, Pass, StageDHCP},
		{"renewal from its address", Egress, out("169.254.1.1", udp, 68, 67), Pass, StageDHCP},
		{"reply from the gateway", Ingress, in("169.254.1.1", udp, 67, 68), Pass, StageDHCP},
		{"reply from someone else", Ingress, in("10.9.9.9", udp, 67, 68), Drop, StageDefault},
		{"other UDP from the gateway", Ingress, in("169.254.1.1", udp, 53, 68), Drop, StageDefault},
		{"other UDP to port 67", Egress, out("10.9.9.9", udp, 5000, 67), Drop, StageDefault},
		{"a forged request", Egress, pkt{src: "10.9.9.9", dst: "255.255.255.255", proto: udp, sport: 68, dport: 67}, Drop, StageSpoof},
	}
	for _, c := range cases {
		ex, err := d.Explain(c.dir, LoopbackIfindex, c.p.frame())
		if err != nil {
			t.Fatalf("%s: explain: %v", c.what, err)
		}
		if ex.Result != c.want || ex.Stage != c.stage {
			t.Errorf("%s: explain %v at %v, want %v at %v", c.what, ex.Result, ex.Stage, c.want, c.stage)
		}
		mustRun(t, d, c.dir, c.p, c.want)
	}
}
