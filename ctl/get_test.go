package ctl_test

import (
	"encoding/json"
	"strings"
	"testing"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"sigs.k8s.io/yaml"
)

// fixture is a memory store holding testdata/pools.yaml and testdata/weps.yaml.
func fixture(t *testing.T) datastore.Store {
	t.Helper()
	s := datastore.NewMemory()
	mustRun(t, s, "apply", "-f", testdata("pools.yaml"), "-f", testdata("weps.yaml"))
	return s
}

func TestGetGolden(t *testing.T) {
	s := fixture(t)
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"get-ippools.golden", []string{"get", "ippools"}},
		{"get-ippools-wide.golden", []string{"get", "ippools", "-o", "wide"}},
		{"get-ippools-yaml.golden", []string{"get", "ippools", "-o", "yaml"}},
		{"get-ippool-json.golden", []string{"get", "IPPool", "pool-b", "-o", "json"}},
		{"get-weps-all-namespaces.golden", []string{"get", "weps", "-A"}},
		{"get-weps-prod-wide.golden", []string{"get", "workloadendpoint", "-n", "prod", "-o", "wide"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			r := mustRun(t, s, tc.args...)
			if r.stderr != "" {
				t.Errorf("stderr: %s", r.stderr)
			}
			golden(t, tc.golden, normalize(r.stdout))
		})
	}
}

func TestGetKindNames(t *testing.T) {
	s := fixture(t)
	want := mustRun(t, s, "get", "ippools").stdout
	for _, kind := range []string{"ippool", "IPPool", "ipPools", "pool", "pools"} {
		if got := mustRun(t, s, "get", kind).stdout; got != want {
			t.Errorf("get %s:\n%s\nwant:\n%s", kind, got, want)
		}
	}
}

func TestGetOneYAMLIsTheObject(t *testing.T) {
	s := fixture(t)
	r := mustRun(t, s, "get", "pool", "pool-a", "-o", "yaml")
	var p v1.IPPool
	if err := yaml.UnmarshalStrict([]byte(r.stdout), &p); err != nil {
		t.Fatalf("not one IPPool: %v", err)
	}
	if p.APIVersion != "tabby.dev/v1" || p.Kind != "IPPool" || p.Spec.CIDR != "10.244.0.0/16" || p.Spec.BlockSize != 26 {
		t.Errorf("got %+v", p)
	}
	// Its output is valid input.
	s2 := datastore.NewMemory()
	mustRun(t, s2, "create", "-f", writeFile(t, "p.yaml", r.stdout))
}

func TestGetSeveralNamesIsAList(t *testing.T) {
	s := fixture(t)
	r := mustRun(t, s, "get", "pools", "pool-v6", "pool-a", "-o", "json")
	var l struct {
		Kind  string
		Items []v1.IPPool
	}
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
		t.Fatal(err)
	}
	if l.Kind != "List" || len(l.Items) != 2 || l.Items[0].Name != "pool-a" || l.Items[1].Name != "pool-v6" {
		t.Errorf("got %+v", l)
	}
}

func TestGetNotFound(t *testing.T) {
	s := fixture(t)
	r := tabbyctl(t, s, "", "get", "ippool", "pool-a", "nope")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `error: IPPool "nope" not found`)
	expectContains(t, "stdout", r.stdout, "pool-a")
}

func TestGetEmpty(t *testing.T) {
	s := datastore.NewMemory()
	r := mustRun(t, s, "get", "bgppeers")
	if r.stdout != "" || r.stderr != "No resources found.\n" {
		t.Errorf("stdout %q stderr %q", r.stdout, r.stderr)
	}
	r = mustRun(t, s, "get", "networkpolicies", "-n", "prod")
	if r.stderr != "No resources found in prod namespace.\n" {
		t.Errorf("stderr %q", r.stderr)
	}
	r = mustRun(t, s, "get", "bgppeers", "-o", "yaml")
	expectContains(t, "stdout", r.stdout, "items: []", "kind: List")
}

func TestGetNamespaces(t *testing.T) {
	s := fixture(t)
	r := mustRun(t, s, "get", "weps")
	if !strings.Contains(r.stderr, "No resources found in default namespace.") {
		t.Errorf("default namespace is not empty: %q", r.stdout)
	}
	r = mustRun(t, s, "get", "weps", "-n", "dev")
	expectContains(t, "stdout", r.stdout, "node2-k8s-db--0-eth0")
	if strings.Contains(r.stdout, "NAMESPACE") || strings.Contains(r.stdout, "web-0") {
		t.Errorf("get -n dev:\n%s", r.stdout)
	}
	r = mustRun(t, s, "get", "wep", "node2-k8s-db--0-eth0", "-n", "dev", "-o", "yaml")
	expectContains(t, "stdout", r.stdout, "namespace: dev", "kind: WorkloadEndpoint")
}

func TestGetSelector(t *testing.T) {
	s := fixture(t)
	r := mustRun(t, s, "get", "weps", "-A", "-l", "app=web")
	expectContains(t, "stdout", r.stdout, "web-0")
	if strings.Contains(r.stdout, "api-0") || strings.Contains(r.stdout, "db-0") {
		t.Errorf("selector ignored:\n%s", r.stdout)
	}
}
