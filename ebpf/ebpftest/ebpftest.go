package ebpftest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// Require skips t when the machine cannot run TC BPF programs (not root, no
// SCHED_CLS), except under CI=true, where that is a broken machine and t fails.
func Require(t testing.TB) {
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

// MountBPFFS mounts a private bpffs on dir (which must exist); unmount undoes it.
func MountBPFFS(dir string) (unmount func() error, err error) {
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		return nil, fmt.Errorf("mount bpffs on %s: %w", dir, err)
	}
	return func() error {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount bpffs %s: %w", dir, err)
		}
		return nil
	}, nil
}

// PinDir mounts a private bpffs for t (unmounted when t ends) and returns a pin
// directory on it, so nothing lands in /sys/fs/bpf/tabby.
func PinDir(t testing.TB) string {
	t.Helper()
	mnt := t.TempDir()
	unmount, err := MountBPFFS(mnt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unmount(); err != nil {
			t.Error(err)
		}
	})
	return filepath.Join(mnt, "tabby")
}

// Packet describes a synthetic frame.
type Packet struct {
	SrcMAC, DstMAC net.HardwareAddr // zero: 02:00:00:00:00:01 and 02:00:00:00:00:02
	Src, Dst       netip.Addr       // IPv4
	Proto          uint8            // IPPROTO_TCP (a SYN), _UDP, _SCTP or _ICMP (an echo request)
	SPort, DPort   uint16
	EthType        uint16 // zero: IPv4; anything else gets 60 bytes of zeros after the header
	Payload        int    // bytes of zeros after the L4 header
	// ICMPID is an echo's identifier (zero: 1); ICMPReply makes it an echo reply.
	ICMPID    uint16
	ICMPReply bool
	// ICMPTypeSet makes the ICMP message ICMPType/ICMPCode instead of an echo.
	ICMPTypeSet        bool
	ICMPType, ICMPCode uint8
}

// Default MACs of a Packet.
var (
	DefaultSrcMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	DefaultDstMAC = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
)

// Frame builds the Ethernet + IPv4 + L4 headers of p (checksums left zero: the
// datapath checks none).
func Frame(p Packet) []byte {
	src, dst := p.SrcMAC, p.DstMAC
	if src == nil {
		src = DefaultSrcMAC
	}
	if dst == nil {
		dst = DefaultDstMAC
	}
	b := make([]byte, 14, 128)
	copy(b[0:6], dst)
	copy(b[6:12], src)
	et := p.EthType
	if et == 0 {
		et = unix.ETH_P_IP
	}
	binary.BigEndian.PutUint16(b[12:], et)
	if et != unix.ETH_P_IP {
		return append(b, make([]byte, 60)...)
	}
	var l4 []byte
	switch p.Proto {
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
		if p.ICMPReply {
			l4[0] = 0
		}
		if p.ICMPID != 0 {
			binary.BigEndian.PutUint16(l4[4:], p.ICMPID)
		}
		if p.ICMPTypeSet {
			l4[0], l4[1] = p.ICMPType, p.ICMPCode
		}
	}
	if p.Proto != unix.IPPROTO_ICMP && len(l4) >= 4 {
		binary.BigEndian.PutUint16(l4[0:], p.SPort)
		binary.BigEndian.PutUint16(l4[2:], p.DPort)
	}
	l4 = append(l4, make([]byte, p.Payload)...)
	ip := make([]byte, 20)
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
	ip[8] = 64
	ip[9] = p.Proto
	s, d := p.Src.As4(), p.Dst.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	b = append(b, ip...)
	return append(b, l4...)
}

// Serve accepts connections on ln and closes each at once, until ln is closed: a TCP
// connect to it succeeds exactly when the path lets it through.
func Serve(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
}
