package vmguest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tabbynet/tabby/test/netnode"
)

// URI is the system libvirtd's connection URI.
const URI = "qemu:///system"

// Pid files of the daemons started with -d as root.
const (
	libvirtdPidFile = "/run/libvirtd.pid"
	virtlogdPidFile = "/run/virtlogd.pid"
)

// ErrOtherNetns is returned by StartLibvirtd when the machine's one system libvirtd
// already runs in a network namespace other than the one asked for: its taps would
// land there, not in the caller's namespace.
var ErrOtherNetns = errors.New("libvirtd already runs in another network namespace")

// Libvirtd is the system libvirtd (and virtlogd) the guests run under. There is one per
// machine: tests share it and use unique domain names.
type Libvirtd struct {
	PID   int    // libvirtd's pid
	Netns string // the named network namespace it runs in; "" is the host's
	// Started tells whether StartLibvirtd started libvirtd (and so Stop stops it).
	Started bool

	virtlogd int // pid of a virtlogd StartLibvirtd started, else 0
}

// StartLibvirtd makes sure virtlogd and libvirtd run and answer on URI, and returns the
// libvirtd. netns "" wants it in the host's network namespace (taps appear there; the
// default, shared by every suite); a name wants it started inside that namespace with
// `ip netns exec NAME libvirtd -d`, so that the taps of its guests land there (for a
// suite or lab that owns the machine's libvirtd, one node hosting the VMs). A libvirtd
// already running in the wanted namespace is reused (and Stop leaves it running); one
// running elsewhere is ErrOtherNetns, naming where it runs.
func StartLibvirtd(ctx context.Context, netns string) (*Libvirtd, error) {
	want, err := nsIno(netns)
	if err != nil {
		return nil, err
	}
	if err := openKVMToQEMU(); err != nil {
		return nil, err
	}
	l := &Libvirtd{Netns: netns}
	if pid := livePid(virtlogdPidFile, "virtlogd"); pid == 0 {
		if _, err := netnode.Run(ctx, "virtlogd", "-d"); err != nil {
			return nil, fmt.Errorf("vmguest: start virtlogd: %w", err)
		}
		l.virtlogd = livePid(virtlogdPidFile, "virtlogd")
	}
	if pid := livePid(libvirtdPidFile, "libvirtd"); pid != 0 {
		got, err := pidNsIno(pid)
		if err != nil {
			return nil, err
		}
		if got != want {
			return nil, fmt.Errorf("vmguest: libvirtd (pid %d) runs in the network namespace of %s, not in %s: %w",
				pid, nsName(got), nsLabel(netns), ErrOtherNetns)
		}
		l.PID = pid
	} else {
		args := []string{"libvirtd", "-d"}
		if netns != "" {
			args = append([]string{"ip", "netns", "exec", netns}, args...)
		}
		if _, err := netnode.Run(ctx, args[0], args[1:]...); err != nil {
			return nil, errors.Join(fmt.Errorf("vmguest: start libvirtd: %w", err), l.stopVirtlogd())
		}
		l.Started = true
	}
	if err := netnode.Poll(ctx, 30*time.Second, 50*time.Millisecond, func() error {
		if l.PID == 0 {
			if l.PID = livePid(libvirtdPidFile, "libvirtd"); l.PID == 0 {
				return errors.New("no libvirtd pid file yet")
			}
		}
		_, err := netnode.Run(ctx, "virsh", "-q", "-c", URI, "list")
		return err
	}); err != nil {
		return nil, errors.Join(fmt.Errorf("vmguest: libvirtd does not answer: %w", err), l.Stop())
	}
	return l, nil
}

// openKVMToQEMU gives /dev/kvm the group and mode Debian's udev rule gives it (root:kvm
// 0660), when it exists and is root's alone (no udev here). Otherwise libvirtd finds
// KVM unusable by QEMU's user, while its probe of QEMU saw KVM, so it deems its cached
// QEMU capabilities outdated and probes QEMU again (seconds, tens of seconds under
// load) on every define and start. The guests are TCG (type qemu) either way.
func openKVMToQEMU() error {
	const dev = "/dev/kvm"
	var st syscall.Stat_t
	if err := syscall.Stat(dev, &st); err != nil || st.Mode&0o060 == 0o060 {
		return nil
	}
	grp, err := user.LookupGroup("kvm")
	if err != nil {
		return nil // no kvm group: QEMU's user cannot be given KVM the Debian way
	}
	gid, err := strconv.Atoi(grp.Gid)
	if err != nil {
		return fmt.Errorf("vmguest: kvm group id %q: %w", grp.Gid, err)
	}
	if err := os.Chown(dev, 0, gid); err != nil {
		return fmt.Errorf("vmguest: chgrp kvm %s: %w", dev, err)
	}
	if err := os.Chmod(dev, 0o660); err != nil {
		return fmt.Errorf("vmguest: chmod %s: %w", dev, err)
	}
	return nil
}

// Stop stops what StartLibvirtd started: libvirtd, unless domains it did not make
// (other suites') still exist on it, and virtlogd. Guests keep running across a
// libvirtd restart, so only a machine without guests loses its daemon.
func (l *Libvirtd) Stop() error {
	var errs []error
	if l.Started && l.PID != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := netnode.Run(ctx, "virsh", "-q", "-c", URI, "list", "--all", "--name")
		cancel()
		if err == nil && strings.TrimSpace(out) != "" {
			return fmt.Errorf("vmguest: leaving libvirtd (pid %d) running: it still has domains %s",
				l.PID, strings.Join(strings.Fields(out), " "))
		}
		errs = append(errs, stopPid(l.PID, "libvirtd"))
		l.Started = false
	}
	errs = append(errs, l.stopVirtlogd())
	return errors.Join(errs...)
}

func (l *Libvirtd) stopVirtlogd() error {
	if l.virtlogd == 0 {
		return nil
	}
	pid := l.virtlogd
	l.virtlogd = 0
	return stopPid(pid, "virtlogd")
}

// stopPid sends SIGTERM to pid and waits until it is gone, then SIGKILLs it.
func stopPid(pid int, what string) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("vmguest: stop %s: %w", what, err)
	}
	gone := func() error {
		if commOf(pid) != what {
			return nil
		}
		return fmt.Errorf("%s (pid %d) still runs", what, pid)
	}
	if netnode.Poll(context.Background(), 15*time.Second, 50*time.Millisecond, gone) == nil {
		return nil
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if err := netnode.Poll(context.Background(), 5*time.Second, 50*time.Millisecond, gone); err != nil {
		return fmt.Errorf("vmguest: stop %s: %w", what, err)
	}
	return nil
}

// livePid is the pid in pidFile when a process named comm runs under it, else 0.
func livePid(pidFile, comm string) int {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 || commOf(pid) != comm {
		return 0
	}
	return pid
}

func commOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// nsIno is the inode of the named network namespace ("" the host's: the one this
// process runs in).
func nsIno(netns string) (uint64, error) {
	path := "/proc/self/ns/net"
	if netns != "" {
		path = netnode.NSPath(netns)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("vmguest: network namespace %s: %w", nsLabel(netns), err)
	}
	return st.Ino, nil
}

func pidNsIno(pid int) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &st); err != nil {
		return 0, fmt.Errorf("vmguest: network namespace of pid %d: %w", pid, err)
	}
	return st.Ino, nil
}

// nsName names the network namespace of inode ino for a message.
func nsName(ino uint64) string {
	if host, err := nsIno(""); err == nil && host == ino {
		return "the host"
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/run/netns", e.Name()), &st) == nil && st.Ino == ino {
			return "netns " + e.Name()
		}
	}
	return fmt.Sprintf("an unnamed namespace (inode %d)", ino)
}

func nsLabel(netns string) string {
	if netns == "" {
		return "the host's namespace"
	}
	return "netns " + netns
}
