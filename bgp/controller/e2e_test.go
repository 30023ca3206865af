package controller

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/datastore"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// Two real speakers (bgp.NewGoBGP), each on its own loopback address (127.0.0.0/8 is
// all local on Linux: no root, no namespaces) and port, driven by two controllers over
// one memory datastore: the node-to-node mesh comes up and each node learns the other's
// blocks with the other as next hop.

func freePort(t *testing.T, addr netip.Addr) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

type e2eNode struct {
	name string
	addr netip.Addr
	sink *sink
}

func startE2ENode(t *testing.T, s datastore.Store, name string, addr netip.Addr) *e2eNode {
	t.Helper()
	n := &e2eNode{name: name, addr: addr, sink: &sink{}}
	log := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named(name)
	ctrl, err := New(Config{NodeName: name, Store: s, OnLearned: n.sink.out,
		NewSpeaker: func() bgp.Speaker { return bgp.NewGoBGP(log.Named("speaker")) },
		Base:       bgp.Global{ListenAddresses: []netip.Addr{addr}},
		Status:     StatusOptions{Interval: time.Second, MinInterval: 10 * time.Millisecond},
		Logger:     log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: Run: %v", name, err)
		}
	})
	return n
}

func TestTwoSpeakers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two BGP speakers")
	}
	ctx := context.Background()
	s := datastore.NewMemory()
	addrA, addrB := netip.MustParseAddr("127.92.0.1"), netip.MustParseAddr("127.92.0.2")
	for _, o := range []datastore.Object{
		mkPool("pool", "10.65.0.0/16", false),
		mkNode("a", addrA.String()+"/24", nil), mkNode("b", addrB.String()+"/24", nil),
		mkConfig("node.a", v1.BGPConfigurationSpec{ListenPort: freePort(t, addrA)}),
		mkConfig("node.b", v1.BGPConfigurationSpec{ListenPort: freePort(t, addrB)}),
		mkBlock("10.65.0.0/26", "a", map[int]string{9: "b"}), // b borrowed 10.65.0.9
		mkBlock("10.65.0.64/26", "b", nil),
	} {
		if _, err := s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	a := startE2ENode(t, s, "a", addrA)
	b := startE2ENode(t, s, "b", addrB)

	eventually(t, "b to learn a's block", func() bool { return b.sink.last() == "10.65.0.0/26>127.92.0.1" })
	// a keeps its own block's route local, but learns the address b borrowed from it.
	eventually(t, "a to learn b's block and borrowed address", func() bool {
		return a.sink.last() == "10.65.0.64/26>127.92.0.2 10.65.0.9/32>127.92.0.2"
	})
	eventually(t, "a's NodeStatus to show the session", func() bool {
		ns, err := datastore.Get[*v1.NodeStatus](ctx, s, "", "a")
		return err == nil && ns.Status.BGP.NumberEstablished == 1 && len(ns.Status.BGP.Peers) == 1 &&
			ns.Status.BGP.Peers[0].PeerIP == "127.92.0.2" && ns.Status.BGP.Peers[0].Type == "mesh" &&
			ns.Status.BGP.Peers[0].PrefixesReceived == 2
	})

	// a's block is released: b withdraws its route.
	if err := s.Delete(ctx, datastore.KindIPAMBlock, "", mkBlock("10.65.0.0/26", "a", nil).Name, datastore.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b to drop a's block", func() bool { return b.sink.last() == "" })
	eventually(t, "a to drop the borrowed address", func() bool { return a.sink.last() == "10.65.0.64/26>127.92.0.2" })
}
