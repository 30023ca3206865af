package ebpf

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// requireBPF skips when the kernel or privileges cannot run BPF, except under CI
// where that is a broken machine, not a reason to skip.
func requireBPF(t testing.TB) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root"
	} else if err := features.HaveProgramType(0x3 /* SCHED_CLS */); err != nil {
		why = "no BPF SCHED_CLS programs: " + err.Error()
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("BPF unavailable under CI: %s", why)
	}
	t.Skip(why)
}

// bpffsDir mounts a private bpffs for the test and returns a pin dir on it.
func bpffsDir(t testing.TB) string {
	t.Helper()
	mnt := t.TempDir()
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmount bpffs: %v", err)
		}
	})
	return filepath.Join(mnt, "tabby")
}

func loadTest(t *testing.T) *Datapath {
	t.Helper()
	requireBPF(t)
	d, err := Load(Options{PinDir: bpffsDir(t)})
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

// frame builds an Ethernet + IPv4 + L4 header frame (checksums are not checked
// by the program, so they are left zero).
func (p pkt) frame() []byte {
	b := make([]byte, 14, 128)
	copy(b[0:6], peerMAC)
	mac := p.srcMAC
	if mac == nil {
		mac = wlMAC
	}
	copy(b[6:12], mac)
	et := p.ethType
	if et == 0 {
		et = unix.ETH_P_IP
	}
	binary.BigEndian.PutUint16(b[12:], et)
	if et != unix.ETH_P_IP {
		return append(b, make([]byte, 60)...)
	}
	var l4 []byte
	switch p.proto {
	case unix.IPPROTO_TCP:
		l4 = make([]byte, 20)
		l4[12] = 5 << 4
		l4[13] = 0x02 // SYN
	case unix.IPPROTO_UDP:
		l4 = make([]byte, 8)
	case unix.IPPROTO_SCTP:
		l4 = make([]byte, 12)
	case unix.IPPROTO_ICMP:
		l4 = []byte{8, 0, 0, 0, 0, 1, 0, 1}
	}
	if p.proto != unix.IPPROTO_ICMP && len(l4) >= 4 {
		binary.BigEndian.PutUint16(l4[0:], p.sport)
		binary.BigEndian.PutUint16(l4[2:], p.dport)
	}
	l4 = append(l4, make([]byte, p.payload)...)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	ip[8] = 64
	ip[9] = p.proto
	s, d := netip.MustParseAddr(p.src).As4(), netip.MustParseAddr(p.dst).As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	b = append(b, ip...)
	return append(b, l4...)
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
