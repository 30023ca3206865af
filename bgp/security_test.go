package bgp

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestMD5(t *testing.T) {
	t.Parallel()
	ip := testNet()
	a := newNode(t, "a", ip(1), 64512)
	b := newNode(t, "b", ip(2), 64512)
	c := newNode(t, "c", ip(3), 64512)
	password := func(s string) peerOpt { return func(p *Peer) { p.Password = s } }
	a.peer(b, password("s3cret"))
	b.peer(a, password("s3cret"))
	a.peer(c, password("s3cret"))
	c.peer(a, password("wrong"))

	a.advertise("10.60.1.0/26")
	b.waitRoute("10.60.1.0/26", a)
	// Both ends of a-c have been trying since before a-b came up; give them three more
	// connect-retry intervals.
	c.rec.never(t, 3*2*time.Second, "c: session with a wrong password came up", func(r *recorder) bool {
		return r.peers[a.addr] == StateEstablished
	})
	if ps := a.peerState(c); ps.State == StateEstablished {
		t.Fatalf("a: session with c (wrong password) is %+v", ps)
	}
	// Both ends say what to check (the mismatch only shows as connections timing out).
	for _, ps := range []PeerState{a.peerState(c), c.peerState(a)} {
		if !strings.Contains(ps.LastError, "no TCP connection with") || !strings.Contains(ps.LastError, "TCP MD5 password is set") {
			t.Errorf("session %s with a wrong password: last error %q, want one about the TCP connection and the MD5 password", ps.Address, ps.LastError)
		}
	}
	if ps := b.peerState(a); ps.State != StateEstablished || ps.LastError != "" {
		t.Errorf("b: session with a (right password) is %+v, want Established without an error", ps)
	}

	// The right password (a session change: re-created) brings it up.
	if err := c.sp.UpdatePeer(context.Background(), c.peerConfig(a, password("s3cret"))); err != nil {
		t.Fatal(err)
	}
	c.waitRoute("10.60.1.0/26", a)
	if ps := c.peerState(a); ps.LastError != "" {
		t.Errorf("c: session with a, Established with the right password, still says %q", ps.LastError)
	}
}

func TestMaxPrefixes(t *testing.T) {
	t.Parallel()
	for _, gr := range []bool{false, true} {
		t.Run(fmt.Sprintf("graceful-restart=%v", gr), func(t *testing.T) {
			t.Parallel()
			testMaxPrefixes(t, gr)
		})
	}
}

// testMaxPrefixes: b allows a 2 prefixes; the third tears the session down, b forgets
// a's routes (even with graceful restart on) and says why, and the session stays down.
func testMaxPrefixes(t *testing.T, gracefulRestart bool) {
	ip := testNet()
	a := newNode(t, "a", ip(1), 64512)
	b := newNode(t, "b", ip(2), 64512)
	gr := func(p *Peer) { p.GracefulRestart = gracefulRestart; p.RestartTime = 60 * time.Second }
	a.peer(b, gr)
	b.peer(a, gr, func(p *Peer) { p.MaxPrefixes = 2 })
	b.waitEstablished(a)

	a.advertise("10.60.1.0/26")
	a.advertise("10.60.2.0/26")
	b.waitRoute("10.60.2.0/26", a)
	from := b.rec.len()
	a.advertise("10.60.3.0/26")
	b.rec.wait(t, "b: session to a torn down", func(r *recorder) bool {
		return r.peers[a.addr] != StateEstablished
	})
	for _, p := range []string{"10.60.1.0/26", "10.60.2.0/26", "10.60.3.0/26"} {
		b.waitNoRoute(p)
	}
	if i := b.rec.index(from, func(ev Event) bool {
		return ev.Kind == EventPeer && ev.Peer == a.addr && strings.Contains(ev.Reason, "maximum prefixes")
	}); i < 0 {
		t.Errorf("b: no peer-down event saying why\n%s", b.rec.dump())
	}
	a.rec.wait(t, "a: session to b torn down", func(r *recorder) bool { return r.peers[b.addr] != StateEstablished })
	if ps := a.peerState(b); !strings.Contains(ps.LastError, "maximum number of prefixes reached") {
		t.Errorf("a: peer b is %+v, want the Cease it received as last error", ps)
	}
	// It stays down: a keeps trying, b refuses.
	b.rec.never(t, 3*2*time.Second, "b: session to a came back up past the prefix limit", func(r *recorder) bool {
		return r.peers[a.addr] == StateEstablished
	})
	ps := b.peerState(a)
	if ps.State == StateEstablished || !ps.AdminDown || !strings.Contains(ps.LastError, "maximum prefixes exceeded") {
		t.Fatalf("b: peer a is %+v, want down, admin down, last error about maximum prefixes", ps)
	}
}
