package netnode

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func inCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// Require skips t loudly when a component is missing (err != nil), or fails it under
// CI=true, where suites never skip. suite names the suite in the message ("test/cni").
func Require(t testing.TB, suite, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("!!! %s: %s unavailable: %v", suite, what, err)
	if inCI() {
		t.Fatal(msg)
	}
	fmt.Fprintln(os.Stderr, strings.Repeat("!", 78)+"\n"+msg+"\n!!! SKIPPING (this would FAIL under CI=true)\n"+strings.Repeat("!", 78))
	t.Skip(msg)
}

// RequireNetns is Require for what a node needs: root, and bins on $PATH.
func RequireNetns(t testing.TB, suite string, bins ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Require(t, suite, "root", errors.New("network namespaces need root"))
	}
	for _, bin := range bins {
		_, err := exec.LookPath(bin)
		Require(t, suite, bin, err)
	}
}

// NewT is New for a test: t fails when it fails, and the node is removed when t ends.
func NewT(t testing.TB, ctx context.Context, opts Options) *Node {
	t.Helper()
	n, err := New(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Logf("remove node %s: %v", n.Name, err)
		}
	})
	return n
}

// PodNS is NewPodNS for a test: t fails when it fails, and the namespace is deleted
// when t ends.
func (n *Node) PodNS(t testing.TB, tag string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	name, err := n.NewPodNS(ctx, tag)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.DeletePodNS(name) })
	return name
}

// Network writes the conflist of network into r.ConfDir (see WriteConflist) for a
// test: t fails when it fails, and when t ends cnitool's cached results of the network
// (the runtime's state) are removed, also after a failure.
func (r *Runtime) Network(t testing.TB, network, cniVersion string, conf map[string]any) {
	t.Helper()
	if err := WriteConflist(r.ConfDir, network, cniVersion, conf); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = RemoveCNIResults(network) })
}

// MustRun runs a command (within 30s) and returns its combined output; t fails when it
// fails.
func MustRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := Run(ctx, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Context is a context that ends after d or with t.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// WaitFor polls cond every interval until it succeeds; t fails when it has not within
// timeout.
func WaitFor(t testing.TB, what string, timeout, every time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(context.Background(), timeout, every, cond); err != nil {
		t.Fatalf("%s: not within %v: %v", what, timeout, err)
	}
}

// Poll calls cond every interval until it succeeds and returns nil, or returns cond's
// last error once timeout has passed, or the context's error.
func Poll(ctx context.Context, timeout, every time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
