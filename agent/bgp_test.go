package agent

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/bgp/controller"
	"github.com/tabbynet/tabby/datastore"
	"go.uber.org/zap/zaptest"
)

type fakeBGP struct {
	mu    sync.Mutex
	peers []bgp.PeerState
	err   error
	probs []controller.Problem
}

func (f *fakeBGP) Peers(context.Context) ([]bgp.PeerState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.peers, f.err
}

func (f *fakeBGP) Problems() []controller.Problem {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.probs
}

func startAgentBGP(t *testing.T, b BGP) *localapi.Client {
	t.Helper()
	cfg := testConfig(t)
	a, err := New(Options{Config: cfg, Store: datastore.NewMemory(), Dataplane: &fakeDataplane{}, BGP: b,
		Registry: prometheus.NewRegistry(), Logger: zaptest.NewLogger(t), CheckInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	c := localapi.NewClient(cfg.Socket, 5*time.Second)
	waitUntil(t, "local API", func() error { _, err := c.Status(context.Background()); return err })
	return c
}

func TestLocalAPIBGPPeers(t *testing.T) {
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	fb := &fakeBGP{peers: []bgp.PeerState{
		{Address: netip.MustParseAddr("10.0.0.3"), Type: bgp.PeerTypeMesh, ASN: 64512, State: bgp.StateEstablished,
			Since: since, PrefixesReceived: 2, PrefixesAccepted: 2, PrefixesAdvertised: 1},
		{Address: netip.MustParseAddr("192.0.2.1"), Type: bgp.PeerTypeGlobal, ASN: 65001, State: bgp.StateActive,
			LastError: "connection refused"},
	}, probs: []controller.Problem{{Object: "BGPPeer bad", Reason: "no such node"}}}
	c := startAgentBGP(t, fb)
	st, err := c.BGPPeers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !st.Enabled || len(st.Peers) != 2 || st.Peers[0].Address != "10.0.0.3" || st.Peers[0].State != "Established" ||
		st.Peers[0].Since == nil || !st.Peers[0].Since.Equal(since) || st.Peers[0].PrefixesReceived != 2 ||
		st.Peers[1].Since != nil || st.Peers[1].LastError != "connection refused" ||
		len(st.Problems) != 1 || st.Problems[0] != "BGPPeer bad: no such node" {
		t.Fatalf("bgp peers %+v", st)
	}
	full, err := c.Status(context.Background())
	if err != nil || full.BGP == nil || len(full.BGP.Peers) != 2 {
		t.Fatalf("status.bgp %+v %v", full, err)
	}
	fb.mu.Lock()
	fb.err = errors.New("speaker gone")
	fb.mu.Unlock()
	if _, err := c.BGPPeers(context.Background()); err == nil || !strings.Contains(err.Error(), "500") {
		t.Fatalf("peers error: %v", err)
	}
	full, err = c.Status(context.Background())
	if err != nil || full.BGP == nil || len(full.BGP.Problems) != 1 || !strings.Contains(full.BGP.Problems[0], "speaker gone") {
		t.Fatalf("status.bgp with an error %+v %v", full.BGP, err)
	}
}

func TestLocalAPIBGPDisabled(t *testing.T) {
	c := startAgentBGP(t, nil)
	st, err := c.BGPPeers(context.Background())
	if err != nil || st.Enabled || st.Peers == nil || len(st.Peers) != 0 {
		t.Fatalf("bgp peers without BGP %+v %v", st, err)
	}
}
