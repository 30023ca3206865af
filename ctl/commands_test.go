package ctl_test

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/ctl"
	"github.com/tabbynet/tabby/datastore"
	"k8s.io/client-go/rest"
)

func TestLabel(t *testing.T) {
	s := fixture(t)
	labels := func() map[string]string { return pools(t, s)["pool-a"].Labels }

	r := mustRun(t, s, "label", "ippool", "pool-a", "zone=a", "rack=r1")
	if r.stdout != "ippool.tabby.dev/pool-a labeled\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if want := map[string]string{"zone": "a", "rack": "r1"}; !maps.Equal(labels(), want) {
		t.Errorf("labels %v, want %v", labels(), want)
	}

	r = tabbyctl(t, s, "", "label", "pools", "pool-a", "zone=b")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `label "zone" already has a value ("a")`, "--overwrite")
	if labels()["zone"] != "a" {
		t.Errorf("overwritten without --overwrite: %v", labels())
	}

	mustRun(t, s, "label", "pools", "pool-a", "zone=a") // same value: fine
	mustRun(t, s, "label", "pools", "pool-a", "zone=b", "--overwrite")
	if labels()["zone"] != "b" {
		t.Errorf("not overwritten: %v", labels())
	}

	r = mustRun(t, s, "label", "pool", "pool-a", "zone-")
	if r.stdout != "ippool.tabby.dev/pool-a unlabeled\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if want := map[string]string{"rack": "r1"}; !maps.Equal(labels(), want) {
		t.Errorf("labels %v, want %v", labels(), want)
	}

	r = mustRun(t, s, "label", "pool", "pool-a", "nothere-")
	expectContains(t, "output", r.stdout+r.stderr, "not labeled", `label "nothere" not found`)

	// Several names, one missing: the others are labeled, exit 1.
	r = tabbyctl(t, s, "", "label", "pool", "pool-b", "ghost", "pool-v6", "tier=x")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `IPPool "ghost" not found`)
	if pools(t, s)["pool-b"].Labels["tier"] != "x" || pools(t, s)["pool-v6"].Labels["tier"] != "x" {
		t.Error("existing objects not labeled")
	}

	// Namespaced kinds use -n.
	mustRun(t, s, "label", "wep", "-n", "dev", "node2-k8s-db--0-eth0", "app=db")
	w, err := datastore.Get[*v1.WorkloadEndpoint](context.Background(), s, "dev", "node2-k8s-db--0-eth0")
	if err != nil || w.Labels["app"] != "db" {
		t.Errorf("wep %v, %v", w, err)
	}

	r = tabbyctl(t, s, "", "label", "pool", "pool-a", "bad key=x")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `invalid label key "bad key"`)
}

func TestDelete(t *testing.T) {
	s := fixture(t)
	r := mustRun(t, s, "delete", "ippool", "pool-a", "pool-v6")
	if r.stdout != "ippool.tabby.dev/pool-a deleted\nippool.tabby.dev/pool-v6 deleted\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if ps := pools(t, s); len(ps) != 1 || ps["pool-b"] == nil {
		t.Errorf("pools %v", ps)
	}

	r = tabbyctl(t, s, "", "delete", "ippool", "pool-a")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `IPPool "pool-a" not found`)
	mustRun(t, s, "delete", "ippool", "pool-a", "--ignore-not-found")

	r = tabbyctl(t, s, "", "delete", "-f", testdata("pools.yaml"))
	expectCode(t, r, 1) // pool-a and pool-v6 are gone already
	if ps := pools(t, s); len(ps) != 0 {
		t.Errorf("pools %v", ps)
	}

	mustRun(t, s, "delete", "-f", testdata("weps.yaml"))
	weps, _ := s.List(context.Background(), datastore.KindWorkloadEndpoint, datastore.ListOptions{})
	if len(weps) != 0 {
		t.Errorf("weps left: %d", len(weps))
	}

	mustRun(t, s, "apply", "-f", testdata("weps.yaml"))
	mustRun(t, s, "delete", "wep", "-n", "dev", "node2-k8s-db--0-eth0")
	weps, _ = s.List(context.Background(), datastore.KindWorkloadEndpoint, datastore.ListOptions{})
	if len(weps) != 2 {
		t.Errorf("weps left: %d", len(weps))
	}
}

func TestValidate(t *testing.T) {
	// Offline: no store, and a store factory that must not be called.
	run := func(args ...string) result {
		var out, errb bytes.Buffer
		code := ctl.Run(args, ctl.Options{Stdout: &out, Stderr: &errb,
			NewStore: func(*rest.Config) (datastore.Store, error) {
				t.Error("validate built a store")
				return nil, errors.New("no")
			}})
		return result{code, out.String(), errb.String()}
	}
	r := run("validate", "-f", testdata("pools.yaml"), "-f", testdata("weps.yaml"))
	expectCode(t, r, 0)
	if r.stdout != "valid: 6 resources\n" {
		t.Errorf("stdout %q", r.stdout)
	}

	r = run("validate", "-f", testdata("overlap.yaml"))
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `IPPool "big"`, `overlaps IPPool "small"`, `IPPool "small"`, `overlaps IPPool "big"`,
		"10.0.0.0/8", "10.20.0.0/16", "2 of 2 resources invalid")

	r = run("validate", "-f", testdata("good-then-bad.yaml"))
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "spec.cidr", "10.0.0.1/24", "1 of 2 resources invalid")
	if r.stdout != "" {
		t.Errorf("stdout %q", r.stdout)
	}

	expectCode(t, run("validate"), 2)
}

func TestUsageErrors(t *testing.T) {
	s := fixture(t)
	for _, args := range [][]string{
		{"frobnicate"},
		{"get"},
		{"get", "widgets"},
		{"get", "ippools", "-o", "xml"},
		{"get", "ippools", "--bogus"},
		{"get", "weps", "-A", "somename"},
		{"delete"},
		{"delete", "widgets", "x"},
		{"delete", "ippool"},
		{"delete", "ippool", "x", "-f", testdata("pools.yaml")},
		{"label"},
		{"label", "widgets", "x", "a=b"},
		{"label", "ippool", "pool-a"},
		{"label", "ippool", "a=b"},
		{"create"},
		{"apply"},
		{"replace"},
		{"apply", "extra", "-f", testdata("pools.yaml")},
		{"version", "extra"},
	} {
		r := tabbyctl(t, s, "", args...)
		if r.code != 2 {
			t.Errorf("tabbyctl %s: exit %d, want 2; stderr %q", strings.Join(args, " "), r.code, r.stderr)
		}
		if !strings.HasPrefix(r.stderr, "error: ") || !strings.Contains(r.stderr, "--help' for usage") {
			t.Errorf("tabbyctl %s: stderr %q", strings.Join(args, " "), r.stderr)
		}
	}
	r := tabbyctl(t, s, "", "get", "widgets")
	expectContains(t, "stderr", r.stderr, `unknown resource type "widgets"`, "ippools")
}

func TestHelpExitsZero(t *testing.T) {
	for _, args := range [][]string{{}, {"--help"}, {"get", "--help"}, {"help", "apply"}} {
		r := tabbyctl(t, nil, "", args...)
		expectCode(t, r, 0)
		expectContains(t, "stdout", r.stdout, "Usage:")
	}
}

func TestVersion(t *testing.T) {
	old := ctl.Version
	ctl.Version = "v1.2.3"
	defer func() { ctl.Version = old }()
	r := mustRun(t, datastore.NewMemory(), "version", "--client")
	if r.stdout != "Client Version: v1.2.3\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	r = mustRun(t, datastore.NewMemory(), "version")
	if r.stdout != "Client Version: v1.2.3\nServer Version: v9.9.9-test\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	// An unreachable server: exit 1 after the client version.
	var out, errb bytes.Buffer
	code := ctl.Run([]string{"version", "--kubeconfig", writeKubeconfig(t)}, ctl.Options{Stdout: &out, Stderr: &errb})
	if code != 1 || out.String() != "Client Version: v1.2.3\n" || !strings.HasPrefix(errb.String(), "error: server version: ") {
		t.Errorf("exit %d stdout %q stderr %q", code, out.String(), errb.String())
	}
}

// writeKubeconfig writes a kubeconfig with two contexts on closed ports, "one" current
// (namespace team1) and "two" (no namespace).
func writeKubeconfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := `apiVersion: v1
kind: Config
clusters:
- name: c1
  cluster: {server: "http://127.0.0.1:1"}
- name: c2
  cluster: {server: "http://127.0.0.1:2"}
users:
- name: u
  user: {token: t}
contexts:
- name: one
  context: {cluster: c1, user: u, namespace: team1}
- name: two
  context: {cluster: c2, user: u}
current-context: one
`
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The kubeconfig is loaded like kubectl's: --kubeconfig, else $KUBECONFIG; --context
// picks the cluster; the context's namespace is the default namespace.
func TestKubeconfigLoading(t *testing.T) {
	kc := writeKubeconfig(t)
	wep := "apiVersion: tabby.dev/v1\nkind: WorkloadEndpoint\nmetadata: {name: w1}\nspec: {orchestrator: pod, workload: w, node: n1, interfaceName: cali1}\n"
	run := func(env string, args ...string) (host string, s datastore.Store, r result) {
		t.Setenv("KUBECONFIG", env)
		s = datastore.NewMemory()
		var out, errb bytes.Buffer
		code := ctl.Run(args, ctl.Options{Stdin: strings.NewReader(wep), Stdout: &out, Stderr: &errb,
			NewStore: func(cfg *rest.Config) (datastore.Store, error) { host = cfg.Host; return s, nil }})
		return host, s, result{code, out.String(), errb.String()}
	}
	nsOf := func(s datastore.Store) string {
		objs, _ := s.List(context.Background(), datastore.KindWorkloadEndpoint, datastore.ListOptions{})
		if len(objs) != 1 {
			return "?"
		}
		return objs[0].GetNamespace()
	}
	for _, tc := range []struct {
		env        string
		args       []string
		host, ns   string
		wantFailed bool
	}{
		{env: kc, args: nil, host: "http://127.0.0.1:1", ns: "team1"},
		{env: "", args: []string{"--kubeconfig", kc}, host: "http://127.0.0.1:1", ns: "team1"},
		{env: kc, args: []string{"--context", "two"}, host: "http://127.0.0.1:2", ns: "default"},
		{env: kc, args: []string{"--context", "two", "-n", "x"}, host: "http://127.0.0.1:2", ns: "x"},
		{env: kc, args: []string{"--context", "nope"}, wantFailed: true},
		{env: filepath.Join(t.TempDir(), "missing"), args: []string{"--kubeconfig", filepath.Join(t.TempDir(), "missing")}, wantFailed: true},
	} {
		host, s, r := run(tc.env, append([]string{"apply", "-f", "-"}, tc.args...)...)
		if tc.wantFailed {
			if r.code != 1 || !strings.Contains(r.stderr, "kubeconfig") {
				t.Errorf("%v: exit %d, stderr %q", tc.args, r.code, r.stderr)
			}
			continue
		}
		if r.code != 0 || host != tc.host || nsOf(s) != tc.ns {
			t.Errorf("%v: exit %d host %q ns %q, want %q %q; stderr %q", tc.args, r.code, host, nsOf(s), tc.host, tc.ns, r.stderr)
		}
	}
}

func TestUnreachableServer(t *testing.T) {
	var out, errb bytes.Buffer
	code := ctl.Run([]string{"get", "ippools", "--kubeconfig", writeKubeconfig(t)}, ctl.Options{Stdout: &out, Stderr: &errb})
	if code != 1 || !strings.HasPrefix(errb.String(), "error: ") {
		t.Errorf("exit %d stderr %q", code, errb.String())
	}
}

func TestExecute(t *testing.T) {
	var out, errb bytes.Buffer
	if code := ctl.Execute([]string{"version", "--client"}, strings.NewReader(""), &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if out.String() != "Client Version: "+ctl.Version+"\n" {
		t.Errorf("stdout %q", out.String())
	}
	if code := ctl.Execute([]string{"get"}, strings.NewReader(""), &out, &errb); code != 2 {
		t.Errorf("get: exit %d", code)
	}
}
