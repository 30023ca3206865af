package controller

import (
	"context"
	"net/netip"
	"reflect"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/datastore"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func testStates() []bgp.PeerState {
	return []bgp.PeerState{
		{Address: netip.MustParseAddr("192.168.9.254"), Type: "global", ASN: 65100, State: bgp.StateActive,
			Since: t0.Add(500 * time.Millisecond), LastError: "connection refused"},
		{Address: netip.MustParseAddr("192.168.9.2"), Type: "mesh", ASN: 64512, State: bgp.StateEstablished,
			Since: t0, PrefixesReceived: 3, PrefixesAccepted: 2, PrefixesAdvertised: 4, LastError: "old news"},
		{Address: netip.MustParseAddr("192.168.9.3"), Type: "reflector", State: bgp.StateIdle, AdminDown: true,
			LastError: "maximum number of prefixes reached"},
	}
}

func TestBGPStatus(t *testing.T) {
	since := metav1.NewTime(t0)
	want := v1.BGPStatus{NumberEstablished: 1, NumberNotEstablished: 2, Peers: []v1.BGPPeerStatus{
		{PeerIP: "192.168.9.2", Type: "mesh", State: "Established", Since: &since, PrefixesReceived: 3, PrefixesAdvertised: 4},
		{PeerIP: "192.168.9.3", Type: "reflector", State: "Idle", Message: "held down: maximum number of prefixes reached"},
		{PeerIP: "192.168.9.254", Type: "global", State: "Active", Since: &since, Message: "connection refused"},
	}}
	if got := BGPStatus(testStates()); !reflect.DeepEqual(got, want) {
		t.Errorf("BGPStatus:\n got %+v\nwant %+v", got, want)
	}
	if got := BGPStatus(nil); got.Peers == nil || len(got.Peers) != 0 {
		t.Errorf("BGPStatus(nil) = %+v, want an empty list", got)
	}
}

func TestStatusWriterCreatesAndUpdates(t *testing.T) {
	ctx := context.Background()
	s := datastore.NewMemory()
	states := testStates()
	now := t0
	w := NewStatusWriter(s, "a", func(context.Context) ([]bgp.PeerState, error) { return states, nil },
		StatusOptions{Now: func() time.Time { return now }})
	period, err := w.Write(ctx)
	if err != nil || period != DefaultStatusInterval {
		t.Fatalf("first Write: %v, period %s", err, period)
	}
	ns, err := datastore.Get[*v1.NodeStatus](ctx, s, "", "a")
	if err != nil {
		t.Fatal(err)
	}
	if ns.Spec.Node != "a" || ns.Status.BGP.NumberEstablished != 1 || len(ns.Status.BGP.Peers) != 3 || !ns.Status.LastUpdated.Time.Equal(t0) {
		t.Errorf("NodeStatus after the first write: %+v", ns)
	}

	// Someone else's fields stay; the period follows spec.updatePeriodSeconds.
	ns.Status.Agent = v1.AgentStatus{Ready: true, Version: "x"}
	ns.Status.Routes.Learned = 7
	ns.Spec.UpdatePeriodSeconds = ptr(uint32(0))
	if _, err := datastore.Update(ctx, s, ns); err != nil {
		t.Fatal(err)
	}
	states = states[1:2]
	now = t0.Add(time.Minute)
	if period, err = w.Write(ctx); err != nil || period != 0 {
		t.Fatalf("second Write: %v, period %s", err, period)
	}
	ns, _ = datastore.Get[*v1.NodeStatus](ctx, s, "", "a")
	if !ns.Status.Agent.Ready || ns.Status.Routes.Learned != 7 {
		t.Errorf("the writer changed fields it does not own: %+v", ns.Status)
	}
	if ns.Status.BGP.NumberEstablished != 1 || ns.Status.BGP.NumberNotEstablished != 0 || !ns.Status.LastUpdated.Time.Equal(now) {
		t.Errorf("status.bgp after the second write: %+v", ns.Status)
	}
}

func TestStatusWriterRunKicks(t *testing.T) {
	s := datastore.NewMemory()
	peersCalled := make(chan struct{}, 100)
	w := NewStatusWriter(s, "a", func(context.Context) ([]bgp.PeerState, error) {
		peersCalled <- struct{}{}
		return nil, nil
	}, StatusOptions{Interval: time.Hour, MinInterval: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-peersCalled // the first write, at once
	// A burst of kicks makes one more write, not one each.
	for range 50 {
		w.Kick()
	}
	<-peersCalled
	select {
	case <-peersCalled:
		// a kick may have landed after the write started; at most one more
	case <-time.After(100 * time.Millisecond):
	}
	select {
	case <-peersCalled:
		t.Error("more than two writes for one burst of kicks")
	case <-time.After(100 * time.Millisecond):
	}
}
