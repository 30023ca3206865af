package lab

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/tabbynet/tabby/test/netnode"
)

// Supervise is the lab's supervisor (tabbyctl lab run, started detached by lab up): it
// takes the state directory's lock, builds the lab, reporting each step to progress
// and to its own output (lab.log), closes progress once the lab is ready, serves the
// control socket, and holds everything until SIGTERM, SIGINT or SIGHUP; then it tears
// the lab down, last made first. Every process it starts dies with it (Pdeathsig), so
// a SIGKILL leaves only namespaces and files, which lab down sweeps.
func Supervise(o Options, progress *os.File, out io.Writer) error {
	o = o.Defaults()
	if err := o.Validate(); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer stop()
	if err := os.MkdirAll(o.StateDir, 0o755); err != nil {
		return fmt.Errorf("make the state directory: %w", err)
	}
	l, err := takeLock(o.StateDir)
	if err != nil {
		return err
	}
	defer l.release()
	p := &progresser{t0: time.Now(), out: out, pipe: progress}
	defer p.close()
	st := &State{Name: o.Name, StateDir: o.StateDir, PID: os.Getpid(), Started: p.t0, Phase: PhaseStarting, Options: o}
	if err := writeState(st); err != nil {
		return err
	}
	cl := &netnode.Cleanup{Logf: p.detail}
	s := &supervisor{o: o, st: st, p: p, cl: cl, spawn: newSpawner()}

	buildCtx, cancelBuild := context.WithTimeout(ctx, o.Timeout)
	err = s.build(buildCtx)
	cancelBuild()
	if err == nil {
		err = s.serve()
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted: %w", err)
		}
		p.step("error: %v", err)
		p.step("tearing down what was made")
		s.setPhase(PhaseFailed, err)
		if terr := cl.Run(); terr != nil {
			p.step("teardown: %v", terr)
		}
		p.step("torn down; the log stays in %s until tabbyctl lab down", filepath.Join(o.StateDir, logFile))
		return err
	}
	st.ReadyAfter = time.Since(p.t0).Round(100 * time.Millisecond).String()
	s.setPhase(PhaseReady, nil)
	p.step("lab ready in %s", st.ReadyAfter)
	p.close() // lab up stops following here

	<-ctx.Done()
	p.step("stopping: tearing the lab down")
	s.setPhase(PhaseStopping, nil)
	terr := cl.Run()
	if terr != nil {
		p.step("teardown: %v", terr)
	}
	s.setPhase(PhaseStopped, terr)
	p.step("lab torn down")
	return terr
}

// supervisor is one run of Supervise.
type supervisor struct {
	o     Options
	st    *State
	p     *progresser
	cl    *netnode.Cleanup
	spawn *spawner

	mu  sync.Mutex // guards st while the server reads it
	lab *built
}

// setPhase records the phase (and error) in state.json.
func (s *supervisor) setPhase(phase string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.Phase = phase
	if err != nil {
		s.st.Error = err.Error()
	}
	if werr := writeState(s.st); werr != nil {
		s.p.detail("%v", werr)
	}
}

// save writes state.json as it is now.
func (s *supervisor) save() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return writeState(s.st)
}

// snapshot is a copy of the state for a report.
func (s *supervisor) snapshot() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return *s.st
}

// serve listens on the control socket: GET /report answers a Report (with the
// connectivity matrix unless ?matrix=0). The server stops with the teardown.
func (s *supervisor) serve() error {
	path := filepath.Join(s.o.StateDir, sockFile)
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("listen on the control socket: %w", err)
	}
	var collectMu sync.Mutex // one collection (or demo) at a time: probes are not free
	mux := http.NewServeMux()
	mux.HandleFunc("GET /report", func(w http.ResponseWriter, r *http.Request) {
		collectMu.Lock()
		defer collectMu.Unlock()
		st := s.snapshot()
		rep := collect(r.Context(), &st, s.lab, r.URL.Query().Get("matrix") != "0")
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rep)
	})
	mux.HandleFunc("POST /policy/{action}", func(w http.ResponseWriter, r *http.Request) {
		collectMu.Lock()
		defer collectMu.Unlock()
		res, err := s.policyDemo(r.Context(), r.PathValue("action"))
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(http.StatusInternalServerError)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		_ = json.NewEncoder(w).Encode(res)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.p.detail("control socket: %v", err)
		}
	}()
	s.cl.Add("stop the control socket", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := srv.Shutdown(ctx)
		<-done
		_ = os.Remove(path)
		return err
	})
	return nil
}

// progresser writes the supervisor's progress lines: each to out (lab.log) and, until
// close, to the pipe lab up follows. A failed pipe write (lab up is gone) only ends
// the pipe's share.
type progresser struct {
	t0   time.Time
	mu   sync.Mutex
	out  io.Writer
	pipe *os.File
}

// step is a progress line, stamped with the time since the start.
func (p *progresser) step(format string, args ...any) {
	line := fmt.Sprintf("[%5.1fs] %s\n", time.Since(p.t0).Seconds(), fmt.Sprintf(format, args...))
	p.mu.Lock()
	defer p.mu.Unlock()
	_, _ = io.WriteString(p.out, line)
	if p.pipe != nil {
		if _, err := io.WriteString(p.pipe, line); err != nil {
			p.pipe.Close()
			p.pipe = nil
		}
	}
}

// detail goes to lab.log only.
func (p *progresser) detail(format string, args ...any) {
	line := fmt.Sprintf("[%5.1fs]   %s\n", time.Since(p.t0).Seconds(), fmt.Sprintf(format, args...))
	p.mu.Lock()
	defer p.mu.Unlock()
	_, _ = io.WriteString(p.out, line)
}

// close ends the pipe: lab up sees its end.
func (p *progresser) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.pipe != nil {
		p.pipe.Close()
		p.pipe = nil
	}
}

// spawner runs functions (that start processes) on one OS thread that lives as long as
// the supervisor: a child's Pdeathsig follows the thread that forked it, and Go ends
// threads behind our back (one a goroutine left locked), which would kill a tabby-node
// started from it.
type spawner struct{ reqs chan func() }

func newSpawner() *spawner {
	s := &spawner{reqs: make(chan func())}
	go func() {
		runtime.LockOSThread() // never unlocked: the thread lives until the process ends
		for f := range s.reqs {
			f()
		}
	}()
	return s
}

// do runs f on the spawner's thread and returns its error.
func (s *spawner) do(f func() error) error {
	errc := make(chan error, 1)
	s.reqs <- func() { errc <- f() }
	return <-errc
}
