package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// SocketMode is the permission of the local API socket: root and the socket's group.
const SocketMode = 0o660

// socketListener is the local API's unix listener. Close removes the socket file, but
// only while it is still the one this listener created (a newer agent may have
// replaced it).
type socketListener struct {
	*net.UnixListener
	path string
	fi   os.FileInfo
}

// listenSocket listens on a unix socket at path with mode SocketMode. A socket file
// left at path by an agent that died is replaced, but only if nobody answers on it;
// it refuses when another process answers, or when path is not a socket. The socket is
// bound under a temporary name, given its mode, then renamed over path, so it never
// exists at path with another mode and the old file is replaced atomically.
func listenSocket(path string, log *zap.Logger) (*socketListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create the socket directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket: not replacing it", path)
		}
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("another process (another tabby-node?) answers on %s", path)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ENOENT) {
			return nil, fmt.Errorf("check the existing socket %s: %w", path, err)
		}
		log.Info("replacing a stale socket nobody answers on", zap.String("socket", path))
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	tmp := path + "." + strconv.Itoa(os.Getpid()) + ".tmp"
	_ = os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", tmp, err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*socketListener, error) {
		ln.Close()
		_ = os.Remove(tmp)
		return nil, err
	}
	if err := os.Chmod(tmp, SocketMode); err != nil {
		return fail(fmt.Errorf("chmod %s: %w", tmp, err))
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(fmt.Errorf("move the socket to %s: %w", path, err))
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return fail(fmt.Errorf("stat %s: %w", path, err))
	}
	return &socketListener{UnixListener: ln, path: path, fi: fi}, nil
}

// Close stops listening and removes the socket file if it is still ours.
func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	if fi, serr := os.Lstat(l.path); serr == nil && os.SameFile(fi, l.fi) {
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) && err == nil {
			err = fmt.Errorf("remove %s: %w", l.path, rerr)
		}
	}
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
