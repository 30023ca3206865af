package policymaps

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf/features"
	"github.com/tabbynet/tabby/ebpf"
	"golang.org/x/sys/unix"
)

// requireBPF skips when the kernel or privileges cannot run BPF, except under CI
// where that is a broken machine, not a reason to skip (as in ebpf/'s tests).
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

// frame builds Ethernet + IPv4 + L4 headers (the program checks no checksum).
func frame(srcMAC net.HardwareAddr, src, dst netip.Addr, proto uint8, sport, dport uint16) []byte {
	b := make([]byte, 14, 128)
	copy(b[0:6], peerMAC)
	copy(b[6:12], srcMAC)
	binary.BigEndian.PutUint16(b[12:], unix.ETH_P_IP)
	var l4 []byte
	switch proto {
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
	if proto != unix.IPPROTO_ICMP {
		binary.BigEndian.PutUint16(l4[0:], sport)
		binary.BigEndian.PutUint16(l4[2:], dport)
	}
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	ip[8] = 64
	ip[9] = proto
	s, d := src.As4(), dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	b = append(b, ip...)
	return append(b, l4...)
}
