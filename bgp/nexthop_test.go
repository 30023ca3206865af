package bgp

import (
	"net/netip"
	"testing"
)

// TestThirdPartyNextHop: node b passes node a's prefix (learned over iBGP) to an eBGP
// router t on their shared subnet. With a in ThirdPartyNextHops, t gets a as the next
// hop (RFC 4271 5.1.3); without it, gobgp's eBGP next-hop-self makes it b. b's own
// prefix goes with b.
func TestThirdPartyNextHop(t *testing.T) {
	t.Parallel()
	ip := testNet()
	a := newNode(t, "a", ip(1), 64512)
	b := newNode(t, "b", ip(2), 64512)
	tor := newNode(t, "tor", ip(3), 65000)
	a.peer(b)
	b.peer(a)
	b.peer(tor, func(p *Peer) { p.Type, p.ThirdPartyNextHops = PeerTypeGlobal, []netip.Addr{a.addr} })
	tor.peer(b, func(p *Peer) { p.Type = PeerTypeGlobal })
	tor.waitEstablished(b)
	b.waitEstablished(a)

	a.advertise("10.60.21.0/26")
	b.advertise("10.60.22.0/26")
	tor.waitRoute("10.60.21.0/26", a)
	tor.waitRoute("10.60.22.0/26", b)

	// The same session without SharedSubnet: a policy-only change (soft reset), and the
	// passed-on route now carries b.
	cfg := b.peerConfig(tor, func(p *Peer) { p.Type = PeerTypeGlobal })
	if err := b.sp.UpdatePeer(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	tor.waitRoute("10.60.21.0/26", b)
	if ps := tor.peerState(b); ps.Flaps != 0 {
		t.Fatalf("the session flapped on a next-hop change: %+v", ps)
	}
}
