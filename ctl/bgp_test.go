package ctl_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/ctl"
	"github.com/tabbynet/tabby/datastore"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestBGPPeers(t *testing.T) {
	s := datastore.NewMemory()
	since := metav1.NewTime(time.Now().Add(-2 * time.Hour))
	for _, ns := range []*v1.NodeStatus{
		{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}, Spec: v1.NodeStatusSpec{Node: "node-b"},
			Status: v1.NodeStatusStatus{BGP: v1.BGPStatus{NumberEstablished: 1, Peers: []v1.BGPPeerStatus{
				{PeerIP: "10.0.0.1", Type: "mesh", State: "Established", Since: &since, PrefixesReceived: 1, PrefixesAdvertised: 2},
			}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}, Spec: v1.NodeStatusSpec{Node: "node-a"},
			Status: v1.NodeStatusStatus{BGP: v1.BGPStatus{NumberEstablished: 1, NumberNotEstablished: 1, Peers: []v1.BGPPeerStatus{
				{PeerIP: "10.0.0.2", Type: "mesh", State: "Established", Since: &since, PrefixesReceived: 2, PrefixesAdvertised: 1},
				{PeerIP: "192.0.2.1", Type: "global", State: "Active", Message: "connection refused"},
			}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "node-c"}, Spec: v1.NodeStatusSpec{Node: "node-c"}},
	} {
		if _, err := datastore.Create(context.Background(), s, ns); err != nil {
			t.Fatal(err)
		}
	}
	r := mustRun(t, s, "bgp", "peers")
	want := "NODE     PEER        TYPE     STATE         SINCE   RECEIVED   ADVERTISED   MESSAGE\n" +
		"node-a   10.0.0.2    mesh     Established   120m    2          1            -\n" +
		"node-a   192.0.2.1   global   Active        -       0          0            connection refused\n" +
		"node-b   10.0.0.1    mesh     Established   120m    1          2            -\n"
	if r.stdout != want {
		t.Fatalf("bgp peers\n got:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = mustRun(t, s, "bgp", "peers", "-o", "json")
	var got ctl.BGPPeerList
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("-o json: %v\n%s", err, r.stdout)
	}
	if len(got.Peers) != 3 || got.Peers[0].Node != "node-a" || got.Peers[0].PeerIP != "10.0.0.2" || got.Peers[2].State != "Established" {
		t.Fatalf("-o json decoded %+v", got)
	}
	mustRun(t, s, "bgp", "peers", "-o", "yaml")
	expectCode(t, tabbyctl(t, s, "", "bgp", "peers", "-o", "wide"), 2)
	expectCode(t, tabbyctl(t, s, "", "bgp", "peers", "extra"), 2)
	r = mustRun(t, datastore.NewMemory(), "bgp", "peers", "-o", "json")
	expectContains(t, "empty", r.stdout, `"peers": []`)
}

func TestNodeStatusBGP(t *testing.T) {
	st := sampleStatus()
	since := time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC)
	st.BGP = &localapi.BGPStatus{Enabled: true, Problems: []string{"BGPPeer bad: no such node"}, Peers: []localapi.BGPPeer{
		{Address: "10.0.0.3", Type: "mesh", ASN: 64512, State: "Established", Since: &since, PrefixesReceived: 1, PrefixesAdvertised: 1},
		{Address: "10.0.0.4", Type: "mesh", ASN: 64512, State: "Active", LastError: "hold timer expired"},
	}}
	r := nodeCtl(t, "node", "status", "--socket", fakeAgent(t, serveJSON(t, localapi.PathStatus, st)))
	expectCode(t, r, 0)
	expectContains(t, "status", r.stdout, "BGP:         2 peers (1 established)\n",
		"BGP issue:   BGPPeer bad: no such node\n",
		"PEER       TYPE   ASN     STATE         SINCE   RECEIVED   ADVERTISED   MESSAGE\n",
		"10.0.0.3   mesh   64512   Established   60m     1          1            -\n",
		"10.0.0.4   mesh   64512   Active        -       0          0            hold timer expired\n")

	st.BGP = &localapi.BGPStatus{}
	r = nodeCtl(t, "node", "status", "--socket", fakeAgent(t, serveJSON(t, localapi.PathStatus, st)))
	expectContains(t, "status", r.stdout, "BGP:         disabled (--bgp=false)\n")
	st.BGP = nil
	r = nodeCtl(t, "node", "status", "--socket", fakeAgent(t, serveJSON(t, localapi.PathStatus, st)))
	expectContains(t, "status", r.stdout, "BGP:         unknown (the agent does not report BGP)\n")
}
