package felix

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	applySeconds prometheus.Histogram
	routes       *prometheus.GaugeVec
	endpoints    prometheus.Gauge
	resyncs      prometheus.Counter
	applyErrors  prometheus.Counter
}

// newMetrics makes felix's metrics and registers them on reg (none when reg is nil).
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
