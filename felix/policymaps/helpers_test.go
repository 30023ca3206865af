package policymaps

import (
	"net"
	"net/netip"
	"testing"

	"github.com/tabbynet/tabby/ebpf"
	"github.com/tabbynet/tabby/ebpf/ebpftest"
	"github.com/tabbynet/tabby/felix/policy"
)

func loadAt(t *testing.T, dir string) *ebpf.Datapath {
	t.Helper()
	d, err := ebpf.Load(ebpf.Options{PinDir: dir})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { _ = d.Close() })
	return d
}

var peerMAC = net.HardwareAddr{0x02, 0xff, 0x00, 0x00, 0x00, 0x99}

// frame builds Ethernet + IPv4 + L4 headers (see ebpftest.Frame); for ICMP, dport is
// policy.ICMPPort(type, code) of the message.
func frame(srcMAC net.HardwareAddr, src, dst netip.Addr, proto uint8, sport, dport uint16) []byte {
	p := ebpftest.Packet{SrcMAC: srcMAC, DstMAC: peerMAC, Src: src, Dst: dst, Proto: proto,
		SPort: sport, DPort: dport}
	if proto == policy.ProtoICMP {
		p.DPort, p.ICMPTypeSet, p.ICMPType, p.ICMPCode = 0, true, uint8(dport>>8), uint8(dport)
	}
	return ebpftest.Frame(p)
}
