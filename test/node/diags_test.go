package node_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/ebpf/ebpftest"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
)

// Address ranges only TestNodeDiags uses, inside its own namespaces.
var (
	dgPool    = "10.96.0.0/20"
	dgFabric  = netip.MustParsePrefix("10.96.254.0/24")
	dgUplinks = netip.MustParsePrefix("10.96.255.0/24")
)

// TestNodeDiags: `tabbyctl node diags`, run on a node with a real tabby-node and a pod,
// writes a bundle whose every part was collected: the agent's answers and recent log,
// the pod's kernel route (protocol 116) and interface, the pinned policy maps.
func TestNodeDiags(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: root, a kube-apiserver, cnitool, BPF and network namespaces")
	}
	k8senv.Require(t, env)
	netnode.RequireNetns(t, suite, "ip")
	ebpftest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fn := startFabricNode(ctx, t, fabricSetup{prefix: "tdg", pool: dgPool, subnet: dgFabric, uplinks: dgUplinks})
	pod, err := fn.node.AddPodSpec(ctx, fabric.PodSpec{Namespace: fn.ns, Name: "web", Labels: map[string]string{"app": "web"}})
	if err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(t.TempDir(), "diags.tar.gz")
	out, err := fn.node.Net.Exec(ctx, filepath.Join(fn.binDir, "tabbyctl"), "node", "diags", "--socket", fn.node.Socket,
		"--bpf-pin-dir", fn.node.PinDir, "-o", bundle)
	if err != nil {
		t.Fatalf("tabbyctl node diags: %v", err)
	}
	t.Logf("tabbyctl node diags:\n%s", out)
	files := netnode.ReadTarGz(t, bundle, "tabby-diags")
	var m struct {
		Failures int `json:"failures"`
		Files    []struct {
			Name, Error string
			OK          bool
		} `json:"files"`
	}
	if err := json.Unmarshal(files["manifest.json"], &m); err != nil {
		t.Fatalf("manifest.json: %v", err)
	}
	if m.Failures != 0 || len(m.Files)+1 != len(files) { // the manifest lists the others
		t.Errorf("manifest: %d failures, %d files listed; the bundle holds %d", m.Failures, len(m.Files), len(files))
	}
	for _, f := range m.Files {
		if !f.OK {
			t.Errorf("%s not collected: %s", f.Name, f.Error)
		}
	}
	for name, want := range map[string]string{
		"agent/status.json":      fn.node.Name,
		"agent/endpoints.json":   pod.Name,
		"agent/tabby-node.log":   "dataplane in sync with the datastore",
		"agent/metrics.txt":      "tabby_felix_endpoints 1",
		"kernel/routes.json":     pod.IP.String(),
		"kernel/interfaces.json": "cali",
		"bpf/maps.json":          "tabby_endpoints",
	} {
		if b, ok := files[name]; !ok || !strings.Contains(string(b), want) {
			t.Errorf("%s: %d bytes, want it to mention %q", name, len(b), want)
		}
	}
}
