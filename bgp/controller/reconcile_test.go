package controller

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"slices"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bgp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestReconcile(t *testing.T) {
	ctx := context.Background()
	sp := newFakeSpeaker()
	r := NewReconciler(sp, bgp.Global{LocalRestarting: true}, nil)
	in := Input{NodeName: "a", Nodes: three, Pools: []*v1.IPPool{poolA},
		Blocks: []*v1.IPAMBlock{mkBlock("10.65.0.0/26", "a", nil), mkBlock("10.65.0.64/26", "b", map[int]string{3: "a"})}}
	step := func(name string, in Input, want ...string) {
		t.Helper()
		if err := r.Apply(ctx, Calc(in)); err != nil {
			t.Fatalf("%s: Apply: %v", name, err)
		}
		if got := sp.takeCalls(); !slices.Equal(got, want) {
			t.Errorf("%s: calls\n got %q\nwant %q", name, got, want)
		}
	}

	step("first", in, "Start 192.168.9.1 as 64512 port 179",
		"AddPeer 192.168.9.2", "AddPeer 192.168.9.3", "Advertise 10.65.0.0/26", "Advertise 10.65.0.67/32")
	if !sp.started.LocalRestarting {
		t.Error("the base Global's LocalRestarting was not passed to Start")
	}
	p := sp.peers[netip.MustParseAddr("192.168.9.2")]
	if p.Type != "mesh" || p.ASN != 64512 || p.LocalAddress != netip.MustParseAddr("192.168.9.1") || !p.GracefulRestart ||
		p.Import == nil || p.Import.Default != bgp.Reject || !p.Import.Allows(netip.MustParsePrefix("10.65.1.0/26")) {
		t.Errorf("mesh peer as configured: %+v", p)
	}
	step("no change", in)

	// b leaves, c's AS changes, a new block, the borrowed address is released, and the
	// pool's block gets a community.
	in2 := in
	in2.Nodes = []*v1.Node{three[0], mkNode("c", "192.168.9.3/24", nil, func(b *v1.NodeBGPSpec) { b.ASNumber = asn(65003) })}
	in2.Blocks = []*v1.IPAMBlock{mkBlock("10.65.0.0/26", "a", nil), mkBlock("10.65.1.0/26", "a", nil)}
	in2.Configs = []*v1.BGPConfiguration{mkConfig("default", v1.BGPConfigurationSpec{
		PrefixAdvertisements: []v1.PrefixAdvertisement{{CIDR: "10.65.0.0/24", Communities: []string{"65000:7"}}}})}
	step("changes", in2, "RemovePeer 192.168.9.2", "UpdatePeer 192.168.9.3",
		"Advertise 10.65.0.0/26 65000:7", "Advertise 10.65.1.0/26", "Withdraw 10.65.0.67/32")

	// A new pool changes every session's import policy.
	in3 := in2
	in3.Pools = []*v1.IPPool{poolA, poolOff}
	step("new pool", in3, "UpdatePeer 192.168.9.3")

	// A failed call is tried again by the next Apply; the rest goes ahead.
	in4 := in3
	in4.Nodes = append(slices.Clone(in3.Nodes), mkNode("d", "192.168.9.4/24", nil))
	in4.Blocks = append(slices.Clone(in3.Blocks), mkBlock("10.65.2.0/26", "a", nil))
	boom := errors.New("boom")
	sp.setFail("AddPeer 192.168.9.4", boom)
	if err := r.Apply(ctx, Calc(in4)); !errors.Is(err, boom) {
		t.Fatalf("Apply with a failing AddPeer: %v, want boom", err)
	}
	if got, want := sp.takeCalls(), []string{"Advertise 10.65.2.0/26"}; !slices.Equal(got, want) {
		t.Errorf("calls with a failure: %q, want %q", got, want)
	}
	sp.setFail("AddPeer 192.168.9.4", nil)
	step("retry", in4, "AddPeer 192.168.9.4")

	// A new AS needs a new speaker; nothing else is done.
	in5 := in4
	in5.Configs = []*v1.BGPConfiguration{mkConfig("default", v1.BGPConfigurationSpec{ASNumber: asn(65000)})}
	if err := r.Apply(ctx, Calc(in5)); !errors.Is(err, ErrRestartNeeded) {
		t.Fatalf("Apply with a new AS: %v, want ErrRestartNeeded", err)
	}
	if got := sp.takeCalls(); len(got) != 0 {
		t.Errorf("calls after ErrRestartNeeded: %q", got)
	}

	// The node loses its address: BGP is off, the speaker keeps running empty.
	in6 := in4
	in6.Nodes = []*v1.Node{mkNode("a", "", nil), three[2]}
	step("bgp off", in6, "RemovePeer 192.168.9.3", "RemovePeer 192.168.9.4",
		"Withdraw 10.65.0.0/26", "Withdraw 10.65.1.0/26", "Withdraw 10.65.2.0/26")
}

func TestReconcileNotStartedWithoutGlobal(t *testing.T) {
	sp := newFakeSpeaker()
	r := NewReconciler(sp, bgp.Global{}, nil)
	if err := r.Apply(context.Background(), Calc(Input{NodeName: "a"})); err != nil {
		t.Fatal(err)
	}
	if calls := sp.takeCalls(); len(calls) != 0 || r.Started() {
		t.Errorf("calls %q, started %v; want none", calls, r.Started())
	}
	sp.setFail("Start 192.168.9.1 as 64512 port 179", errors.New("port in use"))
	if err := r.Apply(context.Background(), Calc(Input{NodeName: "a", Nodes: three})); err == nil || r.Started() {
		t.Errorf("Apply with a failing Start: %v, started %v", err, r.Started())
	}
}

func TestSpeakerPeer(t *testing.T) {
	d := Calc(Input{NodeName: "a", Nodes: three, Pools: []*v1.IPPool{poolA, poolOff},
		Configs: []*v1.BGPConfiguration{meshOff()},
		Peers: []*v1.BGPPeer{mkPeer("tor", v1.BGPPeerSpec{PeerIP: "192.168.9.254:1790", ASNumber: 65100, NextHopMode: v1.NextHopKeep,
			TTLSecurity: ptr(uint8(2)), MaxPrefixes: ptr(uint32(10)), NumAllowedLocalASNumbers: ptr(int32(2)),
			MaxRestartTime: dur(10 * time.Second), Filters: []string{"f"}})},
		Filters: []*v1.BGPFilter{{ObjectMeta: metav1.ObjectMeta{Name: "f"}, Spec: v1.BGPFilterSpec{
			ImportV4: []v1.BGPFilterRule{{Action: v1.BGPFilterAccept, PrefixLength: &v1.BGPFilterPrefixLength{Max: ptr(int32(0))}}},
			ExportV4: []v1.BGPFilterRule{{CIDR: "10.65.0.0/24", MatchOperator: v1.MatchNotIn, Action: v1.BGPFilterReject}},
		}}}})
	tor := netip.MustParseAddr("192.168.9.254")
	p := d.SpeakerPeer(d.Peers[tor])
	want := bgp.Peer{Address: tor, Port: 1790, LocalAddress: netip.MustParseAddr("192.168.9.1"), ASN: 65100, LocalASN: 64512,
		KeepaliveTime: DefaultKeepaliveTime, HoldTime: DefaultHoldTime, TTLSecurity: 2, MaxPrefixes: 10,
		NextHop: bgp.NextHopKeep, AllowOwnAS: 2, GracefulRestart: true, RestartTime: 10 * time.Second, Type: "global",
		Import: &bgp.PrefixPolicy{Default: bgp.Reject, Rules: []bgp.PrefixRule{
			{CIDR: netip.MustParsePrefix("0.0.0.0/0"), Match: bgp.MatchEqual, Action: bgp.Accept},
			{CIDR: netip.MustParsePrefix("10.65.0.0/16"), Match: bgp.MatchIn, Action: bgp.Accept},
			{CIDR: netip.MustParsePrefix("10.66.0.0/16"), Match: bgp.MatchIn, Action: bgp.Accept},
		}},
		Export: &bgp.PrefixPolicy{Default: bgp.Reject, Rules: []bgp.PrefixRule{
			{CIDR: netip.MustParsePrefix("10.65.0.0/24"), Match: bgp.MatchNotIn, Action: bgp.Reject},
			{CIDR: netip.MustParsePrefix("10.66.0.0/16"), Match: bgp.MatchIn, Action: bgp.Reject},
			{CIDR: netip.MustParsePrefix("10.65.0.0/16"), Match: bgp.MatchIn, Action: bgp.Accept},
			{CIDR: netip.MustParsePrefix("10.66.0.0/16"), Match: bgp.MatchIn, Action: bgp.Accept},
		}},
	}
	if got, w := p, want; !equalPeer(got, w) {
		t.Errorf("SpeakerPeer:\n got %+v\n     import %+v\n     export %+v\nwant %+v\n     import %+v\n     export %+v",
			got, *got.Import, *got.Export, w, *w.Import, *w.Export)
	}
	// The filter's default-route rule (length 0 only) accepts 0.0.0.0/0 and nothing
	// more outside the pools; the export filter keeps everything outside 10.65.0.0/24 in.
	for pfx, ok := range map[string]bool{"0.0.0.0/0": true, "8.0.0.0/8": false, "10.65.3.0/26": true} {
		if got := d.Accept(tor, netip.MustParsePrefix(pfx)); got != ok {
			t.Errorf("Accept(tor, %s) = %v, want %v", pfx, got, ok)
		}
	}
	for pfx, ok := range map[string]bool{"10.65.0.0/26": true, "10.65.1.0/26": false, "10.66.0.0/26": false} {
		if got := p.Export.Allows(netip.MustParsePrefix(pfx)); got != ok {
			t.Errorf("export %s = %v, want %v", pfx, got, ok)
		}
	}
}

func equalPeer(a, b bgp.Peer) bool {
	ai, ae, bi, be := a.Import, a.Export, b.Import, b.Export
	a.Import, a.Export, b.Import, b.Export = nil, nil, nil, nil
	return reflect.DeepEqual(a, b) && slices.Equal(ai.Rules, bi.Rules) && ai.Default == bi.Default &&
		slices.Equal(ae.Rules, be.Rules) && ae.Default == be.Default
}
