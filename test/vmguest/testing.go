package vmguest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/tabbynet/tabby/test/netnode"
	"libvirt.org/go/libvirt"
)

// Require skips t under -short (make unit: no real components); otherwise it skips t
// loudly (or fails it under CI=true) unless it runs as root and libvirtd, virtlogd,
// virsh, QEMU and apt-get are installed (hack/deps.sh).
func Require(t testing.TB, suite string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no real libvirt guests")
	}
	if os.Geteuid() != 0 {
		netnode.Require(t, suite, "root", errors.New("libvirt guests, taps and namespaces need root"))
	}
	for _, bin := range []string{"libvirtd", "virtlogd", "virsh", "qemu-system-x86_64", "apt-get", "dpkg-deb", "ip"} {
		_, err := exec.LookPath(bin)
		netnode.Require(t, suite, bin+" (hack/deps.sh)", err)
	}
}

// BuildT is Build for a test: a missing artifact (no apt, no network) is Require'd.
// Under -short t is skipped (Build may download).
func BuildT(t testing.TB, suite string) *Artifacts {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: no downloads")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	a, err := Build(ctx, "")
	netnode.Require(t, suite, "guest kernel and initramfs", err)
	return a
}

// LibvirtdT is StartLibvirtd for a test (netns "" is the shared host-namespace daemon)
// plus a connection to it; both end with t. A libvirtd that cannot start is Require'd;
// ErrOtherNetns fails t.
func LibvirtdT(t testing.TB, suite, netns string) (*Libvirtd, *libvirt.Connect) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	l, err := StartLibvirtd(ctx, netns)
	if errors.Is(err, ErrOtherNetns) {
		t.Fatal(err)
	}
	netnode.Require(t, suite, "libvirtd", err)
	conn, err := libvirt.NewConnect(URI)
	if err != nil {
		_ = l.Stop()
		netnode.Require(t, suite, "libvirt connection", err)
	}
	// Registered after the domains' cleanups, so it runs after them.
	t.Cleanup(func() {
		if _, err := conn.Close(); err != nil {
			t.Logf("close libvirt connection: %v", err)
		}
		if err := l.Stop(); err != nil {
			t.Logf("stop libvirtd: %v", err)
		}
	})
	return l, conn
}

// DefineT is Define for a test: t fails when it fails; the domain is destroyed and
// undefined, its files removed, when t ends; when t failed, the console transcript is
// logged first.
func DefineT(t testing.TB, conn *libvirt.Connect, opts Options) *Domain {
	t.Helper()
	d, err := Define(conn, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if d.Console != nil {
				t.Logf("console of %s:\n%s", opts.Name, d.Console.Transcript())
			} else if b, err := os.ReadFile(d.ConsoleLog); err == nil {
				t.Logf("console log of %s:\n%s", opts.Name, b)
			}
		}
		if err := d.Close(); err != nil {
			t.Errorf("remove guest %s: %v", opts.Name, err)
		}
	})
	return d
}

// PrivateLibvirtdT is StartPrivateLibvirtd for a test: a daemon of the test's own
// (see PrivateLibvirtd), stopped and its directory removed when t ends (after the
// domains' cleanups: call it before DefineT). A daemon that cannot start is
// Require'd.
func PrivateLibvirtdT(t testing.TB, suite string) *PrivateLibvirtd {
	t.Helper()
	return PrivateLibvirtdInT(t, suite, "")
}

// PrivateLibvirtdInT is PrivateLibvirtdT with the daemon inside the named network
// namespace netns (StartPrivateLibvirtdIn).
func PrivateLibvirtdInT(t testing.TB, suite, netns string) *PrivateLibvirtd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := StartPrivateLibvirtdIn(ctx, "", netns)
	netnode.Require(t, suite, "a private libvirtd (libvirtd, unshare, mount)", err)
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("private libvirtd: %v", err)
		}
	})
	return p
}
