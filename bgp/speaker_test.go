package bgp

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestIBGPAdvertiseWithdraw(t *testing.T) {
	t.Parallel()
	ip := testNet()
	a := newNode(t, "a", ip(1), 64512)
	b := newNode(t, "b", ip(2), 64512)
	a.peer(b)
	b.peer(a)
	a.waitEstablished(b)
	b.waitEstablished(a)

	a.advertise("10.60.1.0/26")
	b.waitRoute("10.60.1.0/26", a)
	if got := b.routes()[netip.MustParsePrefix("10.60.1.0/26")]; len(got) != 1 || got[0] != a.addr {
		t.Fatalf("b: Routes() has %v for 10.60.1.0/26, want [%s]", got, a.addr)
	}
	// Our own prefix is not a learned route.
	if _, ok := a.routes()[netip.MustParsePrefix("10.60.1.0/26")]; ok {
		t.Fatalf("a: its own prefix is reported as learned")
	}
	ps := b.peerState(a)
	if ps.State != StateEstablished || ps.PrefixesReceived != 1 || ps.Type != PeerTypeMesh || ps.Since.IsZero() {
		t.Fatalf("b: peer a is %+v, want Established, 1 prefix received, type mesh, since set", ps)
	}
	if ps := a.peerState(b); ps.PrefixesAdvertised != 1 {
		t.Fatalf("a: peer b is %+v, want 1 prefix advertised", ps)
	}

	a.withdraw("10.60.1.0/26")
	b.waitNoRoute("10.60.1.0/26")
	if i := b.rec.index(0, func(ev Event) bool {
		return ev.Kind == EventRoute && ev.Prefix == netip.MustParsePrefix("10.60.1.0/26") && ev.Withdrawn
	}); i < 0 {
		t.Fatalf("b: no withdrawn event\n%s", b.rec.dump())
	}
	// Withdrawing what is not advertised is a no-op.
	a.withdraw("10.60.99.0/26")
}

func TestEBGP(t *testing.T) {
	t.Parallel()
	ip := testNet()
	// a has no listener and b is passive: only a's connection can bring the session up.
	a := newNode(t, "a", ip(1), 64601, noListener())
	b := newNode(t, "b", ip(2), 64602)
	gtsm := func(p *Peer) { p.TTLSecurity = 1; p.Type = PeerTypeGlobal }
	a.peer(b, gtsm)
	b.peer(a, gtsm, func(p *Peer) { p.Passive = true })
	b.waitEstablished(a)
	if c, err := net.Dial("tcp", netip.AddrPortFrom(a.addr, a.port).String()); err == nil {
		c.Close()
		t.Fatalf("a listens on %s:%d with ListenPort 0", a.addr, a.port)
	}

	a.advertise("10.60.1.0/26")
	b.advertise("10.61.1.0/26")
	b.waitRoute("10.60.1.0/26", a)
	a.waitRoute("10.61.1.0/26", b)
	a.withdraw("10.60.1.0/26")
	b.waitNoRoute("10.60.1.0/26")
	if ps := b.peerState(a); ps.ASN != 64601 || ps.Type != PeerTypeGlobal {
		t.Fatalf("b: peer a is %+v", ps)
	}
}

func TestECMP(t *testing.T) {
	t.Parallel()
	ip := testNet()
	a := newNode(t, "a", ip(1), 64512)
	b := newNode(t, "b", ip(2), 64512)
	c := newNode(t, "c", ip(3), 64512)
	for _, x := range []*node{a, b} {
		x.peer(c)
		c.peer(x)
	}
	c.waitEstablished(a, b)

	a.advertise("10.60.9.0/26")
	b.advertise("10.60.9.0/26")
	c.waitRoute("10.60.9.0/26", a, b)
	if i := c.rec.index(0, func(ev Event) bool { return ev.Kind == EventRoute && len(ev.NextHops) == 2 }); i < 0 {
		t.Fatalf("c: no event with two next hops\n%s", c.rec.dump())
	}
	a.withdraw("10.60.9.0/26")
	c.waitRoute("10.60.9.0/26", b)
	b.withdraw("10.60.9.0/26")
	c.waitNoRoute("10.60.9.0/26")
}

func TestRouteReflector(t *testing.T) {
	t.Parallel()
	ip := testNet()
	a := newNode(t, "a", ip(1), 64512)
	rr := newNode(t, "rr", ip(2), 64512)
	c := newNode(t, "c", ip(3), 64512)
	d := newNode(t, "d", ip(4), 64512)
	client := func(p *Peer) {
		p.RouteReflectorClient = true
		p.RouteReflectorClusterID = "224.0.0.1"
		p.Type = PeerTypeNode
	}
	// No mesh: every client peers with the reflector only. d's session asks the
	// reflector for next hop self.
	for _, x := range []*node{a, c, d} {
		x.peer(rr, func(p *Peer) { p.Type = PeerTypeReflector })
	}
	rr.peer(a, client)
	rr.peer(c, client)
	rr.peer(d, client, func(p *Peer) { p.NextHop = NextHopSelf })
	rr.waitEstablished(a, c, d)

	a.advertise("10.60.3.0/26")
	c.advertise("10.60.4.0/26")
	c.waitRoute("10.60.3.0/26", a)
	a.waitRoute("10.60.4.0/26", c)
	d.waitRoute("10.60.3.0/26", rr)
	d.waitRoute("10.60.4.0/26", rr)

	a.withdraw("10.60.3.0/26")
	c.waitNoRoute("10.60.3.0/26")
	d.waitNoRoute("10.60.3.0/26")
}

func TestFilters(t *testing.T) {
	t.Parallel()
	ip := testNet()
	a := newNode(t, "a", ip(1), 64512)
	b := newNode(t, "b", ip(2), 64512)
	exportPolicy := func(p *Peer) {
		p.Export = &PrefixPolicy{Rules: []PrefixRule{{CIDR: netip.MustParsePrefix("10.60.7.0/26"), Match: MatchEqual, Action: Reject}}}
	}
	importPolicy := func(p *Peer) {
		p.Import = &PrefixPolicy{Rules: []PrefixRule{
			{CIDR: netip.MustParsePrefix("10.60.0.0/16"), MinLen: 26, MaxLen: 26, Action: Accept},
			{CIDR: netip.MustParsePrefix("10.60.6.0/24"), Action: Reject},
		}, Default: Reject}
	}
	a.peer(b, exportPolicy)
	b.peer(a, importPolicy)
	b.waitEstablished(a)

	// Every prefix goes in its own UPDATE, in order: when b has the last one it has
	// seen (and dropped) the others.
	for _, p := range []string{"10.60.7.0/26", "10.60.6.0/28", "10.61.0.0/26", "10.60.5.0/26"} {
		a.advertise(p)
	}
	b.waitRoute("10.60.5.0/26", a)
	for _, p := range []string{"10.60.7.0/26", "10.60.6.0/28", "10.61.0.0/26"} {
		if _, ok := b.routes()[netip.MustParsePrefix(p)]; ok {
			t.Errorf("b: %s passed the filters", p)
		}
	}
	if ps := b.peerState(a); ps.PrefixesReceived != 3 {
		t.Errorf("b: peer a is %+v, want 3 prefixes received (10.60.7.0/26 is not exported)", ps)
	}

	// Dropping the filters takes effect with a soft reset, without a session flap.
	from := b.rec.len()
	if err := b.sp.UpdatePeer(context.Background(), b.peerConfig(a)); err != nil {
		t.Fatal(err)
	}
	b.waitRoute("10.60.6.0/28", a)
	b.waitRoute("10.61.0.0/26", a)
	if err := a.sp.UpdatePeer(context.Background(), a.peerConfig(b)); err != nil {
		t.Fatal(err)
	}
	b.waitRoute("10.60.7.0/26", a)
	if i := b.rec.index(from, func(ev Event) bool { return ev.Kind == EventPeer }); i >= 0 {
		t.Fatalf("b: the session flapped on a filter update\n%s", b.rec.dump())
	}
}

func TestRemoveAndUpdatePeer(t *testing.T) {
	t.Parallel()
	ip := testNet()
	a := newNode(t, "a", ip(1), 64512)
	b := newNode(t, "b", ip(2), 64512)
	a.peer(b)
	b.peer(a)
	a.advertise("10.60.1.0/26")
	b.waitRoute("10.60.1.0/26", a)

	if err := b.sp.RemovePeer(context.Background(), a.addr); err != nil {
		t.Fatal(err)
	}
	b.waitNoRoute("10.60.1.0/26")
	if ps, _ := b.sp.Peers(context.Background()); len(ps) != 0 {
		t.Fatalf("b: peers after removal: %+v", ps)
	}
	if err := b.sp.RemovePeer(context.Background(), a.addr); err == nil {
		t.Fatalf("b: removing an unknown peer did not fail")
	}
	b.peer(a)
	b.waitRoute("10.60.1.0/26", a)

	// A session setting (the hold time) changes: the session is re-created.
	from := b.rec.len()
	if err := b.sp.UpdatePeer(context.Background(), b.peerConfig(a, func(p *Peer) { p.HoldTime = 6 * time.Second })); err != nil {
		t.Fatal(err)
	}
	b.rec.wait(t, "b: session to a re-established", func(r *recorder) bool {
		for _, ev := range r.events[from:] {
			if ev.Kind == EventPeer && ev.Peer == a.addr && ev.State == StateEstablished {
				return true
			}
		}
		return false
	})
	b.waitRoute("10.60.1.0/26", a)
}
