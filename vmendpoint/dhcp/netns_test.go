package dhcp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"go.uber.org/zap/zaptest"
)

// These tests need root: they make two network namespaces, a "host" one with
// the interface the server runs on (the tap's stand-in, one end of a veth
// pair) and a "guest" one with the other end, and run real DHCP clients in
// the guest namespace. Addresses come from 10.79.0.0/16 and 169.254.1.1.

// requireTool skips loudly without root or tool, or fails under CI=true.
func requireTool(t *testing.T, tool string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: not run with -short")
	}
	why := ""
	path := ""
	if os.Geteuid() != 0 {
		why = "needs root (network namespaces, packet sockets)"
	} else if p, err := exec.LookPath(tool); err != nil {
		why = fmt.Sprintf("needs %s: %v (hack/deps.sh installs it)", tool, err)
	} else {
		path = p
	}
	if why == "" {
		return path
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and this test %s", why)
	}
	t.Skipf("\n*** SKIPPED %s: %s ***", t.Name(), why)
	return ""
}

type topo struct {
	hostNS, guestNS string // paths under /run/netns
	hostIf          string
	guestIf         string
	mac             net.HardwareAddr
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// newTopo makes the two namespaces (removed at cleanup) and the link.
func newTopo(t *testing.T) *topo {
	t.Helper()
	requireTool(t, "ip")
	b := make([]byte, 3)
	rand.Read(b)
	id := hex.EncodeToString(b)
	host, guest := "tdhcp-h-"+id, "tdhcp-g-"+id
	run(t, "ip", "netns", "add", host)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", host).Run() })
	run(t, "ip", "netns", "add", guest)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", guest).Run() })
	tp := &topo{hostNS: "/run/netns/" + host, guestNS: "/run/netns/" + guest, hostIf: "tap" + id, guestIf: "eth0", mac: guestMAC}
	tp.link(t)
	return tp
}

// link (re)creates the veth pair standing for the tap and the guest's NIC.
func (tp *topo) link(t *testing.T) {
	t.Helper()
	host, guest := filepath.Base(tp.hostNS), filepath.Base(tp.guestNS)
	run(t, "ip", "-n", host, "link", "add", tp.hostIf, "type", "veth", "peer", "name", tp.guestIf, "netns", guest)
	run(t, "ip", "-n", guest, "link", "set", tp.guestIf, "address", tp.mac.String())
	run(t, "ip", "-n", guest, "link", "set", "lo", "up")
	run(t, "ip", "-n", guest, "link", "set", tp.guestIf, "up")
	run(t, "ip", "-n", host, "link", "set", tp.hostIf, "up")
}

func (tp *topo) config() Config {
	return Config{
		Interface:     tp.hostIf,
		Netns:         tp.hostNS,
		MAC:           tp.mac,
		Addr:          netip.MustParseAddr("10.79.0.10"),
		DNS:           []netip.Addr{netip.MustParseAddr("10.79.0.53"), netip.MustParseAddr("10.79.0.54")},
		SearchDomains: []string{"ns1.svc.cluster.local", "cluster.local"},
		Hostname:      "guest-a",
		MTU:           1450,
	}
}

// client makes an nclient4 client on the guest's interface.
func (tp *topo) client(t *testing.T, opts ...nclient4.ClientOpt) *nclient4.Client {
	t.Helper()
	var c *nclient4.Client
	err := inNetns(tp.guestNS, func() (err error) {
		c, err = nclient4.New(tp.guestIf, append([]nclient4.ClientOpt{nclient4.WithTimeout(time.Second), nclient4.WithRetry(5)}, opts...)...)
		return err
	})
	if err != nil {
		t.Fatalf("nclient4 in guest netns: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		<-tick.C
	}
}

// serve runs a Server on the topology until the test ends.
func serve(t *testing.T, tp *topo) *Server {
	t.Helper()
	srv := NewServer(zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, tp.config()) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	waitFor(t, "server serving", 5*time.Second, func() bool { return srv.Status().Serving })
	return srv
}

func TestServerWithNclient4(t *testing.T) {
	tp := newTopo(t)
	srv := serve(t, tp)
	c := tp.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	lease, err := c.Request(ctx)
	if err != nil {
		t.Fatalf("request a lease: %v", err)
	}
	for _, m := range []*dhcpv4.DHCPv4{lease.Offer, lease.ACK} {
		if !m.YourIPAddr.Equal(net.IPv4(10, 79, 0, 10)) {
			t.Errorf("%v offers %v, want 10.79.0.10", m.MessageType(), m.YourIPAddr)
		}
		checkOptions(t, m, true)
	}
	st := srv.Status()
	if st.Leases != 1 || st.LastAck.IsZero() || st.Offers != 1 {
		t.Errorf("status after one lease = %+v", st)
	}

	t.Run("request for another address gets nak", func(t *testing.T) {
		offer, err := c.DiscoverOffer(ctx)
		if err != nil {
			t.Fatalf("discover: %v", err)
		}
		_, err = c.RequestFromOffer(ctx, offer, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(10, 79, 0, 99))))
		var nak *nclient4.ErrNak
		if !errors.As(err, &nak) {
			t.Fatalf("request for 10.79.0.99: err = %v, want a NAK", err)
		}
		if got := srv.Status().Naks; got != 1 {
			t.Errorf("naks = %d, want 1", got)
		}
	})

	t.Run("renewal unicast to the server identifier gets ack", func(t *testing.T) {
		renew, err := dhcpv4.NewRenewFromAck(lease.ACK)
		if err != nil {
			t.Fatal(err)
		}
		before := srv.Status().Leases
		ack, err := c.SendAndRead(ctx, &net.UDPAddr{IP: net.IPv4(169, 254, 1, 1), Port: 67}, renew, nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak))
		if err != nil {
			t.Fatalf("renew: %v", err)
		}
		if ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(net.IPv4(10, 79, 0, 10)) {
			t.Fatalf("renew answered %s", ack.Summary())
		}
		checkOptions(t, ack, true)
		if got := srv.Status().Leases; got != before+1 {
			t.Errorf("leases = %d, want %d", got, before+1)
		}
	})

	t.Run("inform gets options", func(t *testing.T) {
		ack, err := c.Inform(ctx, net.IPv4(10, 79, 0, 10))
		if err != nil {
			t.Fatalf("inform: %v", err)
		}
		checkOptions(t, ack, false)
	})

	t.Run("another mac gets no answer", func(t *testing.T) {
		before := srv.Status().Ignored
		other := tp.client(t, nclient4.WithHWAddr(otherMAC), nclient4.WithTimeout(300*time.Millisecond), nclient4.WithRetry(2))
		done := make(chan error, 1)
		go func() {
			_, err := other.DiscoverOffer(ctx)
			done <- err
		}()
		// The discover reached the server and was dropped...
		waitFor(t, "server to ignore the stranger's discover", 5*time.Second, func() bool { return srv.Status().Ignored > before })
		// ...and the client's retries ran out with no offer.
		if err := <-done; err == nil {
			t.Fatal("a client with another MAC got an offer")
		}
		if st := srv.Status(); st.Offers != 2 {
			t.Errorf("offers = %d, want 2 (no offer to the stranger)", st.Offers)
		}
	})
}

func TestServerWithBusyboxUdhcpc(t *testing.T) {
	busybox := requireTool(t, "busybox")
	tp := newTopo(t)
	srv := serve(t, tp)

	dir := t.TempDir()
	out := filepath.Join(dir, "bound.env")
	script := filepath.Join(dir, "script.sh")
	vars := []string{"ip", "subnet", "router", "dns", "domain", "search", "hostname", "lease", "serverid", "staticroutes", "msstaticroutes", "mtu"}
	body := "#!/bin/sh\n[ \"$1\" = bound ] || exit 0\n{\n"
	for _, v := range vars {
		body += fmt.Sprintf("echo \"%s=$%s\"\n", v, v)
	}
	body += "} > " + out + "\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", filepath.Base(tp.guestNS), busybox, "udhcpc",
		"-i", tp.guestIf, "-f", "-q", "-n", "-t", "10", "-T", "1", "-s", script,
		"-O", "staticroutes", "-O", "msstaticroutes", "-O", "search", "-O", "mtu")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("udhcpc: %v\n%s", err, b)
	} else {
		t.Logf("udhcpc:\n%s", b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("udhcpc script did not run for bound: %v", err)
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, _ := strings.Cut(line, "=")
		got[k] = v
	}
	routes := "169.254.1.1/32 0.0.0.0 0.0.0.0/0 169.254.1.1"
	for k, want := range map[string]string{
		"ip": "10.79.0.10", "subnet": "255.255.255.255", "router": "169.254.1.1",
		"dns": "10.79.0.53 10.79.0.54", "domain": "ns1.svc.cluster.local",
		"search": "ns1.svc.cluster.local cluster.local", "hostname": "guest-a",
		"lease": "86400", "serverid": "169.254.1.1", "staticroutes": routes,
		"msstaticroutes": routes, "mtu": "1450",
	} {
		if got[k] != want {
			t.Errorf("udhcpc %s = %q, want %q", k, got[k], want)
		}
	}
	if st := srv.Status(); st.Leases != 1 {
		t.Errorf("leases = %d, want 1", st.Leases)
	}
}

func TestManagerRestartsAfterInterfaceRecreated(t *testing.T) {
	tp := newTopo(t)
	base := runtime.NumGoroutine()
	m := NewManager(zaptest.NewLogger(t), WithBackoff(20*time.Millisecond, 200*time.Millisecond))
	if err := m.Set(tp.hostIf, tp.config()); err != nil {
		t.Fatalf("set: %v", err)
	}
	status := func() Status { st, _ := m.Status(tp.hostIf); return st }
	waitFor(t, "manager serving", 5*time.Second, func() bool { return status().Serving })
	lease := func() {
		t.Helper()
		c := tp.client(t)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		l, err := c.Request(ctx)
		if err != nil {
			t.Fatalf("request a lease: %v", err)
		}
		if !l.ACK.YourIPAddr.Equal(net.IPv4(10, 79, 0, 10)) {
			t.Fatalf("lease of %v", l.ACK.YourIPAddr)
		}
		c.Close()
	}
	lease()

	// Setting the same config again changes nothing.
	if err := m.Set(tp.hostIf, tp.config()); err != nil || status().Starts != 1 {
		t.Fatalf("same config again: %v, starts %d", err, status().Starts)
	}
	if err := m.Set(tp.hostIf, Config{MAC: tp.mac}); err == nil {
		t.Fatal("a config without an address was accepted")
	}

	// The tap goes away (guest shut down): the server notices and retries.
	run(t, "ip", "-n", filepath.Base(tp.hostNS), "link", "del", tp.hostIf)
	waitFor(t, "server to notice the interface went", 5*time.Second, func() bool {
		st := status()
		return !st.Serving && st.LastError != nil
	})
	waitFor(t, "a failed restart while the interface is missing", 5*time.Second, func() bool { return status().Restarts >= 1 })
	t.Logf("while the tap is missing: %v", status().LastError)

	// It comes back (guest rebooted): the server serves it again.
	tp.link(t)
	waitFor(t, "server serving the new interface", 5*time.Second, func() bool { st := status(); return st.Serving && st.Starts >= 2 })
	lease()
	if st := status(); st.Leases != 2 || st.LastError != nil {
		t.Errorf("status after the restart = %+v", st)
	}
	if n := len(m.Statuses()); n != 1 {
		t.Errorf("statuses has %d taps, want 1", n)
	}

	m.Remove(tp.hostIf)
	if _, ok := m.Status(tp.hostIf); ok {
		t.Error("status still reported after remove")
	}
	m.Close()
	if err := m.Set(tp.hostIf, tp.config()); !errors.Is(err, ErrClosed) {
		t.Errorf("set after close: %v, want ErrClosed", err)
	}
	waitFor(t, "goroutines to end", 5*time.Second, func() bool { return runtime.NumGoroutine() <= base })
}
