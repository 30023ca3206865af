package bgp

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestGracefulRestart stops a with graceful=true and brings up a new speaker on a's
// address with LocalRestarting: b keeps a's routes meanwhile (no withdraw on Watch), the
// one a re-advertises stays, and the one it does not is withdrawn only after a's
// End-of-RIB.
func TestGracefulRestart(t *testing.T) {
	t.Parallel()
	ip := testNet()
	a := newNode(t, "a", ip(1), 64512)
	b := newNode(t, "b", ip(2), 64512)
	gr := func(p *Peer) { p.GracefulRestart = true; p.RestartTime = 30 * time.Second }
	a.peer(b, gr)
	b.peer(a, gr)
	a.advertise("10.60.1.0/26")
	a.advertise("10.60.2.0/26")
	b.waitRoute("10.60.1.0/26", a)
	b.waitRoute("10.60.2.0/26", a)

	from := b.rec.len()
	if err := a.sp.Stop(context.Background(), true); err != nil {
		t.Fatal(err)
	}
	b.rec.wait(t, "b: session to a down", func(r *recorder) bool { return r.peers[a.addr] != StateEstablished })
	if i := b.rec.index(from, func(ev Event) bool { return ev.Kind == EventPeer && ev.Reason == "graceful-restart" }); i < 0 {
		t.Fatalf("b: session to a did not go down for a graceful restart\n%s", b.rec.dump())
	}
	if rs := b.routes(); len(rs[netip.MustParsePrefix("10.60.1.0/26")]) != 1 || len(rs[netip.MustParsePrefix("10.60.2.0/26")]) != 1 {
		t.Fatalf("b: a's routes are gone while it restarts: %v", rs)
	}

	a2 := startNode(t, "a2", a.addr, a.port, 64512, restarting())
	a2.advertise("10.60.1.0/26") // 10.60.2.0/26 is gone in the new life
	a2.peer(b, gr)
	b.rec.wait(t, "b: end-of-rib from the restarted a", func(r *recorder) bool {
		for _, ev := range r.events[from:] {
			if ev.Kind == EventEndOfRIB && ev.Peer == a.addr {
				return true
			}
		}
		return false
	})
	b.waitNoRoute("10.60.2.0/26")
	b.waitRoute("10.60.1.0/26", a)
	eor := b.rec.index(from, func(ev Event) bool { return ev.Kind == EventEndOfRIB && ev.Peer == a.addr })
	gone := b.rec.index(from, func(ev Event) bool {
		return ev.Kind == EventRoute && ev.Prefix == netip.MustParsePrefix("10.60.2.0/26") && ev.Withdrawn
	})
	if gone < eor {
		t.Errorf("b: the stale 10.60.2.0/26 was withdrawn (event %d) before a's end-of-rib (event %d)", gone, eor)
	}
	if i := b.rec.index(from, func(ev Event) bool {
		return ev.Kind == EventRoute && ev.Prefix == netip.MustParsePrefix("10.60.1.0/26") && ev.Withdrawn
	}); i >= 0 {
		t.Errorf("b: 10.60.1.0/26 was withdrawn during the restart\n%s", b.rec.dump())
	}
	if ps := b.peerState(a); ps.State != StateEstablished || ps.PrefixesReceived != 1 {
		t.Errorf("b: peer a after the restart is %+v", ps)
	}
}

// TestStopSendsCease: a non-graceful Stop sends a Cease, so even a graceful-restart peer
// drops our routes at once.
func TestStopSendsCease(t *testing.T) {
	t.Parallel()
	ip := testNet()
	a := newNode(t, "a", ip(1), 64512)
	b := newNode(t, "b", ip(2), 64512)
	gr := func(p *Peer) { p.GracefulRestart = true; p.RestartTime = 120 * time.Second }
	a.peer(b, gr)
	b.peer(a, gr)
	a.advertise("10.60.1.0/26")
	b.waitRoute("10.60.1.0/26", a)
	if err := a.sp.Stop(context.Background(), false); err != nil {
		t.Fatal(err)
	}
	b.waitNoRoute("10.60.1.0/26")
	if ps := b.peerState(a); !strings.Contains(ps.LastError, "notification-received") {
		t.Errorf("b: peer a is %+v, want the Cease as last error", ps)
	}
	a.rec.wait(t, "a: Watch closed after Stop", func(r *recorder) bool { return r.closed })
	if err := a.sp.Advertise(context.Background(), netip.MustParsePrefix("10.60.2.0/26"), PathAttrs{}); err == nil {
		t.Errorf("a: Advertise after Stop did not fail")
	}
}
