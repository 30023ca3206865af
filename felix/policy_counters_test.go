package felix_test

// Per-endpoint and per-rule counters and Log rule reports, through real traffic, real
// programs and felix's metrics registry (the harness of enforce_tabby_helpers_test.go).

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/felix"
	"github.com/tabbynet/tabby/felix/internal/nettest"
	"go.uber.org/zap/zaptest"
)

// startFelixWithRegistry is startFelix with a registry the test reads.
func (c *tpCluster) startFelixWithRegistry(reg *prometheus.Registry) *tpFelix {
	c.t.Helper()
	t := c.t
	f, err := felix.New(felix.Config{NodeName: c.id, Store: c.s, Logger: zaptest.NewLogger(t),
		Registry: reg, NetlinkHandle: c.n.H, NetNSPath: c.n.Path,
		RouteCleanupGracePeriod: grace, Policy: true, BPFPinDir: c.pinDir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	r := &tpFelix{f: f}
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run returned %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(r.stop)
	c.felix = r
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	for _, p := range c.pods {
		if err := f.WaitPolicyProgrammed(wctx, p.ns, p.name); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// scrape gathers reg and returns every sample of the named families, keyed by the
// family name and its labels ("name{k=v,...}").
func scrape(t *testing.T, reg *prometheus.Registry, names ...string) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		want := false
		for _, n := range names {
			want = want || mf.GetName() == n
		}
		if !want {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			sort.Strings(ls)
			out[mf.GetName()+"{"+strings.Join(ls, ",")+"}"] = m.GetCounter().GetValue()
		}
	}
	return out
}

func TestPolicyCountersAndLog(t *testing.T) {
	c := newTPCluster(t)
	ns := c.namespace("tpm", nil)
	a := c.addPod("a", ns, "10.93.0.31", map[string]string{"app": "a"})
	b := c.addPod("b", ns, "10.93.0.32", map[string]string{"app": "b"})
	c.tcpServe(b, 80)
	c.tcpServe(b, 81)
	reg := prometheus.NewRegistry()
	c.startFelixWithRegistry(reg)
	// b's ingress: log TCP from a, allow TCP 80; the rest is denied at the end of the tier.
	c.put(tpNP(ns, "b-in", tpOrder(10), "app == 'b'", tpIngress, []v1.Rule{
		{Action: v1.ActionLog, Protocol: tpProto("TCP"), Source: v1.EntityRule{Selector: "app == 'a'"}},
		{Action: v1.ActionAllow, Protocol: tpProto("TCP"), Destination: v1.EntityRule{Ports: tpPorts("80")}},
	}, nil))
	c.sync("b-in")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	drops, err := c.felix.f.SubscribeDrops(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const conns = 3
	t0 := time.Now()
	for range conns {
		c.check("counters", tpTCPTo(a, b, 80, true))
	}
	c.check("counters", tpTCPTo(a, b, 81, false))
	t1 := time.Now()

	epKey := func(pod, dir, verdict string) string {
		return fmt.Sprintf("tabby_policy_packets_total{direction=%s,endpoint=%s,namespace=%s,verdict=%s}", dir, pod, ns, verdict)
	}
	ruleKey := func(idx, action string) string {
		return fmt.Sprintf("tabby_policy_rule_packets_total{action=%s,direction=ingress,kind=NetworkPolicy,namespace=%s,policy=b-in,rule=%s}",
			action, ns, idx)
	}
	var got map[string]float64
	nettest.Eventually(t, 10*time.Second, "counters scraped", func() string {
		got = scrape(t, reg, "tabby_policy_packets_total", "tabby_policy_bytes_total", "tabby_policy_rule_packets_total")
		for key, min := range map[string]float64{
			// Each connection: SYN, ACK, FIN... in, all allowed (established after the SYN).
			epKey("b", "ingress", "allowed"): conns * 2,
			// The SYN to 81, and its retransmission within the probe timeout at most.
			epKey("b", "ingress", "denied"): 1,
			epKey("a", "egress", "allowed"): conns*2 + 1,
			epKey("b", "egress", "allowed"): conns, // the replies
			ruleKey("1", "Allow"):           conns,
			ruleKey("0", "Log"):             conns + 1,
		} {
			if got[key] < min {
				return fmt.Sprintf("%s = %v, want at least %v", key, got[key], min)
			}
		}
		if got[epKey("a", "egress", "denied")] != 0 {
			return "a's egress denied packets"
		}
		if bk := strings.Replace(epKey("b", "ingress", "allowed"), "packets", "bytes", 1); got[bk] < 40*conns*2 {
			return fmt.Sprintf("%s = %v: fewer bytes than packets of 40", bk, got[bk])
		}
		return ""
	})
	for k, v := range got {
		if strings.Contains(k, "namespace="+ns) {
			t.Logf("%s %v", k, v)
		}
	}
	// What each workload sent, with the first and the last allowed packet's time (a
	// migrated VM's blackout is measured from them): a's SYNs to 81 count too.
	for _, p := range []*tpPod{a, b} {
		act, err := c.felix.f.WorkloadActivity(p.host)
		if err != nil {
			t.Fatal(err)
		}
		slack := 50 * time.Millisecond
		if act.Packets < conns || act.FirstSent.Before(t0.Add(-slack)) || act.LastSent.After(t1.Add(slack)) ||
			act.LastSent.Before(act.FirstSent) {
			t.Errorf("activity of %s: %+v; want at least %d packets between %v and %v", p.name, act, conns, t0, t1)
		}
	}
	if _, err := c.felix.f.WorkloadActivity("cali-none"); !errors.Is(err, felix.ErrUnknownEndpoint) {
		t.Errorf("activity of an interface without programs: %v, want ErrUnknownEndpoint", err)
	}

	// The drop subscription carries the Log rule's reports, marked as logs, and the drop.
	var sawLog, sawDrop bool
	for !sawLog || !sawDrop {
		select {
		case ev := <-drops:
			if ev.Endpoint != ns+"/b" || ev.Peer != a.ip {
				continue
			}
			switch {
			case ev.Log:
				if ev.Reason != "log" || ev.Rule == nil || ev.Rule.Action != "Log" || ev.Rule.Name != "b-in" ||
					ev.Rule.Index != 0 || ev.Protocol != "TCP" {
					t.Errorf("log event %+v rule %+v", ev, ev.Rule)
				}
				sawLog = sawLog || ev.DstPort == 81
			case ev.DstPort == 81:
				if ev.Reason != "default-deny" {
					t.Errorf("drop event %+v", ev)
				}
				sawDrop = true
			}
		case <-ctx.Done():
			t.Fatalf("no log event (%t) or drop event (%t) for a -> b:81", sawLog, sawDrop)
		}
	}

	// A policy whose name sorts first moves b-in's rules to other rule ids: their
	// counters must not inherit what the ids counted before.
	c.put(tpNP(ns, "a-first", tpOrder(5), "app == 'a'", tpIngress, []v1.Rule{{Action: v1.ActionAllow}}, nil))
	c.sync("a-first")
	got = scrape(t, reg, "tabby_policy_rule_packets_total")
	if got[ruleKey("0", "Log")] != 0 || got[ruleKey("1", "Allow")] != 0 {
		t.Fatalf("after renumbering: Log %v, Allow %v; want both reset", got[ruleKey("0", "Log")], got[ruleKey("1", "Allow")])
	}
	c.check("after renumbering", tpTCPTo(a, b, 80, true))
	nettest.Eventually(t, 10*time.Second, "counters after renumbering", func() string {
		got = scrape(t, reg, "tabby_policy_rule_packets_total")
		if got[ruleKey("0", "Log")] != 1 || got[ruleKey("1", "Allow")] != 1 {
			return fmt.Sprintf("Log %v, Allow %v; want 1 each", got[ruleKey("0", "Log")], got[ruleKey("1", "Allow")])
		}
		return ""
	})
}

// TestTabbyICMPTypeCode: icmp {type, code} in a Tabby rule, with real pings (the echo
// reply passes as the request's reply).
func TestTabbyICMPTypeCode(t *testing.T) {
	c := newTPCluster(t)
	ns := c.namespace("tpi", nil)
	a := c.addPod("a", ns, "10.93.0.41", map[string]string{"app": "a"})
	b := c.addPod("b", ns, "10.93.0.42", map[string]string{"app": "b"})
	c.startFelix()
	typ, code := 8, 1
	rule := v1.Rule{Action: v1.ActionAllow, Protocol: tpProto("ICMP"), ICMP: &v1.ICMPFields{Type: &typ, Code: &code}}
	np := tpNP(ns, "b-icmp", tpOrder(10), "app == 'b'", tpIngress, []v1.Rule{rule}, nil)
	c.put(np)
	c.sync("echo request code 1 only")
	c.check("code 1", tpPingTo(a, b, false)) // an echo request has code 0

	rule.ICMP = &v1.ICMPFields{Type: &typ}
	np.Spec.Ingress = []v1.Rule{rule}
	c.put(np)
	c.sync("echo requests")
	c.check("type 8", tpPingTo(a, b, true), tpPingTo(b, a, true))

	rule.ICMP, rule.NotICMP = nil, &v1.ICMPFields{Type: &typ}
	np.Spec.Ingress = []v1.Rule{rule}
	c.put(np)
	c.sync("no echo requests")
	c.check("notICMP type 8", tpPingTo(a, b, false))
}
