package ctl_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
)

const goodPool = `apiVersion: tabby.dev/v1
kind: IPPool
metadata:
  name: good
  labels: {team: net}
spec:
  cidr: 10.1.0.0/16
`

func TestApplyBadPoolWritesNothing(t *testing.T) {
	for _, file := range []string{"bad-pool.yaml", "good-then-bad.yaml"} {
		t.Run(file, func(t *testing.T) {
			s := datastore.NewMemory()
			r := tabbyctl(t, s, "", "apply", "-f", testdata(file))
			expectCode(t, r, 1)
			expectContains(t, "stderr", r.stderr, "error: ", "spec.cidr", "10.0.0.1/24", "nothing was written")
			if r.stdout != "" {
				t.Errorf("stdout: %q", r.stdout)
			}
			if ps := pools(t, s); len(ps) != 0 {
				t.Errorf("written: %v", ps)
			}
		})
	}
}

func TestApplyReportsEveryError(t *testing.T) {
	s := datastore.NewMemory()
	in := `apiVersion: tabby.dev/v1
kind: IPPool
metadata: {name: one}
spec: {cidr: 10.0.0.1/24}
---
apiVersion: tabby.dev/v1
kind: IPPool
metadata: {name: two}
spec: {cidr: 10.9.0.0/16, blockSize: 8}
---
apiVersion: tabby.dev/v1
kind: BGPPeer
metadata: {name: ok}
spec: {peerIP: 192.0.2.1, asNumber: 65001}
`
	r := tabbyctl(t, s, in, "apply", "-f", "-")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `IPPool "one"`, "10.0.0.1/24", `IPPool "two"`, "spec.blockSize", "2 of 3 resources invalid")
	if objs, _ := s.List(context.Background(), datastore.KindBGPPeer, datastore.ListOptions{}); len(objs) != 0 {
		t.Errorf("peer written: %v", objs)
	}
}

func TestApplyTwiceIsIdempotent(t *testing.T) {
	s := datastore.NewMemory()
	f := writeFile(t, "good.yaml", goodPool)
	r := mustRun(t, s, "apply", "-f", f)
	if r.stdout != "ippool.tabby.dev/good created\n" {
		t.Errorf("first apply: %q", r.stdout)
	}
	first := pools(t, s)["good"]
	r = mustRun(t, s, "apply", "-f", f)
	if r.stdout != "ippool.tabby.dev/good configured\n" {
		t.Errorf("second apply: %q", r.stdout)
	}
	ps := pools(t, s)
	if len(ps) != 1 {
		t.Fatalf("pools: %v", ps)
	}
	second := ps["good"]
	if second.UID != first.UID || !second.CreationTimestamp.Equal(&first.CreationTimestamp) {
		t.Errorf("metadata not kept: %v then %v", first.ObjectMeta, second.ObjectMeta)
	}
	if second.ResourceVersion == first.ResourceVersion {
		t.Errorf("second apply did not update (resourceVersion %s)", second.ResourceVersion)
	}
	if second.Spec.CIDR != "10.1.0.0/16" || second.Labels["team"] != "net" || second.Spec.BlockSize != 26 {
		t.Errorf("got %+v", second)
	}
}

func TestApplyReplacesSpecAndLabels(t *testing.T) {
	s := datastore.NewMemory()
	mustRun(t, s, "apply", "-f", writeFile(t, "a.yaml", goodPool))
	changed := strings.NewReplacer("labels: {team: net}", "labels: {zone: a}", "10.1.0.0/16", "10.2.0.0/16").Replace(goodPool)
	r := tabbyctl(t, s, changed, "apply", "-f", "-")
	expectCode(t, r, 0)
	p := pools(t, s)["good"]
	if p.Spec.CIDR != "10.2.0.0/16" || p.Labels["zone"] != "a" || p.Labels["team"] != "" {
		t.Errorf("got %+v", p)
	}
}

func TestApplyOverlapWithStoredPool(t *testing.T) {
	s := datastore.NewMemory()
	mustRun(t, s, "apply", "-f", writeFile(t, "a.yaml", goodPool))
	in := `apiVersion: tabby.dev/v1
kind: IPPool
metadata: {name: inside}
spec: {cidr: 10.1.128.0/20}
`
	r := tabbyctl(t, s, in, "apply", "-f", "-")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `IPPool "inside"`, "10.1.128.0/20", `overlaps IPPool "good"`)
	if _, ok := pools(t, s)["inside"]; ok {
		t.Error("overlapping pool written")
	}
	// Moving the stored pool away in the same file makes room, whatever the order.
	moved := strings.ReplaceAll(goodPool, "10.1.0.0/16", "10.3.0.0/16")
	r = tabbyctl(t, s, in+"---\n"+moved, "apply", "-f", "-")
	expectCode(t, r, 0)
	if ps := pools(t, s); ps["inside"] == nil || ps["good"].Spec.CIDR != "10.3.0.0/16" {
		t.Errorf("pools %v", ps)
	}
}

func TestCreateExistingFails(t *testing.T) {
	s := datastore.NewMemory()
	mustRun(t, s, "create", "-f", writeFile(t, "a.yaml", goodPool))
	other := `apiVersion: tabby.dev/v1
kind: IPPool
metadata: {name: other}
spec: {cidr: 10.7.0.0/16}
---
` + goodPool
	r := tabbyctl(t, s, other, "create", "-f", "-")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `IPPool "good" already exists`, "nothing was written")
	if _, ok := pools(t, s)["other"]; ok {
		t.Error("create wrote the first object although the second exists")
	}
}

func TestReplace(t *testing.T) {
	s := datastore.NewMemory()
	f := writeFile(t, "a.yaml", goodPool)
	r := tabbyctl(t, s, "", "replace", "-f", f)
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `IPPool "good" not found`)
	mustRun(t, s, "create", "-f", f)
	r = mustRun(t, s, "replace", "-f", writeFile(t, "b.yaml", strings.ReplaceAll(goodPool, "10.1.0.0/16", "10.4.0.0/16")))
	if r.stdout != "ippool.tabby.dev/good replaced\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	if got := pools(t, s)["good"].Spec.CIDR; got != "10.4.0.0/16" {
		t.Errorf("cidr %s", got)
	}
}

func TestDecodeErrorWritesNothing(t *testing.T) {
	s := datastore.NewMemory()
	in := goodPool + "---\napiVersion: tabby.dev/v1\nkind: IPPool\nmetadata: {name: x}\nspec: {cidr: 10.5.0.0/16, colour: red}\n"
	r := tabbyctl(t, s, in, "apply", "-f", "-")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "<stdin>: document 2", "colour", "nothing was written")
	if len(pools(t, s)) != 0 {
		t.Error("written")
	}
}

func TestApplyDefaultNamespace(t *testing.T) {
	s := datastore.NewMemory()
	wep := `apiVersion: tabby.dev/v1
kind: WorkloadEndpoint
metadata: {name: w1}
spec: {orchestrator: pod, workload: w, node: n1, interfaceName: cali1}
`
	mustRun(t, s, "apply", "-f", writeFile(t, "w.yaml", wep), "-n", "team1")
	mustRun(t, s, "apply", "-f", writeFile(t, "w.yaml", wep))
	r := mustRun(t, s, "get", "weps", "-A")
	expectContains(t, "stdout", r.stdout, "default     w1", "team1       w1")
}

func TestNamespaceMismatch(t *testing.T) {
	s := datastore.NewMemory()
	r := tabbyctl(t, s, "", "apply", "-f", testdata("weps.yaml"), "-n", "prod")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `WorkloadEndpoint "dev/node2-k8s-db--0-eth0"`, `("dev") does not match --namespace "prod"`)
	objs, _ := s.List(context.Background(), datastore.KindWorkloadEndpoint, datastore.ListOptions{})
	if len(objs) != 0 {
		t.Errorf("written: %d", len(objs))
	}
}

func TestApplyFromDirectory(t *testing.T) {
	s := datastore.NewMemory()
	dir := t.TempDir()
	writeIn(t, dir, "1-pool.yaml", goodPool)
	writeIn(t, dir, "2-peer.yml", "apiVersion: tabby.dev/v1\nkind: BGPPeer\nmetadata: {name: rr}\nspec: {peerIP: 192.0.2.1, asNumber: 65001}\n")
	writeIn(t, dir, "README.md", "not a manifest")
	r := mustRun(t, s, "apply", "-f", dir)
	if r.stdout != "ippool.tabby.dev/good created\nbgppeer.tabby.dev/rr created\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	p, err := datastore.Get[*v1.BGPPeer](context.Background(), s, "", "rr")
	if err != nil || p.Spec.NextHopMode != v1.NextHopAuto {
		t.Errorf("peer %+v, %v", p, err)
	}
}

func TestEmptyInput(t *testing.T) {
	r := tabbyctl(t, datastore.NewMemory(), "# nothing\n", "apply", "-f", "-")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "no resources in the input")
	r = tabbyctl(t, datastore.NewMemory(), "", "apply", "-f", "/does/not/exist.yaml")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "/does/not/exist.yaml")
}

func writeIn(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
