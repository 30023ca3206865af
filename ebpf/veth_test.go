package ebpf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/tabbynet/tabby/ebpf/ebpftest"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// vethEnv is a "node" namespace holding the host side of a veth whose other end
// is eth0 in a "workload" namespace. The calling goroutine stays locked in the
// node namespace until cleanup.
type vethEnv struct {
	nodeNS, wlNS     netns.NsHandle
	wlName           string
	hostIfindex      int
	wlMAC            net.HardwareAddr
	hostAddr, wlAddr netip.Addr
}

func newVethEnv(t *testing.T, tag string) *vethEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("needs network namespaces")
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	nodeName := fmt.Sprintf("tabbyt-n%d-%s", os.Getpid(), tag)
	wlName := fmt.Sprintf("tabbyt-w%d-%s", os.Getpid(), tag)
	e := &vethEnv{wlName: wlName, hostAddr: netip.MustParseAddr("10.77.0.1"),
		wlAddr: netip.MustParseAddr("10.77.0.2")}
	t.Cleanup(func() {
		_ = netns.Set(orig)
		_ = orig.Close()
		_ = netns.DeleteNamed(nodeName)
		_ = netns.DeleteNamed(wlName)
		runtime.UnlockOSThread()
	})
	if e.nodeNS, err = netns.NewNamed(nodeName); err != nil {
		t.Fatalf("node netns: %v", err)
	}
	if e.wlNS, err = netns.NewNamed(wlName); err != nil {
		t.Fatalf("workload netns: %v", err)
	}
	if err := netns.Set(e.nodeNS); err != nil {
		t.Fatal(err)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "tabbyh0"}, PeerName: "eth0"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("veth: %v", err)
	}
	host, err := netlink.LinkByName("tabbyh0")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := netlink.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	e.hostIfindex = host.Attrs().Index
	e.wlMAC = peer.Attrs().HardwareAddr
	if err := netlink.LinkSetNsFd(peer, int(e.wlNS)); err != nil {
		t.Fatal(err)
	}
	addr := func(h *netlink.Handle, name string, a netip.Addr) {
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		ipn := &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(24, 32)}
		if err := h.AddrAdd(l, &netlink.Addr{IPNet: ipn}); err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	nh, err := netlink.NewHandleAt(e.nodeNS)
	if err != nil {
		t.Fatal(err)
	}
	defer nh.Close()
	wh, err := netlink.NewHandleAt(e.wlNS)
	if err != nil {
		t.Fatal(err)
	}
	defer wh.Close()
	addr(nh, "tabbyh0", e.hostAddr)
	addr(wh, "eth0", e.wlAddr)
	return e
}

// dial connects from the workload namespace to addr, on a thread of its own.
func (e *vethEnv) dial(addr string, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(e.wlNS); err != nil {
			errc <- err
			return
		}
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err == nil {
			_ = c.Close()
		}
		errc <- err
	}()
	return <-errc
}

func (e *vethEnv) ping(ctx context.Context, dst netip.Addr) error {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", e.wlName,
		"ping", "-c1", "-W1", dst.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s: %w: %s", dst, err, out)
	}
	return nil
}

// eventually retries f until it succeeds or the deadline passes (first ARP and
// neighbour setup can take a moment; nothing sleeps a fixed time).
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
	}
}

func TestVethAllowThenDeny(t *testing.T) {
	for _, tc := range []struct {
		name  string
		force bool
		want  AttachMode
	}{{"tcx", false, ModeTCX}, {"tc", true, ModeTC}} {
		t.Run(tc.name, func(t *testing.T) {
			d := loadTest(t)
			e := newVethEnv(t, tc.name)
			if _, err := exec.LookPath("ping"); err != nil {
				t.Fatalf("ping: %v (hack/deps.sh installs iputils-ping)", err)
			}
			ln, err := net.Listen("tcp", net.JoinHostPort(e.hostAddr.String(), "8080"))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ebpftest.Serve(ln)

			if err := d.SetEndpoint(e.hostIfindex, Endpoint{ID: 1, IngressDefault: Deny, EgressDefault: Deny,
				MAC: e.wlMAC, Addrs: []netip.Addr{e.wlAddr}}); err != nil {
				t.Fatal(err)
			}
			tcpRule := PolicyKey{Endpoint: 1, Direction: Egress, Proto: tcp, Port: 8080, Peer: ClassAny}
			icmpRule := PolicyKey{Endpoint: 1, Direction: Egress, Proto: icmp, Peer: ClassAny}
			for i, k := range []PolicyKey{tcpRule, icmpRule} {
				if err := d.SetPolicy(k, PolicyValue{Verdict: Allow, RuleID: uint32(40 + i)}); err != nil {
					t.Fatal(err)
				}
			}
			mode, err := d.Attach(e.hostIfindex, AttachOptions{ForceTC: tc.force})
			if err != nil {
				t.Fatalf("Attach: %v", err)
			}
			if mode != tc.want {
				t.Fatalf("Attach mode %q, want %q", mode, tc.want)
			}
			if got, err := d.Attached(e.hostIfindex); err != nil || got != tc.want {
				t.Fatalf("Attached = %q, %v; want %q", got, err, tc.want)
			}
			// Attaching again is idempotent.
			if _, err := d.Attach(e.hostIfindex, AttachOptions{ForceTC: tc.force}); err != nil {
				t.Fatalf("second Attach: %v", err)
			}
			target := net.JoinHostPort(e.hostAddr.String(), "8080")
			ctx := t.Context()
			eventually(t, "allowed ping", func() error { return e.ping(ctx, e.hostAddr) })
			eventually(t, "allowed connect", func() error { return e.dial(target, 2*time.Second) })
			if c, _ := d.RuleCounter(40); c.Packets == 0 {
				t.Fatalf("rule 40 counted nothing")
			}

			// Remove the rules and forget the flows: the same traffic is now denied.
			r := dropReader(t, d)
			for _, k := range []PolicyKey{tcpRule, icmpRule} {
				if err := d.DeletePolicy(k); err != nil {
					t.Fatal(err)
				}
			}
			if err := d.FlushConntrack(); err != nil {
				t.Fatal(err)
			}
			if err := e.dial(target, 500*time.Millisecond); err == nil {
				t.Fatal("connect succeeded after the rule was removed")
			}
			if err := e.ping(ctx, e.hostAddr); err == nil {
				t.Fatal("ping succeeded after the rule was removed")
			}
			r.SetDeadline(time.Now().Add(5 * time.Second))
			for seen := false; !seen; {
				ev, err := r.Read()
				if err != nil {
					t.Fatalf("no drop event for the denied connect: %v", err)
				}
				seen = ev.Ifindex == e.hostIfindex && ev.DstPort == 8080 && ev.Reason == DropDefault &&
					ev.Direction == Egress && ev.Src == e.wlAddr
			}

			// Detached, nothing filters any more.
			if err := d.Detach(e.hostIfindex); err != nil {
				t.Fatal(err)
			}
			if got, _ := d.Attached(e.hostIfindex); got != "" {
				t.Fatalf("Attached after Detach = %q", got)
			}
			eventually(t, "connect after detach", func() error { return e.dial(target, 2*time.Second) })
			if err := d.Detach(e.hostIfindex); err != nil && !errors.Is(err, ErrNotFound) {
				t.Fatalf("second Detach: %v", err)
			}
		})
	}
}
