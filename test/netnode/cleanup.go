package netnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Cleanup is a teardown stack: each step runs once, the last added first. A step added
// after Run has started runs at once. The zero value is ready to use.
type Cleanup struct {
	// Logf, when set, is told of each step that fails, as "teardown: <what>: <error>",
	// and of a signal OnSignal caught.
	Logf func(format string, args ...any)

	runMu sync.Mutex // held by Run while the steps run: a second Run waits for the first
	mu    sync.Mutex
	steps []cleanupStep
	done  bool
}

type cleanupStep struct {
	what string
	fn   func() error
}

// Add pushes a step; what names it in a report of its failure.
func (c *Cleanup) Add(what string, fn func() error) {
	c.mu.Lock()
	if !c.done {
		c.steps = append(c.steps, cleanupStep{what, fn})
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	_ = c.runStep(cleanupStep{what, fn})
}

// Run runs the steps, last added first, and returns their errors joined. Only the first
// call runs them; a concurrent call returns when they are done.
func (c *Cleanup) Run() error {
	c.runMu.Lock()
	defer c.runMu.Unlock()
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		return nil
	}
	c.done = true
	steps := c.steps
	c.steps = nil
	c.mu.Unlock()
	var errs []error
	for i := len(steps) - 1; i >= 0; i-- {
		if err := c.runStep(steps[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (c *Cleanup) runStep(s cleanupStep) error {
	err := s.fn()
	if err == nil {
		return nil
	}
	if c.Logf != nil {
		c.Logf("teardown: %s: %v", s.what, err)
	}
	return fmt.Errorf("%s: %w", s.what, err)
}

// OnSignal handles SIGINT, SIGTERM and SIGHUP for a benchmark: the first cancels the run
// (cancel), whose own teardown then runs; a second signal, or a minute without the
// process ending, runs c from here and exits with status 130. stop ends the handling.
func (c *Cleanup) OnSignal(cancel context.CancelFunc) (stop func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		if c.Logf != nil {
			c.Logf("%v: stopping and cleaning up", s)
		}
		cancel()
		select {
		case <-sigs:
		case <-time.After(time.Minute):
		}
		_ = c.Run()
		os.Exit(130)
	}()
	return func() { signal.Stop(sigs) }
}
