package k8senv

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// startTimeout bounds Start in Main; it includes a first-time build of the
// binaries, which can take well over ten minutes on a busy machine.
const startTimeout = 30 * time.Minute

var (
	skipMu     sync.Mutex
	skipReason string // why Main could not start an Env, for Require
)

// inCI reports whether $CI is set to true, where suites must never skip.
func inCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// Main is a TestMain helper: it starts one Env for the test package with
// opts, stores it in *env, runs m.Run, stops the Env and exits with the
// tests' status (or 1 if Stop fails).
//
// If the Env cannot start: with CI=true it prints the reason and exits 1,
// because a suite never silently skips in CI; otherwise it prints a loud
// banner with the reason (on stderr and, since "go test ./..." hides the
// output of passing packages, on /dev/tty when there is one), sets *env to
// nil and still runs the tests, which are expected to call Require and skip.
//
// Listing tests (go test -list) starts no Env.
func Main(m *testing.M, opts Options, env **Env) {
	if !flag.Parsed() {
		flag.Parse()
	}
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		*env = nil
		setSkipReason("k8senv: not started while listing tests")
		os.Exit(m.Run())
	}
	if opts.Logf == nil && testing.Verbose() {
		opts.Logf = func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
	}
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	e, err := Start(ctx, opts)
	cancel()
	if err != nil {
		*env = nil
		if inCI() {
			fmt.Fprintf(os.Stderr, "k8senv: cannot start the Kubernetes test environment (CI=true, failing):\n%v\n", err)
			os.Exit(1)
		}
		reason := fmt.Sprintf("k8senv: Kubernetes test environment did not start, skipping tests that need it: %v", err)
		setSkipReason(reason)
		bar := strings.Repeat("!", 78)
		banner := fmt.Sprintf("%s\n!!! k8senv: THE KUBERNETES TEST ENVIRONMENT DID NOT START.\n!!! TESTS THAT NEED IT WILL BE SKIPPED (they would FAIL under CI=true).\n%s\n%v\n%s\n", bar, bar, err, bar)
		fmt.Fprint(os.Stderr, banner)
		// "go test ./..." hides the output of passing packages, so also
		// tell the terminal directly when there is one.
		if tty, err := os.OpenFile("/dev/tty", os.O_WRONLY, 0); err == nil {
			fmt.Fprint(tty, banner)
			tty.Close()
		}
		os.Exit(m.Run())
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "k8senv: stop: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// Require skips t (or fails it, under CI=true) when env is nil, giving the
// reason Main recorded for not starting the environment.
func Require(t testing.TB, env *Env) {
	t.Helper()
	if env != nil {
		return
	}
	skipMu.Lock()
	reason := skipReason
	skipMu.Unlock()
	if reason == "" {
		reason = "k8senv: no Env (is k8senv.Main called from TestMain?)"
	}
	if inCI() {
		t.Fatal(reason)
	}
	t.Skip(reason)
}

// setSkipReason records why Main has no Env.
func setSkipReason(s string) {
	skipMu.Lock()
	skipReason = s
	skipMu.Unlock()
}
