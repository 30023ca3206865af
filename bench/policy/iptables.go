package main

import (
	"context"
	"fmt"
	"os/exec"
	"strings"

	"github.com/tabbynet/tabby/test/netnode"
)

// iptablesRules is a filter table whose FORWARD chain drops by default and holds n
// rules, the two accepting the iperf3 flow (pod A to B:5201 and its replies) last:
// every forwarded packet walks the whole chain. The n-2 decoys have the pods'
// addresses but other ports, half for each direction. With n == 0 the chain is empty
// and accepts everything.
func iptablesRules(n int) string {
	var sb strings.Builder
	sb.WriteString("*filter\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n")
	if n == 0 {
		sb.WriteString(":FORWARD ACCEPT [0:0]\nCOMMIT\n")
		return sb.String()
	}
	sb.WriteString(":FORWARD DROP [0:0]\n")
	for i := range n - 2 {
		port := 10000 + i
		if i%2 == 0 {
			fmt.Fprintf(&sb, "-A FORWARD -s %s/32 -d %s/32 -p tcp -m tcp --dport %d -j ACCEPT\n", podAAddr, podBAddr, port)
		} else {
			fmt.Fprintf(&sb, "-A FORWARD -s %s/32 -d %s/32 -p tcp -m tcp --sport %d -j ACCEPT\n", podBAddr, podAAddr, port)
		}
	}
	fmt.Fprintf(&sb, "-A FORWARD -s %s/32 -d %s/32 -p tcp -m tcp --dport %d -j ACCEPT\n", podAAddr, podBAddr, iperfPort)
	fmt.Fprintf(&sb, "-A FORWARD -s %s/32 -d %s/32 -p tcp -m tcp --sport %d -j ACCEPT\n", podBAddr, podAAddr, iperfPort)
	sb.WriteString("COMMIT\n")
	return sb.String()
}

// setIptables replaces the node namespace's filter table with iptablesRules(n) in one
// iptables-restore and checks the FORWARD chain's length.
func setIptables(ctx context.Context, nd *netnode.Node, n int) error {
	cmd := nd.Command(ctx, "iptables-restore")
	cmd.Stdin = strings.NewReader(iptablesRules(n))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("iptables-restore (%d rules): %w: %s", n, err, strings.TrimSpace(string(out)))
	}
	out, err := nd.Exec(ctx, "iptables", "-S", "FORWARD")
	if err != nil {
		return fmt.Errorf("iptables -S: %w", err)
	}
	if got := strings.Count(out, "-A FORWARD"); got != n {
		return fmt.Errorf("iptables: %d rules in FORWARD, want %d", got, n)
	}
	return nil
}

// iptablesVersion is `iptables -V`, to tell nft from legacy in the report.
func iptablesVersion(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "iptables", "-V").Output()
	if err != nil {
		return "iptables (unknown version)"
	}
	return strings.TrimSpace(string(out))
}
