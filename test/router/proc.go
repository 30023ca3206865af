package router

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cliTimeout bounds a CLI call whose context has no deadline: a CLI whose daemon is
// gone can hang (gobgp waits on a dead socket).
const cliTimeout = 30 * time.Second

// stopGrace is how long a daemon may take to exit after SIGTERM before it is killed.
const stopGrace = 5 * time.Second

// spawner starts the daemons from one locked OS thread that lives as long as the
// router. The kernel sends a child its parent-death signal (Pdeathsig) when the thread
// that forked it ends, not the process, and Go ends threads behind our back (one that a
// goroutine left locked, say): starting from a thread of our own keeps the daemons
// alive exactly until the router is closed or the process dies.
type spawner struct {
	reqs chan spawnReq
	once sync.Once
}

type spawnReq struct {
	cmd  *exec.Cmd
	errc chan error
}

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan spawnReq)}
	go func() {
		// Never unlocked: when close ends this goroutine, the thread ends with it and
		// whatever it started that is still alive gets its SIGKILL.
		runtime.LockOSThread()
		for req := range s.reqs {
			req.errc <- req.cmd.Start()
		}
	}()
	return s
}

func (s *spawner) start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	s.reqs <- spawnReq{cmd, errc}
	return <-errc
}

func (s *spawner) close() { s.once.Do(func() { close(s.reqs) }) }

// daemon is one foreground process of a router, its stdout and stderr in a log file.
type daemon struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited
	err  error         // how it exited, once done is closed
}

// startDaemon runs bin with args inside the router's network namespace, in the
// foreground, its output appended to <dir>/<name>.log.
func (r *Router) startDaemon(name, bin string, args ...string) (*daemon, error) {
	logPath := filepath.Join(r.dir, name+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open %s log: %w", name, err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command("ip", append([]string{"netns", "exec", r.cfg.Netns, bin}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := r.spawn.start(cmd); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	d := &daemon{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		d.err = cmd.Wait()
		close(d.done)
	}()
	r.mu.Lock()
	r.daemons = append(r.daemons, d)
	r.mu.Unlock()
	return d, nil
}

// exited reports an error when d has exited.
func (d *daemon) exited() error {
	select {
	case <-d.done:
		return fmt.Errorf("%s exited: %v", d.name, d.err)
	default:
		return nil
	}
}

// stop sends sig (SIGKILL at once when sig is SIGKILL) and waits up to grace for d to
// exit, then kills it.
func (d *daemon) stop(sig syscall.Signal, grace time.Duration) error {
	if d.exited() != nil {
		return nil
	}
	if err := d.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("signal %s: %w", d.name, err)
	}
	if sig != syscall.SIGKILL {
		select {
		case <-d.done:
			return nil
		case <-time.After(grace):
		}
		if err := d.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("kill %s: %w", d.name, err)
		}
	}
	select {
	case <-d.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) does not exit", d.name, d.cmd.Process.Pid)
	}
}

// waitReady polls ready every 20 ms until it succeeds, failing early when one of ds
// exits, and at the latest when ctx ends or after timeout.
func waitReady(ctx context.Context, timeout time.Duration, ready func() error, ds ...*daemon) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		for _, d := range ds {
			if err := d.exited(); err != nil {
				return err
			}
		}
		err := ready()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not ready: %w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// runCLI runs a command line client and returns its combined output; an error carries
// the output.
func runCLI(ctx context.Context, name string, args ...string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cliTimeout)
		defer cancel()
	}
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// tail is the last max bytes of the file at path, from a line start.
func tail(path string, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return ""
	}
	off := fi.Size() - max
	if off < 0 {
		off = 0
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return ""
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return ""
	}
	if off > 0 {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return string(b)
}

// writeFile writes a config file.
func writeFile(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}
