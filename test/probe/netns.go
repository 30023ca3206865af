package probe

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// nsPath is the path of a network namespace given by name (under /run/netns) or path.
func nsPath(netns string) string {
	if strings.ContainsRune(netns, '/') {
		return netns
	}
	return "/run/netns/" + netns
}

// inNetns runs fn on a locked OS thread inside the network namespace; sockets fn makes
// stay in it.
func inNetns(netns string, fn func() error) error {
	if err := ns.WithNetNSPath(nsPath(netns), func(ns.NetNS) error { return fn() }); err != nil {
		return fmt.Errorf("in network namespace %s: %w", netns, err)
	}
	return nil
}

// socketIn makes a non-blocking, close-on-exec socket inside the network namespace.
func socketIn(netns string, domain, typ, proto int) (int, error) {
	fd := -1
	err := inNetns(netns, func() error {
		var err error
		fd, err = unix.Socket(domain, typ|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		return nil
	})
	return fd, err
}

// fileOf wraps a non-blocking socket so Go's poller waits on it (deadlines work).
func fileOf(fd int, name string) *os.File {
	return os.NewFile(uintptr(fd), name)
}

// sendto sends b to addr on a non-blocking socket, waiting while its buffer is full.
func sendto(f *os.File, b []byte, addr unix.Sockaddr) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return fmt.Errorf("sendto: %w", err)
	}
	var serr error
	if err := rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), b, 0, addr)
		return !errors.Is(serr, unix.EAGAIN)
	}); err != nil {
		return fmt.Errorf("sendto: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("sendto: %w", serr)
	}
	return nil
}

// isRefused reports whether err is a connection refused (TCP reset, ICMP port
// unreachable).
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
