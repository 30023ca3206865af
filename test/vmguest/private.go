package vmguest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tabbynet/tabby/test/netnode"
)

// PrivateLibvirtd is a libvirtd of a test's own, next to the machine's one system
// libvirtd, for a test that stops, kills or restarts it (the shared one must never be).
//
// How it runs: as root libvirtd is always privileged (it has no session mode for
// root) and its QEMU driver keeps state under fixed paths (/run/libvirt,
// /var/lib/libvirt, /var/cache/libvirt, /etc/libvirt, /var/log/libvirt), where the
// system daemon's state is. So each start runs `unshare -m --propagation private`
// and, in that new mount namespace, bind-mounts Dir/{run,lib,cache,etc,log} over
// those paths before it execs `libvirtd -d -p Dir/libvirtd.pid`. Its libvirtd.conf
// (Dir/etc) sets unix_sock_dir to Dir/sock, outside the bind mounts, so clients reach
// it with URI (qemu:///system?socket=Dir/sock/libvirt-sock). Its qemu.conf is the
// system's plus stdio_handler="file" (QEMU writes its own logs: no virtlogd, whose
// socket is under /run/libvirt) and cgroup_controllers=[] (no cgroups to leave
// behind). Its QEMU capabilities cache starts as a copy of the system's (no probe).
// Because the bind mounts are the same directories at every start, a restarted
// daemon finds its running guests' state and monitor sockets and reconnects to them:
// guests keep running across Stop/Kill and Start, as under the system daemon.
//
// With a network namespace (StartPrivateLibvirtdIn) the daemon starts inside it
// (`ip netns exec NS unshare -m ...`), so its guests' taps and QEMU's migration
// sockets are there: one daemon per test node, e.g. to migrate a guest between
// nodes. Each daemon has a host UUID of its own (libvirtd.conf host_uuid), or libvirt
// refuses a migration between two of them as one "to the same host".
type PrivateLibvirtd struct {
	Dir   string
	URI   string
	Netns string // the named network namespace it runs in; "" is the caller's
	PID   int    // the running libvirtd's pid, 0 when stopped
}

// privateMounts are the directories of Dir bind-mounted over libvirt's own.
var privateMounts = [][2]string{
	{"run", "/run/libvirt"}, {"lib", "/var/lib/libvirt"}, {"cache", "/var/cache/libvirt"},
	{"etc", "/etc/libvirt"}, {"log", "/var/log/libvirt"},
}

// StartPrivateLibvirtd makes a private libvirtd's directory (under dir, "" the
// system's temporary directory) and starts it. On failure what was made is removed.
func StartPrivateLibvirtd(ctx context.Context, dir string) (*PrivateLibvirtd, error) {
	return StartPrivateLibvirtdIn(ctx, dir, "")
}

// StartPrivateLibvirtdIn is StartPrivateLibvirtd with the daemon running inside the
// named network namespace netns ("" the caller's).
func StartPrivateLibvirtdIn(ctx context.Context, dir, netns string) (*PrivateLibvirtd, error) {
	for _, bin := range []string{"libvirtd", "unshare", "mount", "virsh"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("vmguest: private libvirtd: %w", err)
		}
	}
	if err := openKVMToQEMU(); err != nil {
		return nil, err
	}
	d, err := os.MkdirTemp(dir, "tabby-libvirtd-")
	if err != nil {
		return nil, fmt.Errorf("vmguest: private libvirtd dir: %w", err)
	}
	p := &PrivateLibvirtd{Dir: d, URI: "qemu:///system?socket=" + filepath.Join(d, "sock", "libvirt-sock"), Netns: netns}
	if err := p.setup(); err != nil {
		return nil, errors.Join(err, os.RemoveAll(d))
	}
	if err := p.Start(ctx); err != nil {
		return nil, errors.Join(err, p.Close())
	}
	return p, nil
}

func (p *PrivateLibvirtd) setup() error {
	// QEMU (uid 64055) must reach its files under lib/qemu through Dir.
	if err := os.Chmod(p.Dir, 0o755); err != nil {
		return fmt.Errorf("vmguest: %w", err)
	}
	for _, m := range privateMounts {
		if err := os.MkdirAll(filepath.Join(p.Dir, m[0]), 0o755); err != nil {
			return fmt.Errorf("vmguest: %w", err)
		}
	}
	for _, sub := range []string{"sock", "lib/qemu", "cache/qemu", "log/qemu"} {
		if err := os.MkdirAll(filepath.Join(p.Dir, sub), 0o755); err != nil {
			return fmt.Errorf("vmguest: %w", err)
		}
	}
	// The system's QEMU capabilities, so the daemon does not probe QEMU again (a
	// stale or missing cache only costs a probe).
	if _, err := os.Stat("/var/cache/libvirt/qemu/capabilities"); err == nil {
		if _, err := netnode.Run(context.Background(), "cp", "-a", "/var/cache/libvirt/qemu/capabilities", filepath.Join(p.Dir, "cache", "qemu")); err != nil {
			return fmt.Errorf("vmguest: copy the QEMU capabilities cache: %w", err)
		}
	}
	conf := func(name, extra string) error {
		b, err := os.ReadFile(filepath.Join("/etc/libvirt", name))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("vmguest: %w", err)
		}
		b = append(b, "\n# test/vmguest private libvirtd\n"+extra...)
		if err := os.WriteFile(filepath.Join(p.Dir, "etc", name), b, 0o644); err != nil {
			return fmt.Errorf("vmguest: %w", err)
		}
		return nil
	}
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return fmt.Errorf("vmguest: host uuid: %w", err)
	}
	u[6], u[8] = u[6]&0x0f|0x40, u[8]&0x3f|0x80
	hostUUID := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	if err := conf("libvirtd.conf", fmt.Sprintf("unix_sock_dir = %q\nhost_uuid = %q\n", filepath.Join(p.Dir, "sock"), hostUUID)); err != nil {
		return err
	}
	return conf("qemu.conf", "stdio_handler = \"file\"\ncgroup_controllers = [ ]\n")
}

// Start starts the daemon (again) and waits until it answers on URI.
func (p *PrivateLibvirtd) Start(ctx context.Context) error {
	if p.PID != 0 && alive(p.PID, "libvirtd") {
		return fmt.Errorf("vmguest: private libvirtd (pid %d) runs", p.PID)
	}
	p.PID = 0
	pidFile := filepath.Join(p.Dir, "libvirtd.pid")
	var script strings.Builder
	script.WriteString("set -e\n")
	for _, m := range privateMounts {
		fmt.Fprintf(&script, "mount --bind %q %q\n", filepath.Join(p.Dir, m[0]), m[1])
	}
	fmt.Fprintf(&script, "exec libvirtd -d -p %q -f /etc/libvirt/libvirtd.conf\n", pidFile)
	args := []string{"unshare", "-m", "--propagation", "private", "sh", "-c", script.String()}
	if p.Netns != "" {
		args = append([]string{"ip", "netns", "exec", p.Netns}, args...)
	}
	if _, err := netnode.Run(ctx, args[0], args[1:]...); err != nil {
		return fmt.Errorf("vmguest: start the private libvirtd: %w", err)
	}
	return netnode.Poll(ctx, 30*time.Second, 20*time.Millisecond, func() error {
		if p.PID == 0 {
			if p.PID = livePid(pidFile, "libvirtd"); p.PID == 0 {
				return errors.New("no libvirtd pid file yet")
			}
		}
		_, err := netnode.Run(ctx, "virsh", "-q", "-c", p.URI, "list")
		return err
	})
}

// Stop sends the daemon sig (SIGTERM, SIGKILL...) and waits until it is gone (up to
// 15 s; after a SIGTERM it is then SIGKILLed and that is an error). Guests keep
// running.
func (p *PrivateLibvirtd) Stop(sig syscall.Signal) error {
	pid := p.PID
	if pid == 0 || !alive(pid, "libvirtd") {
		p.PID = 0
		return nil
	}
	if err := syscall.Kill(pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("vmguest: signal the private libvirtd: %w", err)
	}
	gone := func() error {
		if alive(pid, "libvirtd") {
			return fmt.Errorf("libvirtd (pid %d) still runs after %v", pid, sig)
		}
		return nil
	}
	err := netnode.Poll(context.Background(), 15*time.Second, 20*time.Millisecond, gone)
	if err != nil {
		_ = syscall.Kill(pid, syscall.SIGKILL)
		err = errors.Join(fmt.Errorf("vmguest: %w", err), netnode.Poll(context.Background(), 5*time.Second, 20*time.Millisecond, gone))
	}
	if err == nil {
		p.PID = 0
	}
	return err
}

// QEMUPid is the pid of the running QEMU of the domain named name (from the
// daemon's state directory), or 0.
func (p *PrivateLibvirtd) QEMUPid(name string) int {
	return livePid(filepath.Join(p.Dir, "run", "qemu", name+".pid"), "qemu-system-x86")
}

// Close stops the daemon, kills any QEMU it left (domains not destroyed before) and
// removes Dir.
func (p *PrivateLibvirtd) Close() error {
	errs := []error{p.Stop(syscall.SIGTERM)}
	pids, _ := filepath.Glob(filepath.Join(p.Dir, "run", "qemu", "*.pid"))
	for _, f := range pids {
		if pid := livePid(f, "qemu-system-x86"); pid != 0 {
			errs = append(errs, fmt.Errorf("vmguest: private libvirtd left QEMU %s (pid %d) running: killed", filepath.Base(f), pid))
			_ = syscall.Kill(pid, syscall.SIGKILL)
			_ = netnode.Poll(context.Background(), 5*time.Second, 20*time.Millisecond, func() error {
				if alive(pid, "qemu-system-x86") {
					return errors.New("QEMU still runs")
				}
				return nil
			})
		}
	}
	errs = append(errs, os.RemoveAll(p.Dir))
	return errors.Join(errs...)
}

// alive tells whether pid is a live (not zombie) process named comm.
func alive(pid int, comm string) bool {
	if commOf(pid) != comm {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}
