// Command policy measures what Tabby's TC policy program costs, against no program and
// against iptables, in one run. A node network namespace holds the host sides of two
// veth pairs whose other ends are eth0 in two pod namespaces, routed with /32s (the
// node answers the pods' ARP for their gateway, 10.88.0.1, from an address on its lo).
// An iperf3 server runs in pod B, the client in pod A; five scenarios alternate for
// several rounds, each one TCP stream of a few seconds:
//
//   - no program, no iptables rule;
//   - Tabby's programs on both host veths (TCX, or classic TC without it), pods'
//     defaults deny, with 10 and with 10,000 policy entries for each policed
//     direction (pod A egress, pod B ingress): the one allowing the iperf3 flow and
//     decoys with other peer classes and ports;
//   - no program, iptables (whatever `iptables` is, nft or legacy) in the node's FORWARD
//     chain with policy DROP and 10 or 10,000 rules, the two accepting the flow and its
//     replies last, so that every forwarded packet walks the chain (no conntrack rule).
//
// Per-packet cost is measured two ways: the programs' own bpf_stats (run_time_ns /
// run_cnt, with BPF_STATS_RUN_TIME on) while iperf3 runs, which is mostly the
// conntrack fast path since established packets skip policy; and the policy path
// itself, a new-flow SYN no entry allows test-run (BPF_PROG_TEST_RUN) many times
// through the ingress program: conntrack misses, six policy lookups, the endpoint
// default and a drop. Figures are medians over the rounds.
//
// Everything is named tbpolicy-<pid>-..., uses only 10.88.0.0/16 inside its own
// namespaces, pins under a private bpffs in the run's temporary directory, and is
// removed at the end, on failure and on SIGINT/SIGTERM/SIGHUP; what a killed run left
// is removed by the next. Needs root, iperf3 and iptables (hack/deps.sh).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"github.com/tabbynet/tabby/bench/internal/benchutil"
	tebpf "github.com/tabbynet/tabby/ebpf"
	"github.com/tabbynet/tabby/test/netnode"
	"golang.org/x/sys/unix"
)

const (
	namePrefix = "tbpolicy-"
	goalRules  = 1.2 // cost at many rules / cost at few
	goalThru   = 0.9 // throughput with the program / without
	goalIpt    = 5.0 // throughput with the program / with iptables, both at many rules
)

type kind int

const (
	kindNone kind = iota
	kindTabby
	kindIptables
)

type scenario struct {
	name  string
	kind  kind
	rules int

	gbps     []float64 // iperf3 receiver throughput, one per round
	statNs   []float64 // bpf_stats run_time_ns / run_cnt during the iperf3 run
	policyNs []float64 // test-run policy path, ns a run
}

type config struct {
	few, many, rounds, secs, repeat int
}

func step(f string, a ...any) { fmt.Fprintf(os.Stderr, " "+f+"\n", a...) }

func main() {
	var c config
	flag.IntVar(&c.few, "few", 10, "rules in the small scenarios")
	flag.IntVar(&c.many, "rules", 10000, "rules in the large scenarios")
	flag.IntVar(&c.rounds, "rounds", 5, "rounds (each runs every scenario once)")
	flag.IntVar(&c.secs, "t", 3, "seconds of each iperf3 run")
	flag.IntVar(&c.repeat, "repeat", 10000, "test runs of the new-flow packet per measure")
	flag.Parse()
	if c.few < 2 || c.many < c.few || c.many > 60000 || c.rounds < 1 || c.secs < 1 || c.repeat < 1 {
		benchutil.Fatal(errors.New("need 2 <= -few <= -rules <= 60000 and positive -rounds, -t, -repeat"))
	}
	if os.Geteuid() != 0 {
		benchutil.Fatal(errors.New("policy needs root (namespaces, BPF): run make bench BENCH=policy as root"))
	}
	for _, bin := range []string{"ip", "iperf3", "iptables", "iptables-restore"} {
		if _, err := exec.LookPath(bin); err != nil {
			benchutil.Fatal(fmt.Errorf("%s not found (hack/deps.sh installs it): %w", bin, err))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cl := &netnode.Cleanup{Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "bench: "+f+"\n", a...) }}
	stop := cl.OnSignal(cancel)
	defer stop()

	scs := []*scenario{
		{name: "no program", kind: kindNone},
		{name: fmt.Sprintf("tabby, %d rules", c.few), kind: kindTabby, rules: c.few},
		{name: fmt.Sprintf("tabby, %d rules", c.many), kind: kindTabby, rules: c.many},
		{name: fmt.Sprintf("iptables, %d rules", c.few), kind: kindIptables, rules: c.few},
		{name: fmt.Sprintf("iptables, %d rules", c.many), kind: kindIptables, rules: c.many},
	}
	mode, err := bench(ctx, cl, c, scs)
	if terr := cl.Run(); terr != nil && err == nil {
		err = fmt.Errorf("teardown: %w", terr)
	}
	if err != nil {
		benchutil.Fatal(err)
	}
	report(ctx, c, mode, scs)
}

// bench sets up, runs every scenario c.rounds times and returns the attach mode.
func bench(ctx context.Context, cl *netnode.Cleanup, c config, scs []*scenario) (tebpf.AttachMode, error) {
	if err := sweepMounts(); err != nil {
		return "", err
	}
	id, dir, _, err := benchutil.NewRun(ctx, cl, namePrefix, step)
	if err != nil {
		return "", fmt.Errorf("new run: %w", err)
	}
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return "", fmt.Errorf("enable bpf stats: %w", err)
	}
	cl.Add("disable bpf stats", stats.Close)
	step("setting up %s-{node,a,b}", id)
	t, err := newTopo(ctx, cl, id)
	if err != nil {
		return "", err
	}
	tb, err := loadTabby(cl, dir, t)
	if err != nil {
		return "", err
	}
	if err := t.startServer(ctx, cl); err != nil {
		return "", err
	}
	// Fill the drop ring buffer (nobody reads it) so that every policy-path measure
	// finds it full, not only the later ones.
	if err := tb.setRules(c.few); err != nil {
		return "", err
	}
	if _, err := tb.policyPathNs(c.repeat); err != nil {
		return "", err
	}
	if _, err := t.throughput(ctx, 1); err != nil { // warm-up, not measured
		return "", err
	}
	var mode tebpf.AttachMode
	for r := range c.rounds {
		for _, sc := range scs {
			if err := ctx.Err(); err != nil {
				return "", err
			}
			m, err := runScenario(ctx, c, t, tb, sc)
			if err != nil {
				return "", fmt.Errorf("%s: %w", sc.name, err)
			}
			if m != "" {
				mode = m
			}
			step("round %d: %-22s %6.2f Gbit/s", r+1, sc.name, sc.gbps[len(sc.gbps)-1])
		}
	}
	return mode, nil
}

// runScenario configures sc, runs iperf3 once and records the figures.
func runScenario(ctx context.Context, c config, t *topo, tb *tabby, sc *scenario) (tebpf.AttachMode, error) {
	var mode tebpf.AttachMode
	switch sc.kind {
	case kindNone, kindIptables:
		if err := tb.detach(); err != nil {
			return "", err
		}
		if err := setIptables(ctx, t.nd, sc.rules); err != nil {
			return "", err
		}
	case kindTabby:
		if err := setIptables(ctx, t.nd, 0); err != nil {
			return "", err
		}
		if err := tb.setRules(sc.rules); err != nil {
			return "", err
		}
		var err error
		if mode, err = tb.attach(); err != nil {
			return "", err
		}
	}
	var before tebpf.Counter
	runs0, ns0, err := tb.stats()
	if err == nil {
		before, err = tb.d.RuleCounter(allowA)
	}
	if err != nil {
		return "", err
	}
	gbps, err := t.throughput(ctx, c.secs)
	if err != nil {
		return "", err
	}
	sc.gbps = append(sc.gbps, gbps)
	if sc.kind != kindTabby {
		return mode, nil
	}
	runs1, ns1, err := tb.stats()
	if err != nil {
		return "", err
	}
	after, err := tb.d.RuleCounter(allowA)
	if err != nil {
		return "", err
	}
	if runs1 <= runs0 || after.Packets <= before.Packets {
		return "", fmt.Errorf("the program did not police the flow (%d runs, allowing rule hit %d times)",
			runs1-runs0, after.Packets-before.Packets)
	}
	sc.statNs = append(sc.statNs, float64(ns1-ns0)/float64(runs1-runs0))
	pns, err := tb.policyPathMedian(5, c.repeat)
	if err != nil {
		return "", err
	}
	sc.policyNs = append(sc.policyNs, pns)
	return mode, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// report prints the table and the three RESULT lines.
func report(ctx context.Context, c config, mode tebpf.AttachMode, scs []*scenario) {
	none, few, many, iptMany := scs[0], scs[1], scs[2], scs[4]
	fmt.Printf("policy: one TCP stream pod A -> pod B (iperf3, %d s), routed veths in namespaces, median of %d rounds\n",
		c.secs, c.rounds)
	fmt.Printf("  Tabby attached as %s on both host veths; %s in the node's FORWARD chain (accepts last, no conntrack rule)\n",
		mode, iptablesVersion(ctx))
	fmt.Printf("  %-22s %9s %9s %16s %18s\n", "scenario", "Gbit/s", "vs none", "ns/run (stats)", "policy path ns")
	ref := median(none.gbps)
	for _, sc := range scs {
		g := median(sc.gbps)
		st, pp := "-", "-"
		if sc.kind == kindTabby {
			st = fmt.Sprintf("%.1f", median(sc.statNs))
			pp = fmt.Sprintf("%.1f", median(sc.policyNs))
		}
		fmt.Printf("  %-22s %9.2f %9.2f %16s %18s\n", sc.name, g, g/ref, st, pp)
	}
	fmt.Printf("  ns/run (stats): bpf_stats run_time_ns/run_cnt of both programs during the iperf3 run (mostly conntrack hits)\n")
	fmt.Printf("  policy path ns: BPF_PROG_TEST_RUN of a new-flow SYN no entry allows, %d runs x 5, median\n", c.repeat)
	stRatio := median(many.statNs) / median(few.statNs)
	ppRatio := median(many.policyNs) / median(few.policyNs)
	fmt.Printf("  cost %d/%d rules: bpf_stats %.2fx, policy path %.2fx (goal <=%.1f for both)\n",
		c.many, c.few, stRatio, ppRatio, goalRules)

	benchutil.Result("policy-rules", median(many.statNs), "ns", median(few.statNs),
		fmt.Sprintf("<=%.1f", goalRules), stRatio <= goalRules && ppRatio <= goalRules)
	thr := median(many.gbps) / ref
	benchutil.Result("policy-throughput", median(many.gbps), "Gbit/s", ref, fmt.Sprintf(">=%.1f", goalThru), thr >= goalThru)
	ipt := median(many.gbps) / median(iptMany.gbps)
	benchutil.Result("policy-iptables", median(many.gbps), "Gbit/s", median(iptMany.gbps), fmt.Sprintf(">=%.0f", goalIpt), ipt >= goalIpt)
}
