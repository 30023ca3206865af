package vmguest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabbynet/tabby/test/netnode"
)

// TestPrivateLibvirtd: a private libvirtd answers on its own socket, is not the
// system daemon (none of its domains), comes back after a SIGTERM and a SIGKILL, and
// leaves nothing behind. (test/vm's TestLibvirtdRestart runs a guest across it.)
func TestPrivateLibvirtd(t *testing.T) {
	Require(t, suite)
	for _, bin := range []string{"unshare", "mount"} {
		_, err := exec.LookPath(bin)
		netnode.Require(t, suite, bin, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	p, err := StartPrivateLibvirtd(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
		if _, err := os.Stat(p.Dir); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", p.Dir, err)
		}
	}()
	if !strings.HasPrefix(p.URI, "qemu:///system?socket="+p.Dir) {
		t.Errorf("URI %q", p.URI)
	}
	if out, err := netnode.Run(ctx, "virsh", "-q", "-c", p.URI, "list", "--all", "--name"); err != nil || strings.TrimSpace(out) != "" {
		t.Errorf("a fresh private libvirtd lists %q, %v; want no domains (the system daemon's are not its)", out, err)
	}
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		pid := p.PID
		if err := p.Stop(sig); err != nil {
			t.Fatal(err)
		}
		if alive(pid, "libvirtd") || p.PID != 0 {
			t.Fatalf("libvirtd %d still runs after %v", pid, sig)
		}
		start := time.Now()
		if err := p.Start(ctx); err != nil {
			t.Fatalf("start again after %v: %v", sig, err)
		}
		t.Logf("after %v: back (pid %d) in %v", sig, p.PID, time.Since(start).Round(time.Millisecond))
	}
}
