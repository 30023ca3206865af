package probe

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/tabbynet/tabby/test/netnode"
)

// Addresses only this test uses, inside its own namespaces.
var (
	addrA = netip.MustParseAddr("10.78.254.1")
	addrB = netip.MustParseAddr("10.78.254.2")
)

// ipv4 wraps an SCTP packet in an IPv4 header, as a raw socket reads it.
func ipv4(src, dst netip.Addr, sctp []byte) []byte {
	b := make([]byte, 20+len(sctp))
	b[0], b[8], b[9] = 0x45, 64, ipProtoSCTP
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	copy(b[20:], sctp)
	return b
}

func TestSCTPPackets(t *testing.T) {
	init := buildInit(40000, 80, 0xdeadbeef, 7)
	if len(init)%4 != 0 || len(init) != 32 {
		t.Fatalf("INIT is %d bytes, want 32", len(init))
	}
	src, dst, p, ok := parseSCTP(ipv4(addrA, addrB, init))
	if !ok || src != addrA || dst != addrB || p.SrcPort != 40000 || p.DstPort != 80 || p.VTag != 0 ||
		p.Chunk != chunkInit || p.InitTag != 0xdeadbeef {
		t.Fatalf("parse INIT: %v %v %v %+v", ok, src, dst, p)
	}
	ack := buildInitAck(80, 40000, 0xdeadbeef, 0x1234, 9, []byte("cookie!"))
	if len(ack)%4 != 0 {
		t.Fatalf("INIT ACK is %d bytes, not padded to 4", len(ack))
	}
	if got := binary.BigEndian.Uint16(ack[14:]); got != 4+16+4+7 {
		t.Fatalf("INIT ACK chunk length %d, want 31 (without padding)", got)
	}
	_, _, p, ok = parseSCTP(ipv4(addrB, addrA, ack))
	if !ok || p.Chunk != chunkInitAck || p.VTag != 0xdeadbeef || p.InitTag != 0x1234 || p.SrcPort != 80 {
		t.Fatalf("parse INIT ACK: %v %+v", ok, p)
	}
	bad := ipv4(addrA, addrB, init)
	bad[len(bad)-1] ^= 1
	if _, _, _, ok := parseSCTP(bad); ok {
		t.Fatal("a corrupted packet passed the checksum")
	}
	// The CRC32c check value of RFC 3720 B.4: 32 bytes of zeros.
	z := make([]byte, 32)
	if got := sctpChecksum(z); got != 0x8a9136aa {
		t.Fatalf("CRC32c of 32 zero bytes = %#x, want 0x8a9136aa", got)
	}
}

// pair makes two namespaces joined by a veth: a (addrA) and b (addrB).
func pair(t *testing.T) (a, b string) {
	t.Helper()
	netnode.RequireNetns(t, "test/probe", "ip")
	id, err := netnode.RandomID()
	if err != nil {
		t.Fatal(err)
	}
	a, b = "tprobe-"+id+"-a", "tprobe-"+id+"-b"
	for _, ns := range []string{a, b} {
		netnode.MustRun(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _, _ = netnode.Run(context.Background(), "ip", "netns", "del", ns) })
		netnode.MustRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	netnode.MustRun(t, "ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
	netnode.MustRun(t, "ip", "-n", a, "addr", "add", addrA.String()+"/30", "dev", "eth0")
	netnode.MustRun(t, "ip", "-n", b, "addr", "add", addrB.String()+"/30", "dev", "eth0")
	netnode.MustRun(t, "ip", "-n", a, "link", "set", "eth0", "up")
	netnode.MustRun(t, "ip", "-n", b, "link", "set", "eth0", "up")
	return a, b
}

func serve(t *testing.T, netns string, ports ...uint16) {
	t.Helper()
	s, err := Serve(netns, ports...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
}

// TestProbe: every protocol answered on the served ports, refused (TCP, UDP) or
// unanswered (SCTP) on another, from a namespace that serves too.
func TestProbe(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root and network namespaces")
	}
	a, b := pair(t)
	serve(t, a, 80, 81)
	serve(t, b, 80, 81)
	ctx := netnode.Context(t, time.Minute)
	for _, tc := range []struct {
		proto   Proto
		port    uint16
		allowed bool
		detail  string
	}{
		{TCP, 80, true, "answered"}, {TCP, 81, true, "answered"},
		{UDP, 80, true, "answered"}, {UDP, 81, true, "answered"},
		{SCTP, 80, true, "answered"}, {SCTP, 81, true, "answered"},
		{TCP, 82, false, "refused"}, {UDP, 82, false, "refused"}, {SCTP, 82, false, "timeout"},
	} {
		r, err := Probe(ctx, a, addrB, tc.proto, tc.port, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if r.Allowed != tc.allowed || r.Detail != tc.detail {
			t.Errorf("%s/%d a -> b: %+v, want allowed %v (%s)", tc.proto, tc.port, r, tc.allowed, tc.detail)
		}
	}
	// From b back to a, over the namespace's path name.
	if r, err := Probe(ctx, "/run/netns/"+b, addrA, SCTP, 81, time.Second); err != nil || !r.Allowed {
		t.Errorf("SCTP/81 b -> a: %+v %v", r, err)
	}
	if _, err := Probe(ctx, "tprobe-no-such-namespace", addrA, TCP, 80, time.Second); err == nil {
		t.Error("a probe from a missing namespace did not fail")
	}
}

// TestMatrix: many probes at once from both namespaces, SCTP ones demultiplexed on one
// raw socket per namespace; cells that disagree are probed again.
func TestMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("needs root and network namespaces")
	}
	a, b := pair(t)
	serve(t, a, 80, 81)
	serve(t, b, 80, 81)
	var cells []Cell
	for range 40 {
		for _, proto := range []Proto{TCP, UDP, SCTP} {
			for _, port := range []uint16{80, 81} {
				cells = append(cells, Cell{From: a, To: addrB, Proto: proto, Port: port, Want: true},
					Cell{From: b, To: addrA, Proto: proto, Port: port, Want: true})
			}
		}
	}
	// Expected blocked and blocked: probed once. Expected allowed but not: probed again.
	cells = append(cells, Cell{From: a, To: addrB, Proto: SCTP, Port: 83, Want: false},
		Cell{From: a, To: addrB, Proto: SCTP, Port: 84, Want: true})
	p := NewProber()
	defer func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	}()
	start := time.Now()
	out, err := p.Matrix(netnode.Context(t, time.Minute), cells, MatrixOptions{Long: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d cells in %v", len(cells), time.Since(start).Round(time.Millisecond))
	for _, o := range out[:len(out)-2] {
		if !o.OK() || o.Detail != "answered" {
			t.Errorf("%s: %+v", o.Cell, o.Result)
		}
	}
	blocked, unexpected := out[len(out)-2], out[len(out)-1]
	if !blocked.OK() || blocked.Again {
		t.Errorf("expected-blocked cell: %+v, want blocked on the first pass and not probed again", blocked)
	}
	if unexpected.OK() || !unexpected.Again || unexpected.Took < 400*time.Millisecond {
		t.Errorf("unexpectedly blocked cell: %+v, want it confirmed with the long timeout", unexpected)
	}
}
