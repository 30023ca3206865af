package vmguest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/test/netnode"
	"libvirt.org/go/libvirt"
)

const suite = "test/vmguest"

// Guests run under TCG here: generous deadlines, the figures are logged.
const (
	bootTimeout = 3 * time.Minute
	cmdTimeout  = 30 * time.Second
)

func TestCpioReadableByBusybox(t *testing.T) {
	bb, err := exec.LookPath("busybox")
	if err != nil {
		netnode.Require(t, suite, "busybox (hack/deps.sh)", err)
	}
	f, err := os.CreateTemp(t.TempDir(), "x.cpio")
	if err != nil {
		t.Fatal(err)
	}
	if err := writeCpio(f, []cpioFile{
		{name: "dir", mode: modeDir | 0o755},
		{name: "dir/file", mode: modeReg | 0o644, data: []byte("hello\n")},
		{name: "link", mode: modeLnk | 0o777, data: []byte("dir/file")},
		{name: "console", mode: modeChr | 0o600, rdev: [2]uint32{5, 1}},
	}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	out, err := exec.Command("sh", "-c", bb+" cpio -t -v < "+f.Name()).CombinedOutput()
	if err != nil {
		t.Fatalf("busybox cpio -t: %v: %s", err, out)
	}
	for _, want := range []string{"drwxr-xr-x", "dir/file", "link -> dir/file", "crw-------", "console"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("cpio listing lacks %q:\n%s", want, out)
		}
	}
}

func TestBuildIsCached(t *testing.T) {
	if _, err := exec.LookPath("apt-get"); err != nil {
		netnode.Require(t, suite, "apt-get", err)
	}
	start := time.Now()
	a := BuildT(t, suite)
	first := time.Since(start)
	start = time.Now()
	b, err := Build(context.Background(), "")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kernel %s (%s), initrd %s: first Build %v, second %v", a.KernelRelease, a.KernelPackage, a.Initrd, first, time.Since(start))
	if *a != *b {
		t.Errorf("second Build gave %+v, first %+v", b, a)
	}
	for _, p := range []string{a.Kernel, a.Initrd} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&0o004 == 0 {
			t.Errorf("%s is %v: QEMU (uid 64055) cannot read it", p, fi.Mode())
		}
	}
}

// TestBoot boots a guest on the shared host-namespace libvirtd, moves its tap into a
// test node namespace set up as Tabby would (169.254.1.1 on the tap, proxy ARP, a /32
// route), serves it DHCP there, and checks ping, the guest's servers, the console
// shell, ACPI reboot and shutdown, and a second start (new QEMU, new tap).
func TestBoot(t *testing.T) {
	Require(t, suite)
	ctx := netnode.Context(t, 10*time.Minute)
	testStart := time.Now()
	t.Cleanup(func() { t.Logf("test with teardown took %v", time.Since(testStart)) })
	defer func() { t.Logf("test body took %v", time.Since(testStart)) }()
	art := BuildT(t, suite)
	id, err := netnode.RandomID()
	if err != nil {
		t.Fatal(err)
	}
	node := netnode.NewT(t, ctx, netnode.Options{Prefix: "vmg" + id, UplinkCIDR: "10.79.255.1/30", Gateway: "10.79.255.2"})
	_, conn := LibvirtdT(t, suite, "")

	guestIP := net.IPv4(10, 79, 0, 10).To4()
	name, tap := "tabby-vmguest-"+id, "vmg"+id
	meta := `<tabby:workload xmlns:tabby="https://tabbynet.io/xmlns/vm/1"><tabby:label key="app" value="web"/></tabby:workload>`
	d := DefineT(t, conn, Options{Name: name, MAC: "52:54:00:" + id[0:2] + ":" + id[2:4] + ":" + id[4:6], Tap: tap, Metadata: meta, Artifacts: art})

	var dhcp *testDHCP
	plumb := func() error {
		// libvirt made the tap in its (the host's) namespace: hand it to the node.
		if _, err := netnode.Run(ctx, "ip", "link", "set", tap, "netns", node.Name); err != nil {
			return err
		}
		for _, args := range [][]string{
			{"link", "set", tap, "up"},
			{"addr", "add", "169.254.1.1/32", "dev", tap},
			{"route", "add", guestIP.String() + "/32", "dev", tap},
		} {
			if _, err := node.IP(ctx, args...); err != nil {
				return err
			}
		}
		if _, err := node.Exec(ctx, "sysctl", "-q", "net.ipv4.conf."+tap+".proxy_arp=1"); err != nil {
			return err
		}
		dhcp = serveDHCP(t, node, tap, guestIP)
		return nil
	}
	t.Logf("artifacts, node and libvirtd ready %v after the test started", time.Since(testStart))
	if err := d.Start(ctx, plumb); err != nil {
		t.Fatal(err)
	}
	t.Logf("guest defined, started paused, plumbed and resumed %v after the test started", time.Since(testStart))
	addr, router, err := d.WaitDHCP(ctx, 0, bootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	bootToDHCP := time.Since(d.StartedAt)
	if addr != "10.79.0.10/32" || router != "169.254.1.1" {
		t.Fatalf("guest applied %s via %s, want 10.79.0.10/32 via 169.254.1.1", addr, router)
	}
	if _, err := d.Console.Wait(ctx, 0, LineReady, cmdTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("boot: resume -> DHCP applied in %v (%d ACKs), -> ready in %v", bootToDHCP, dhcp.acks.Load(), time.Since(d.StartedAt))

	// The live XML names the tap and the MAC, and keeps the metadata.
	x, err := d.LiveXML()
	if err != nil {
		t.Fatal(err)
	}
	if n := len(x.Devices.Interfaces); n != 1 || x.Devices.Interfaces[0].Target == nil || x.Devices.Interfaces[0].Target.Dev != tap {
		t.Errorf("live XML interfaces: %+v, want one on %s", x.Devices.Interfaces, tap)
	}
	if x.Metadata == nil || !strings.Contains(x.Metadata.XML, `key="app" value="web"`) {
		t.Errorf("metadata not passed through: %+v", x.Metadata)
	}

	pingGuest := func() error {
		_, err := node.Exec(ctx, "ping", "-c1", "-W1", guestIP.String())
		return err
	}
	netnode.WaitFor(t, "ping from the node to the guest", cmdTimeout, 100*time.Millisecond, pingGuest)
	t.Logf("ping from the node answered %v after resume", time.Since(d.StartedAt))
	checkServers(t, node, guestIP.String(), name)
	t.Logf("servers answered %v after resume", time.Since(d.StartedAt))

	for _, c := range []struct {
		cmd  string
		code int
		want string
	}{
		{"ping -c1 -W2 169.254.1.1", 0, "1 packets received"},
		{"ip -4 addr show dev eth0", 0, "inet 10.79.0.10/32"},
		{"ip route", 0, "default via 169.254.1.1 dev eth0"},
		{"cat /proc/sys/kernel/hostname", 0, name},
		{"echo to-stderr >&2; exit 3", 3, "to-stderr"},
	} {
		out, code, err := d.Console.Run(ctx, c.cmd, cmdTimeout)
		if err != nil {
			t.Fatal(err)
		}
		if code != c.code || !strings.Contains(out, c.want) {
			t.Errorf("guest %q: status %d, output %q; want %d and %q", c.cmd, code, out, c.code, c.want)
		}
	}

	t.Logf("console commands done %v after resume", time.Since(d.StartedAt))

	// ACPI reboot: same QEMU and tap, a new boot and a new lease.
	mark := d.Console.Mark()
	rebootAt := time.Now()
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Console.Wait(ctx, mark, LineInit, bootTimeout); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.WaitDHCP(ctx, mark, bootTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("reboot: ACPI reboot -> DHCP applied in %v", time.Since(rebootAt))
	netnode.WaitFor(t, "ping after reboot", cmdTimeout, 100*time.Millisecond, pingGuest)

	// ACPI shutdown: the guest powers off and the domain stops.
	mark = d.Console.Mark()
	shutdownAt := time.Now()
	if err := d.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Console.Wait(ctx, mark, LinePoweroff, cmdTimeout); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitState(ctx, libvirt.DOMAIN_SHUTOFF, cmdTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("shutdown: ACPI power button -> shut off in %v", time.Since(shutdownAt))

	// Start again: a new QEMU and a new tap (plumbed again), the console reconnected.
	mark = d.Console.Mark()
	if err := d.Start(ctx, plumb); err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.WaitDHCP(ctx, mark, bootTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("restart: resume -> DHCP applied in %v", time.Since(d.StartedAt))
	netnode.WaitFor(t, "ping after restart", cmdTimeout, 100*time.Millisecond, pingGuest)
}

// TestNoDHCP boots a guest whose tap has no DHCP server behind it: the guest must say
// so on its console, and still start its console shell (with no address on eth0).
func TestNoDHCP(t *testing.T) {
	Require(t, suite)
	ctx := netnode.Context(t, 5*time.Minute)
	art := BuildT(t, suite)
	id, err := netnode.RandomID()
	if err != nil {
		t.Fatal(err)
	}
	node := netnode.NewT(t, ctx, netnode.Options{Prefix: "vmh" + id})
	_, conn := LibvirtdT(t, suite, "")
	tap := "vmh" + id
	d := DefineT(t, conn, Options{Name: "tabby-vmguest-nodhcp-" + id, MAC: "52:54:00:4f:00:0b", Tap: tap, Artifacts: art})
	if err := d.Start(ctx, func() error {
		if _, err := netnode.Run(ctx, "ip", "link", "set", tap, "netns", node.Name); err != nil {
			return err
		}
		_, err := node.IP(ctx, "link", "set", tap, "up")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// libvirt gave the tap the guest's MAC with fe: first.
	if out, err := node.IP(ctx, "-br", "link", "show", tap); err != nil || !strings.Contains(out, "fe:54:00:4f:00:0b") {
		t.Errorf("tap %s: %q, %v; want MAC fe:54:00:4f:00:0b", tap, out, err)
	}
	_, _, err = d.WaitDHCP(ctx, 0, bootTimeout)
	if err == nil || !strings.Contains(err.Error(), "dhcp failed") {
		t.Fatalf("without a DHCP server: got %v, want a dhcp failed line", err)
	}
	t.Logf("no lease, %v after resume: %v", time.Since(d.StartedAt), err)
	if _, err := d.Console.Wait(ctx, 0, LineReady, cmdTimeout); err != nil {
		t.Fatal(err)
	}
	out, code, err := d.Console.Run(ctx, "ip -4 -o addr show dev eth0; ip -4 route", cmdTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if code != 0 || strings.TrimSpace(out) != "" {
		t.Errorf("guest without a lease: status %d, addresses and routes %q; want 0 and none", code, out)
	}
}

// checkServers expects the guest's HTTP server (80) and name server (8080) to answer
// with its name, from inside the node namespace.
func checkServers(t *testing.T, node *netnode.Node, ip, name string) {
	t.Helper()
	fetch := func(port, req string) (string, error) {
		var body string
		err := node.Do(func() error {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(ip, port), 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(c, req); err != nil {
				return err
			}
			b, err := io.ReadAll(bufio.NewReader(c))
			body = string(b)
			return err
		})
		return body, err
	}
	for _, c := range []struct{ port, req string }{
		{"80", "GET / HTTP/1.0\r\nHost: guest\r\n\r\n"},
		{"8080", ""},
	} {
		netnode.WaitFor(t, "guest server on port "+c.port, cmdTimeout, 200*time.Millisecond, func() error {
			body, err := fetch(c.port, c.req)
			if err != nil {
				return err
			}
			if !strings.Contains(body, name) {
				return fmt.Errorf("answer %q lacks %q", body, name)
			}
			return nil
		})
	}
}

// TestLibvirtdInNetns checks where libvirtd runs. By default it uses the shared
// host-namespace libvirtd (starting it if none runs) and expects a request for one in
// a test namespace to get ErrOtherNetns. With TABBY_VMGUEST_LIBVIRTD_NETNS=1 (a machine
// whose libvirtd this run owns: no other suite may run at the same time, their taps
// would land in the test's namespace) it starts libvirtd inside a test namespace,
// checks it runs there, and stops it.
func TestLibvirtdInNetns(t *testing.T) {
	Require(t, suite)
	ctx := netnode.Context(t, 2*time.Minute)
	id, err := netnode.RandomID()
	if err != nil {
		t.Fatal(err)
	}
	node := netnode.NewT(t, ctx, netnode.Options{Prefix: "vmn" + id})
	if os.Getenv("TABBY_VMGUEST_LIBVIRTD_NETNS") != "1" {
		LibvirtdT(t, suite, "")
		_, err := StartLibvirtd(ctx, node.Name)
		if !errors.Is(err, ErrOtherNetns) {
			t.Fatalf("with libvirtd in the host's namespace: got %v, want ErrOtherNetns", err)
		}
		t.Logf("as expected: %v", err)
		return
	}
	if pid := livePid(libvirtdPidFile, "libvirtd"); pid != 0 {
		t.Fatalf("TABBY_VMGUEST_LIBVIRTD_NETNS=1 wants no libvirtd running, but pid %d is", pid)
	}
	l, err := StartLibvirtd(ctx, node.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.Stop(); err != nil {
			t.Error(err)
		}
		if pid := livePid(libvirtdPidFile, "libvirtd"); pid != 0 {
			t.Errorf("libvirtd (pid %d) still runs after Stop", pid)
		}
	}()
	got, err := pidNsIno(l.PID)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := nsIno(node.Name); got != want || !l.Started {
		t.Errorf("libvirtd (pid %d, started %v) runs in %s, want netns %s", l.PID, l.Started, nsName(got), node.Name)
	}
}
