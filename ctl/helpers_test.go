package ctl_test

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/ctl"
	"github.com/tabbynet/tabby/datastore"
	"k8s.io/client-go/rest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// result is what one in-process run of tabbyctl gave.
type result struct {
	code           int
	stdout, stderr string
}

// tabbyctl runs tabbyctl in-process against store, with stdin.
func tabbyctl(t *testing.T, store datastore.Store, stdin string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := ctl.Run(args, ctl.Options{
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Store: store,
		ServerVersion: func(*rest.Config) (string, error) { return "v9.9.9-test", nil },
	})
	r := result{code: code, stdout: out.String(), stderr: errb.String()}
	t.Logf("tabbyctl %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

// mustRun runs tabbyctl and fails the test unless it exits 0.
func mustRun(t *testing.T, store datastore.Store, args ...string) result {
	t.Helper()
	r := tabbyctl(t, store, "", args...)
	if r.code != 0 {
		t.Fatalf("tabbyctl %s: exit %d, stderr:\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r
}

// expectCode fails the test unless r exited with want.
func expectCode(t *testing.T, r result, want int) {
	t.Helper()
	if r.code != want {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, want, r.stdout, r.stderr)
	}
}

// expectContains fails unless s contains every one of subs.
func expectContains(t *testing.T, what, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%s does not contain %q:\n%s", what, sub, s)
		}
	}
}

// testdata is the path of a file under testdata/.
func testdata(name string) string { return filepath.Join("testdata", name) }

// writeFile writes content to a new file in a temporary directory and returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// pools lists the IPPools of the store by name.
func pools(t *testing.T, s datastore.Store) map[string]*v1.IPPool {
	t.Helper()
	ps, err := datastore.List[*v1.IPPool](context.Background(), s, datastore.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*v1.IPPool{}
	for _, p := range ps {
		out[p.Name] = p
	}
	return out
}

var (
	timeRE = regexp.MustCompile(`("?creationTimestamp"?: )"?[0-9TZ:-]+"?`)
	uidRE  = regexp.MustCompile(`("?uid"?: )"?[0-9a-f-]{36}"?`)
	rvRE   = regexp.MustCompile(`("?resourceVersion"?: )"[0-9]+"`)
)

// normalize replaces what the store makes up (creation time, uid, resourceVersion)
// with placeholders, so that golden files are stable.
func normalize(s string) string {
	s = timeRE.ReplaceAllString(s, `${1}"<creationTimestamp>"`)
	s = uidRE.ReplaceAllString(s, `${1}"<uid>"`)
	return rvRE.ReplaceAllString(s, `${1}"<resourceVersion>"`)
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	p := testdata(name)
	if *update {
		if err := os.WriteFile(p, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%v (run go test ./ctl -run %s -update to create it)", err, t.Name())
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test ./ctl -run %s -update rewrites it)\n--- got:\n%s\n--- want:\n%s", p, t.Name(), got, want)
	}
}
