package bgp

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gatherPeer returns, by metric name, the values the collector exports for peer.
func gatherPeer(t *testing.T, n *node, peer *node) (map[string]float64, error) {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewPeerCollector(n.sp.Peers, 5*time.Second))
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["peer"] != peer.addr.String() {
				continue
			}
			if labels["type"] != PeerTypeMesh || labels["asn"] != fmt.Sprint(peer.asn) {
				return nil, fmt.Errorf("%s: labels %v", mf.GetName(), labels)
			}
			switch {
			case m.GetGauge() != nil:
				out[mf.GetName()] = m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				out[mf.GetName()] = m.GetCounter().GetValue()
			}
		}
	}
	return out, nil
}

// TestPeerMetrics: the per-peer metrics follow a real session: up with the prefixes
// and updates received, down when the peer goes away, and one flap counted when it is
// back.
func TestPeerMetrics(t *testing.T) {
	t.Parallel()
	ip := testNet()
	a := newNode(t, "a", ip(1), 64512)
	b := newNode(t, "b", ip(2), 64512)
	a.peer(b)
	b.peer(a)
	b.waitEstablished(a)
	a.advertise("10.60.7.0/26")
	a.advertise("10.60.8.0/26")
	b.waitRoute("10.60.8.0/26", a)
	b.waitRoute("10.60.7.0/26", a)

	// wantOf waits until from's metrics of its peer to satisfy cond.
	wantOf := func(from, to *node, what string, cond func(m map[string]float64) bool) {
		t.Helper()
		var last map[string]float64
		deadline := time.Now().Add(waitTimeout)
		for {
			m, err := gatherPeer(t, from, to)
			if err != nil {
				t.Fatal(err)
			}
			last = m
			if cond(m) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %v: %v", what, waitTimeout, last)
			}
			time.Sleep(50 * time.Millisecond) // polling interval, not synchronisation
		}
		t.Logf("%s: %v", what, last)
	}
	want := func(what string, cond func(m map[string]float64) bool) {
		t.Helper()
		wantOf(b, a, what, cond)
	}
	want("up with 2 prefixes received", func(m map[string]float64) bool {
		return m["tabby_bgp_peer_up"] == 1 && m["tabby_bgp_peer_prefixes_received"] == 2 &&
			m["tabby_bgp_peer_prefixes_accepted"] == 2 && m["tabby_bgp_peer_updates_received_total"] >= 1 &&
			m["tabby_bgp_peer_flaps_total"] == 0 && m["tabby_bgp_peer_admin_down"] == 0
	})
	// The sender counts an UPDATE once it is written, which may be after b took it.
	wantOf(a, b, "a's metrics of b: 2 advertised, updates sent", func(m map[string]float64) bool {
		return m["tabby_bgp_peer_prefixes_advertised"] == 2 && m["tabby_bgp_peer_updates_sent_total"] >= 1
	})

	// a goes away (a hard stop: b flushes), b's session is down; a comes back on the
	// same address and port: up again, one flap.
	if err := a.sp.Stop(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	want("down after the peer stopped", func(m map[string]float64) bool {
		return m["tabby_bgp_peer_up"] == 0 && m["tabby_bgp_peer_prefixes_received"] == 0
	})
	a2 := startNode(t, "a2", a.addr, a.port, a.asn)
	a2.peer(b)
	want("up again with one flap", func(m map[string]float64) bool {
		return m["tabby_bgp_peer_up"] == 1 && m["tabby_bgp_peer_flaps_total"] == 1
	})
}
