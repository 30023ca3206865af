package bgp

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// PeerCollector exports per-peer session metrics, read from the speaker when scraped:
//
//	tabby_bgp_peer_up{peer,type,asn}                        1 when Established
//	tabby_bgp_peer_admin_down{peer,type,asn}                1 when held down (e.g. past maxPrefixes)
//	tabby_bgp_peer_prefixes_received{peer,type,asn}         what the peer sent
//	tabby_bgp_peer_prefixes_accepted{peer,type,asn}         what passed loop checks
//	tabby_bgp_peer_prefixes_advertised{peer,type,asn}       what we send it
//	tabby_bgp_peer_flaps_total{peer,type,asn}               times the session left Established
//	tabby_bgp_peer_updates_received_total{peer,type,asn}    UPDATE messages received
//	tabby_bgp_peer_updates_sent_total{peer,type,asn}        UPDATE messages sent
//
// The counters count since the speaker started (a restart of tabby-node resets them,
// which Prometheus' rate() handles). A scrape the speaker cannot answer reports an
// error for these metrics only.
type PeerCollector struct {
	peers   func(context.Context) ([]PeerState, error)
	timeout time.Duration
}

var (
	peerLabels          = []string{"peer", "type", "asn"}
	descPeerUp          = prometheus.NewDesc("tabby_bgp_peer_up", "1 when the BGP session is Established.", peerLabels, nil)
	descPeerAdminDown   = prometheus.NewDesc("tabby_bgp_peer_admin_down", "1 when the session is held down (e.g. after the peer sent more than maxPrefixes).", peerLabels, nil)
	descPeerReceived    = prometheus.NewDesc("tabby_bgp_peer_prefixes_received", "Prefixes the peer sent.", peerLabels, nil)
	descPeerAccepted    = prometheus.NewDesc("tabby_bgp_peer_prefixes_accepted", "Prefixes from the peer that passed the AS-path loop and originator checks.", peerLabels, nil)
	descPeerAdvertised  = prometheus.NewDesc("tabby_bgp_peer_prefixes_advertised", "Prefixes advertised to the peer.", peerLabels, nil)
	descPeerFlaps       = prometheus.NewDesc("tabby_bgp_peer_flaps_total", "Times the session left Established.", peerLabels, nil)
	descPeerUpdatesRecv = prometheus.NewDesc("tabby_bgp_peer_updates_received_total", "BGP UPDATE messages received from the peer.", peerLabels, nil)
	descPeerUpdatesSent = prometheus.NewDesc("tabby_bgp_peer_updates_sent_total", "BGP UPDATE messages sent to the peer.", peerLabels, nil)
)

// NewPeerCollector returns a collector asking peers (a Speaker's or a controller's
// Peers) at each scrape, bounded by timeout.
func NewPeerCollector(peers func(context.Context) ([]PeerState, error), timeout time.Duration) *PeerCollector {
	return &PeerCollector{peers: peers, timeout: timeout}
}

// Describe implements prometheus.Collector.
func (c *PeerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPeerUp, descPeerAdminDown, descPeerReceived, descPeerAccepted,
		descPeerAdvertised, descPeerFlaps, descPeerUpdatesRecv, descPeerUpdatesSent} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *PeerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ps, err := c.peers(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(descPeerUp, fmt.Errorf("list BGP peers: %w", err))
		return
	}
	b2f := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	for _, p := range ps {
		l := []string{p.Address.String(), p.Type, strconv.FormatUint(uint64(p.ASN), 10)}
		ch <- prometheus.MustNewConstMetric(descPeerUp, prometheus.GaugeValue, b2f(p.State == StateEstablished), l...)
		ch <- prometheus.MustNewConstMetric(descPeerAdminDown, prometheus.GaugeValue, b2f(p.AdminDown), l...)
		ch <- prometheus.MustNewConstMetric(descPeerReceived, prometheus.GaugeValue, float64(p.PrefixesReceived), l...)
		ch <- prometheus.MustNewConstMetric(descPeerAccepted, prometheus.GaugeValue, float64(p.PrefixesAccepted), l...)
		ch <- prometheus.MustNewConstMetric(descPeerAdvertised, prometheus.GaugeValue, float64(p.PrefixesAdvertised), l...)
		ch <- prometheus.MustNewConstMetric(descPeerFlaps, prometheus.CounterValue, float64(p.Flaps), l...)
		ch <- prometheus.MustNewConstMetric(descPeerUpdatesRecv, prometheus.CounterValue, float64(p.UpdatesReceived), l...)
		ch <- prometheus.MustNewConstMetric(descPeerUpdatesSent, prometheus.CounterValue, float64(p.UpdatesSent), l...)
	}
}
