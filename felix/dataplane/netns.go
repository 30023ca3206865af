package dataplane

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// NSThread runs functions on one OS thread that lives in a given network namespace, for
// what depends on the calling thread's namespace (/proc/sys/net). The zero value and a
// nil *NSThread run functions on the caller's goroutine, in the caller's namespace.
type NSThread struct {
	reqs chan func()
}

// NewNSThread starts a thread in the network namespace at path (/run/netns/NAME,
// /proc/PID/ns/net). Close it when done: the thread then exits rather than return to
// the Go scheduler in a foreign namespace.
func NewNSThread(path string) (*NSThread, error) {
	t := &NSThread{reqs: make(chan func())}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: a goroutine that exits locked takes its thread with it, so no
		// other goroutine ever runs in this namespace.
		runtime.LockOSThread()
		ns, err := netns.GetFromPath(path)
		if err != nil {
			errc <- fmt.Errorf("open network namespace %s: %w", path, err)
			return
		}
		err = netns.Set(ns)
		ns.Close()
		if err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		errc <- nil
		for fn := range t.reqs {
			fn()
		}
	}()
	if err := <-errc; err != nil {
		return nil, err
	}
	return t, nil
}

// Do runs fn on the thread and waits for it.
func (t *NSThread) Do(fn func()) {
	if t == nil || t.reqs == nil {
		fn()
		return
	}
	done := make(chan struct{})
	t.reqs <- func() { defer close(done); fn() }
	<-done
}

// Close ends the thread. Do must not be called after Close.
func (t *NSThread) Close() {
	if t != nil && t.reqs != nil {
		close(t.reqs)
	}
}
