package ebpf

import (
	"net"
	"net/netip"
	"testing"

	"github.com/tabbynet/tabby/ebpf/ebpftest"
)

func loadTest(t *testing.T) *Datapath {
	t.Helper()
	ebpftest.Require(t)
	d, err := Load(Options{PinDir: ebpftest.PinDir(t)})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

var (
	wlMAC   = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	peerMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
)

type pkt struct {
	srcMAC       net.HardwareAddr
	src, dst     string
	proto        uint8
	sport, dport uint16
	ethType      uint16
	payload      int
}

// frame builds the frame of p (see ebpftest.Frame).
func (p pkt) frame() []byte {
	src := p.srcMAC
	if src == nil {
		src = wlMAC
	}
	q := ebpftest.Packet{SrcMAC: src, DstMAC: peerMAC, Proto: p.proto, SPort: p.sport, DPort: p.dport,
		EthType: p.ethType, Payload: p.payload}
	if p.src != "" {
		q.Src, q.Dst = netip.MustParseAddr(p.src), netip.MustParseAddr(p.dst)
	}
	return ebpftest.Frame(q)
}

// reply swaps the endpoints of p (as the peer's answer would).
func (p pkt) reply() pkt {
	p.src, p.dst = p.dst, p.src
	p.sport, p.dport = p.dport, p.sport
	p.srcMAC = peerMAC
	return p
}

func mustRun(t *testing.T, d *Datapath, dir Direction, p pkt, want Result) {
	t.Helper()
	got, err := d.RunPacket(dir, p.frame())
	if err != nil {
		t.Fatalf("RunPacket(%v, %+v): %v", dir, p, err)
	}
	if got != want {
		t.Fatalf("RunPacket(%v, %+v) = %v, want %v", dir, p, got, want)
	}
}
