package ctl_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/lab"
)

// TestLabUsage: bad lab invocations are usage errors (exit 2) that name the problem,
// and bad options fail before anything is made.
func TestLabUsage(t *testing.T) {
	s := datastore.NewMemory()
	dir := filepath.Join(t.TempDir(), "lab")
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"lab", "frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"lab", "--state-dir", dir, "exec"}, 2, "needs a TARGET"},
		{[]string{"lab", "--state-dir", dir, "status", "-o", "yaml"}, 2, `unknown output format "yaml"`},
		{[]string{"lab", "--state-dir", dir, "up", "-o", "wide"}, 2, `unknown output format "wide"`},
		{[]string{"lab", "--state-dir", dir, "up", "--nodes", "99"}, 1, "--nodes 99: want 1 to 16"},
		{[]string{"lab", "--state-dir", dir, "up", "--tor", "cisco"}, 1, `--tor "cisco"`},
		{[]string{"lab", "--state-dir", dir, "up", "--name", "Bad_Name"}, 1, `lab name "Bad_Name"`},
		{[]string{"lab", "--state-dir", "relative", "up"}, 1, "absolute"},
		{[]string{"lab", "--state-dir", dir, "up", "stray"}, 2, "takes no arguments"},
	} {
		r := tabbyctl(t, s, "", tc.args...)
		expectCode(t, r, tc.code)
		expectContains(t, "stderr", r.stderr, tc.want)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("a refused lab up made %s (%v)", dir, err)
	}
}

// TestLabNoLab: with no lab in the state directory, status and exec say so (exit 1)
// and down does nothing (exit 0), twice.
func TestLabNoLab(t *testing.T) {
	s := datastore.NewMemory()
	dir := filepath.Join(t.TempDir(), "lab")
	r := tabbyctl(t, s, "", "lab", "--state-dir", dir, "status")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "no lab in "+dir, "lab up makes one")
	r = tabbyctl(t, s, "", "lab", "--state-dir", dir, "exec", "pod-a1", "--", "true")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "no lab in "+dir)
	for range 2 {
		// A name no lab has: down sweeps namespaces by it when there is no state.
		r = tabbyctl(t, s, "", "lab", "--state-dir", dir, "down", "--name", "tctlnolab")
		expectCode(t, r, 0)
		expectContains(t, "stdout", r.stdout, "no lab in "+dir+", nothing to do")
	}
}

// TestLabStopped: a state directory whose supervisor is gone: status says so and
// names lab down; exec finds the target but not its namespace; down removes the
// directory.
func TestLabStopped(t *testing.T) {
	s := datastore.NewMemory()
	dir := filepath.Join(t.TempDir(), "lab")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	st := lab.State{Name: "tctlstopped", StateDir: dir, PID: 999999999, Phase: lab.PhaseFailed, Error: "it broke\nand more",
		Pods: []lab.PodState{{Namespace: "demo", Name: "pod-a1", Netns: "tctlstopped-a-pod-a1"}}}
	b, _ := json.Marshal(st)
	if err := os.WriteFile(filepath.Join(dir, "state.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	r := tabbyctl(t, s, "", "lab", "--state-dir", dir, "status")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `the lab "tctlstopped"`, "is not running", "last phase failed: it broke ...", "lab down --state-dir "+dir)
	r = tabbyctl(t, s, "", "lab", "--state-dir", dir, "exec", "pod-a1", "true")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "pod demo/pod-a1", "tctlstopped-a-pod-a1 is gone")
	r = tabbyctl(t, s, "", "lab", "--state-dir", dir, "down")
	expectCode(t, r, 0)
	expectContains(t, "stdout", r.stdout, "removed the state directory "+dir, "lab down: done")
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("lab down left %s (%v)", dir, err)
	}
}
