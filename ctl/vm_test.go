package ctl_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/datastore"
)

// vmFixture is a memory store holding the pods and VMs of testdata/vm-weps.yaml.
func vmFixture(t *testing.T) datastore.Store {
	t.Helper()
	s := datastore.NewMemory()
	mustRun(t, s, "apply", "-f", testdata("vm-weps.yaml"))
	return s
}

// vmAgent is a fake tabby-node on node1 whose watcher knows db-vm (running, a
// problem in its metadata) and old-vm (shut off, no endpoint).
func vmAgent(t *testing.T) string {
	t.Helper()
	since := time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC)
	blackout := 412.0
	vms := &localapi.VMStatus{Enabled: true, URI: "qemu:///system", Connected: true, Since: &since, Domains: []localapi.VMDomain{
		{Name: "db-vm", UUID: "6f1c2a52-0d7e-4c59-9a55-1f0b8c3f2a01", State: localapi.VMStateRunning,
			Problems:  []string{"label tabby.dev/x: reserved key"},
			Migration: &localapi.VMMigration{From: "node2", Resumed: since.Add(time.Hour), BlackoutMillis: &blackout},
			Endpoints: []localapi.VMEndpoint{
				{Namespace: "prod", Name: "node1-libvirt-db--vm-vnet0", Tap: "vnet0", MAC: "52:54:00:12:34:56", IP: "10.244.1.20/32"},
				{Namespace: "prod", Name: "node1-libvirt-db--vm-vnet1", Tap: "vnet1", MAC: "52:54:00:12:34:57", IP: "10.244.1.21/32"},
			}},
		{Name: "old-vm", UUID: "9d0e1f2a-3b4c-4d5e-8f60-718293a4b5c6", State: localapi.VMStateShutOff, Endpoints: []localapi.VMEndpoint{}},
	}}
	st := sampleStatus()
	st.Node = "node1"
	st.VMs = vms
	mux := http.NewServeMux()
	for path, v := range map[string]any{localapi.PathStatus: st, localapi.PathVMs: vms} {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			if err := json.NewEncoder(w).Encode(v); err != nil {
				t.Error(err)
			}
		})
	}
	return fakeAgent(t, mux)
}

func TestVMListGolden(t *testing.T) {
	s := vmFixture(t)
	sock := vmAgent(t)
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"vm-list-all.golden", []string{"vm", "list", "-A"}},
		{"vm-list-prod-wide.golden", []string{"vm", "list", "-n", "prod", "-o", "wide"}},
		{"vm-list-json.golden", []string{"vm", "list", "-n", "ci", "-o", "json"}},
		{"vm-list-socket.golden", []string{"vm", "list", "-A", "--socket", sock}},
		{"vm-list-socket-yaml.golden", []string{"vm", "list", "-n", "prod", "--socket", sock, "-o", "yaml"}},
		// A guest migrated to node1 (blackout 412 ms), and node2's standby endpoint.
		{"vm-list-socket-wide.golden", []string{"vm", "list", "-n", "prod", "--socket", sock, "-o", "wide"}},
		// VMs beside pods in get workloadendpoints: WORKLOAD is the domain, INTERFACE
		// the tap; -o wide adds ORCHESTRATOR and MAC.
		{"get-weps-vms.golden", []string{"get", "weps", "-A"}},
		{"get-weps-vms-wide.golden", []string{"get", "weps", "-n", "prod", "-o", "wide"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			golden(t, tc.golden, mustRun(t, s, tc.args...).stdout)
		})
	}
}

func TestVMListEmptyAndErrors(t *testing.T) {
	s := vmFixture(t)
	r := mustRun(t, s, "vm", "list")
	if r.stdout != "" || r.stderr != "No VMs found in default namespace.\n" {
		t.Errorf("empty namespace: stdout %q stderr %q", r.stdout, r.stderr)
	}
	r = mustRun(t, s, "vm", "list", "-n", "default", "-o", "json")
	var doc map[string][]any
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || doc["items"] == nil || len(doc["items"]) != 0 {
		t.Errorf("empty json: %q (%v)", r.stdout, err)
	}
	expectCode(t, tabbyctl(t, s, "", "vm", "list", "-o", "xml"), 2)
	expectCode(t, tabbyctl(t, s, "", "vm", "list", "extra"), 2)
	r = tabbyctl(t, s, "", "vm", "list", "-A", "--socket", t.TempDir()+"/none.sock")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "tabby-node is not running on this node")
}

func TestNodeStatusVMLine(t *testing.T) {
	for _, tc := range []struct {
		name string
		vms  *localapi.VMStatus
		want string
	}{
		{"older agent", nil, "VMs:         unknown (the agent does not report VM endpoints)\n"},
		{"off", &localapi.VMStatus{}, "VMs:         off (--vm-endpoints=false)\n"},
		{"connected", &localapi.VMStatus{Enabled: true, URI: "qemu:///system", Connected: true, Domains: []localapi.VMDomain{
			{Name: "a", Endpoints: []localapi.VMEndpoint{{Tap: "vnet0"}, {Tap: "vnet1"}}}, {Name: "b"}}},
			"VMs:         libvirt qemu:///system connected, 2 domains, 2 endpoints\n"},
		{"down", &localapi.VMStatus{Enabled: true, URI: "qemu:///system", Error: "connect to qemu:///system: no libvirt.so.0"},
			"VMs:         libvirt qemu:///system not connected: connect to qemu:///system: no libvirt.so.0 (0 domains, 0 endpoints kept)\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := sampleStatus()
			st.VMs = tc.vms
			sock := fakeAgent(t, serveJSON(t, localapi.PathStatus, st))
			r := nodeCtl(t, "node", "status", "--socket", sock)
			expectCode(t, r, 0)
			expectContains(t, "status", r.stdout, tc.want)
		})
	}
}

// TestKubeVMList lists VMs beside a pod from the real kube-apiserver.
func TestKubeVMList(t *testing.T) {
	const ns = "tabby-vm-list"
	if _, stderr, err := kubectl(t, "create", "namespace", ns); err != nil {
		t.Fatalf("create namespace: %v\n%s", err, stderr)
	}
	t.Cleanup(func() { _, _, _ = kubectl(t, "delete", "namespace", ns, "--wait=false") })
	weps := `apiVersion: tabby.dev/v1
kind: List
items:
- apiVersion: tabby.dev/v1
  kind: WorkloadEndpoint
  metadata: {name: node1-k8s-web--0-eth0, namespace: ` + ns + `}
  spec: {orchestrator: pod, workload: web-0, node: node1, interfaceName: cali1a2b3c4d5e6, ipNetworks: [10.244.1.5/32]}
- apiVersion: tabby.dev/v1
  kind: WorkloadEndpoint
  metadata: {name: node1-libvirt-db--vm-vnet0, namespace: ` + ns + `, labels: {tabby.dev/orchestrator: libvirt}}
  spec: {orchestrator: libvirt, workload: db-vm, node: node1, containerID: 6f1c2a52-0d7e-4c59-9a55-1f0b8c3f2a01,
         interfaceName: vnet0, mac: "52:54:00:12:34:56", ipNetworks: [10.244.1.20/32]}
`
	expectCode(t, tabbyctlKube(t, weps, "apply", "-f", "-"), 0)
	r := tabbyctlKube(t, "", "vm", "list", "-n", ns, "-o", "wide")
	expectCode(t, r, 0)
	golden(t, "vm-list-kube.golden", r.stdout)
}
