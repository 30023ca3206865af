package controller

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/datastore"
	"go.uber.org/zap/zaptest"
)

// harness runs a Controller for node "a" over a memory store with fake speakers.
type harness struct {
	t        *testing.T
	store    datastore.Store
	ctrl     *Controller
	sink     *sink
	mu       sync.Mutex
	speakers []*fakeSpeaker
	cancel   context.CancelFunc
	done     chan error
}

func newHarness(t *testing.T, objs ...datastore.Object) *harness {
	t.Helper()
	h := &harness{t: t, store: datastore.NewMemory(), sink: &sink{}, done: make(chan error, 1)}
	for _, o := range objs {
		h.create(o)
	}
	ctrl, err := New(Config{NodeName: "a", Store: h.store, OnLearned: h.sink.out,
		NewSpeaker: func() bgp.Speaker {
			sp := newFakeSpeaker()
			h.mu.Lock()
			h.speakers = append(h.speakers, sp)
			h.mu.Unlock()
			return sp
		},
		StopGraceful: true,
		Learned:      LearnedOptions{InitialSyncTimeout: time.Hour},
		Status:       StatusOptions{MinInterval: 10 * time.Millisecond},
		Logger:       zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	h.ctrl = ctrl
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	go func() { h.done <- ctrl.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	h.cancel = nil
	select {
	case err := <-h.done:
		if err != nil {
			h.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		h.t.Error("Run did not return after cancellation")
	}
}

func (h *harness) speaker(i int) *fakeSpeaker {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i >= len(h.speakers) {
		return nil
	}
	return h.speakers[i]
}

func (h *harness) numSpeakers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.speakers)
}

func (h *harness) create(o datastore.Object) {
	h.t.Helper()
	if _, err := h.store.Create(context.Background(), o); err != nil {
		h.t.Fatalf("create %s: %v", o.GetName(), err)
	}
}

func (h *harness) delete(kind datastore.Kind, name string) {
	h.t.Helper()
	if err := h.store.Delete(context.Background(), kind, "", name, datastore.DeleteOptions{}); err != nil {
		h.t.Fatalf("delete %s: %v", name, err)
	}
}

// waitState waits until speaker i has exactly these peers and adverts.
func (h *harness) waitState(i int, peers, adverts []string) {
	h.t.Helper()
	eventually(h.t, "speaker state", func() bool {
		sp := h.speaker(i)
		return sp != nil && slices.Equal(sp.peerSnapshot(), peers) && slices.Equal(sp.advertSnapshot(), adverts)
	})
}

func TestController(t *testing.T) {
	h := newHarness(t, three[0], three[1], poolA, mkBlock("10.65.0.0/26", "a", nil),
		mkBlock("10.65.0.64/26", "b", map[int]string{7: "a"}), mkBlock("10.65.0.128/26", "b", nil))
	h.waitState(0, []string{"192.168.9.2"}, []string{"10.65.0.0/26", "10.65.0.71/32"})
	sp := h.speaker(0)

	// Learned routes reach the callback after End-of-RIB, own prefixes left out.
	sp.events <- route("10.65.0.128/26", "192.168.9.2")
	sp.events <- route("10.65.0.71/32", "192.168.9.2")
	sp.events <- eor("192.168.9.2")
	eventually(t, "the learned set", func() bool { return h.sink.last() == "10.65.0.128/26>192.168.9.2" })

	// The NodeStatus says what the speaker reports.
	eventually(t, "the NodeStatus", func() bool {
		ns, err := datastore.Get[*v1.NodeStatus](context.Background(), h.store, "", "a")
		return err == nil && len(ns.Status.BGP.Peers) == 1 && ns.Status.BGP.Peers[0].PeerIP == "192.168.9.2" &&
			ns.Status.BGP.Peers[0].Type == "mesh" && ns.Status.BGP.NumberNotEstablished == 1
	})

	// A new node and an external peer come; b goes.
	h.create(three[2])
	h.create(mkPeer("tor", v1.BGPPeerSpec{PeerIP: "192.168.9.254", ASNumber: 65100}))
	h.delete(datastore.KindNode, "b")
	h.waitState(0, []string{"192.168.9.3", "192.168.9.254"}, []string{"10.65.0.0/26", "10.65.0.71/32"})

	// A peer with a missing password Secret is a problem, not a crash; the Secret fixes it.
	h.create(mkPeer("secure", v1.BGPPeerSpec{PeerIP: "192.168.9.253", ASNumber: 65100, Password: secretRef("bgp", "pw")}))
	eventually(t, "the password problem", func() bool {
		return slices.ContainsFunc(h.ctrl.Problems(), func(p Problem) bool { return p.Object == "BGPPeer secure" })
	})
	h.create(mkSecret("bgp", map[string]string{"pw": "x"}))
	h.waitState(0, []string{"192.168.9.3", "192.168.9.253", "192.168.9.254"}, []string{"10.65.0.0/26", "10.65.0.71/32"})
	if p := sp.peer("192.168.9.253"); p.Password != "x" {
		t.Errorf("password %q, want x", p.Password)
	}

	// A new AS needs a new speaker: the old one stops, the new one gets everything.
	h.create(mkConfig("default", v1.BGPConfigurationSpec{ASNumber: asn(65000)}))
	h.waitState(1, []string{"192.168.9.3", "192.168.9.253", "192.168.9.254"}, []string{"10.65.0.0/26", "10.65.0.71/32"})
	if !slices.Contains(sp.takeCalls(), "Stop") {
		t.Error("the old speaker was not stopped")
	}
	if g := h.speaker(1).startedWith(); g == nil || g.ASN != 65000 {
		t.Errorf("new speaker started with %+v", g)
	}

	// Cancellation stops the speaker.
	h.stop()
	if calls := h.speaker(1).takeCalls(); !slices.Contains(calls, "Stop") {
		t.Errorf("speaker not stopped on exit: %q", calls)
	}
	if n := h.numSpeakers(); n != 2 {
		t.Errorf("%d speakers made, want 2", n)
	}
}

func TestControllerBGPOff(t *testing.T) {
	// No Node for this node: nothing starts, and felix is told that nothing is learned.
	h := newHarness(t, three[1], poolA)
	eventually(t, "an empty learned set", func() bool { return h.sink.count() == 1 && h.sink.last() == "" })
	if g := h.speaker(0).startedWith(); g != nil {
		t.Errorf("speaker started without a node address: %+v", g)
	}
	if d := h.ctrl.Desired(); d == nil || d.Global != nil {
		t.Errorf("Desired: %v", d)
	}
	// The node appears: BGP starts.
	h.create(three[0])
	h.waitState(0, []string{"192.168.9.2"}, nil)
}

func TestInputsKeepLastValid(t *testing.T) {
	in := newInputs(zaptest.NewLogger(t))
	good := mkPeer("p", v1.BGPPeerSpec{PeerIP: "10.0.0.1", ASNumber: 1})
	bad := mkPeer("p", v1.BGPPeerSpec{PeerIP: "10.0.0.1"}) // no asNumber
	in.set(datastore.KindBGPPeer, good)
	in.set(datastore.KindBGPPeer, bad)
	snap, probs := in.snapshot("a", "")
	if len(snap.Peers) != 1 || snap.Peers[0].Spec.ASNumber != 1 {
		t.Errorf("peers after an invalid update: %+v", snap.Peers)
	}
	if len(probs) != 1 {
		t.Errorf("problems: %v", probs)
	}
	// With no earlier version the invalid object is kept, for Calc to report.
	in2 := newInputs(zaptest.NewLogger(t))
	in2.set(datastore.KindBGPPeer, bad)
	if snap, _ := in2.snapshot("a", ""); len(snap.Peers) != 1 {
		t.Errorf("invalid first version dropped: %+v", snap.Peers)
	}
}
