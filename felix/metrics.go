package felix

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tabbynet/tabby/ebpf"
	"github.com/tabbynet/tabby/felix/policy"
)

type metrics struct {
	applySeconds prometheus.Histogram
	routes       *prometheus.GaugeVec
	endpoints    prometheus.Gauge
	resyncs      prometheus.Counter
	applyErrors  prometheus.Counter

	reg        prometheus.Registerer // nil: no metrics
	policy     *policyCollector      // registered by registerPolicy
	policyOnce sync.Once
}

// newMetrics makes felix's metrics and registers them on reg (none when reg is nil).
// The policy counters are registered later, by registerPolicy, when policy is on.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		applySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tabby_felix_route_apply_seconds",
			Help:    "Time one apply of the route and sysctl reconcilers took.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 10),
		}),
		routes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tabby_felix_routes",
			Help: "Tabby's routes in the kernel, by kind (local, blackhole, learned).",
		}, []string{"kind"}),
		endpoints: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "tabby_felix_endpoints",
			Help: "Workload endpoints on this node.",
		}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tabby_felix_resyncs_total",
			Help: "Full desired-versus-kernel resyncs.",
		}),
		applyErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "tabby_felix_apply_errors_total",
			Help: "Applies that ended with at least one error.",
		}),
		reg:    reg,
		policy: newPolicyCollector(),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.applySeconds, m.routes, m.endpoints, m.resyncs, m.applyErrors} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("felix: register metrics: %w", err)
		}
	}
	return m, nil
}

// registerPolicy registers the policy counters (Config.Policy) on the registry, once.
func (m *metrics) registerPolicy() error {
	var err error
	m.policyOnce.Do(func() {
		if m.reg == nil {
			return
		}
		if rerr := m.reg.Register(m.policy); rerr != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(rerr, &already) {
				err = fmt.Errorf("felix: register policy metrics: %w", rerr)
			}
		}
	})
	return err
}

// policyCounters is what the policy collector reads on a scrape: the datapath and how
// to name its counters' keys. The enforcer replaces it after every apply.
type policyCounters struct {
	dp   *ebpf.Datapath
	comp *policy.Compiled // rule id i+1 is comp.Rules[i]
	eps  map[int]string   // ifindex -> local endpoint key (namespace/name)
}

// policyCollector exports the datapath's per-endpoint and per-rule counters. It holds
// no per-packet state: each scrape reads the (per-CPU) maps once and sums them.
type policyCollector struct {
	cur                  atomic.Pointer[policyCounters]
	epPackets, epBytes   *prometheus.Desc
	rulePackets, ruleBys *prometheus.Desc
}

func newPolicyCollector() *policyCollector {
	ep := []string{"namespace", "endpoint", "direction", "verdict"}
	rule := []string{"kind", "namespace", "policy", "direction", "rule", "action"}
	return &policyCollector{
		epPackets: prometheus.NewDesc("tabby_policy_packets_total",
			"IPv4 packets the policy programs of a local endpoint allowed or denied, by direction "+
				"(established flows included).", ep, nil),
		epBytes: prometheus.NewDesc("tabby_policy_bytes_total",
			"Bytes of the packets in tabby_policy_packets_total.", ep, nil),
		rulePackets: prometheus.NewDesc("tabby_policy_rule_packets_total",
			"Packets opening a flow that a policy rule decided (a Log rule: that it logged), on this node.",
			rule, nil),
		ruleBys: prometheus.NewDesc("tabby_policy_rule_bytes_total",
			"Bytes of the packets in tabby_policy_rule_packets_total.", rule, nil),
	}
}

// set replaces what the next scrape reads (nil: nothing).
func (c *policyCollector) set(p *policyCounters) { c.cur.Store(p) }

// Describe implements prometheus.Collector.
func (c *policyCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.epPackets, c.epBytes, c.rulePackets, c.ruleBys} {
		ch <- d
	}
}

// Collect implements prometheus.Collector: one read of each counter map.
func (c *policyCollector) Collect(ch chan<- prometheus.Metric) {
	p := c.cur.Load()
	if p == nil || p.dp == nil {
		return
	}
	if eps, err := p.dp.EndpointCounters(); err != nil {
		c.invalid(ch, err)
	} else {
		for k, v := range eps {
			key, ok := p.eps[k.Ifindex]
			if !ok {
				continue // not one of ours (any more)
			}
			ns, name, _ := strings.Cut(key, "/")
			dir := k.Direction.String()
			for _, m := range []struct {
				verdict        string
				packets, bytes uint64
			}{{"allowed", v.AllowedPackets, v.AllowedBytes}, {"denied", v.DeniedPackets, v.DeniedBytes}} {
				ch <- prometheus.MustNewConstMetric(c.epPackets, prometheus.CounterValue, float64(m.packets), ns, name, dir, m.verdict)
				ch <- prometheus.MustNewConstMetric(c.epBytes, prometheus.CounterValue, float64(m.bytes), ns, name, dir, m.verdict)
			}
		}
	}
	rules, err := p.dp.RuleCounters()
	if err != nil {
		c.invalid(ch, err)
		return
	}
	for id, v := range rules {
		r := ruleOf(p.comp, id) // nil for 0 (endpoint defaults) and unknown ids
		if r == nil {
			continue
		}
		l := []string{r.Kind, r.Namespace, r.Name, r.Direction, strconv.Itoa(r.Index), r.Action}
		ch <- prometheus.MustNewConstMetric(c.rulePackets, prometheus.CounterValue, float64(v.Packets), l...)
		ch <- prometheus.MustNewConstMetric(c.ruleBys, prometheus.CounterValue, float64(v.Bytes), l...)
	}
}

// invalid reports a map read error on the scrape, unless the datapath was just closed
// (felix stopping), which leaves the scrape without policy counters.
func (c *policyCollector) invalid(ch chan<- prometheus.Metric, err error) {
	if errors.Is(err, ebpf.ErrClosed) {
		return
	}
	ch <- prometheus.NewInvalidMetric(c.epPackets, fmt.Errorf("read policy counters: %w", err))
}
