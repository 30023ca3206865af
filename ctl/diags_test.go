package ctl_test

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/test/netnode"
	"golang.org/x/sys/unix"
)

type manifestEntry struct {
	Name  string `json:"name"`
	OK    bool   `json:"ok"`
	Error string `json:"error"`
	Bytes int    `json:"bytes"`
}

func readManifest(t *testing.T, files map[string][]byte) map[string]manifestEntry {
	t.Helper()
	var m struct {
		Tool     string          `json:"tool"`
		Version  string          `json:"version"`
		Files    []manifestEntry `json:"files"`
		Failures int             `json:"failures"`
	}
	if err := json.Unmarshal(files["manifest.json"], &m); err != nil {
		t.Fatalf("manifest.json: %v\n%s", err, files["manifest.json"])
	}
	out := map[string]manifestEntry{}
	failures := 0
	for _, f := range m.Files {
		out[f.Name] = f
		if !f.OK {
			failures++
		}
		if _, in := files[f.Name]; in != f.OK {
			t.Errorf("%s: ok=%v in the manifest, in the bundle=%v", f.Name, f.OK, in)
		}
	}
	if failures != m.Failures || m.Tool != "tabbyctl node diags" {
		t.Errorf("manifest: %+v", m)
	}
	return out
}

// TestNodeDiags: the bundle holds every answer of the agent, its log lines and
// metrics, the kernel parts and the versions; a path the agent fails on and a missing
// BPF pin directory are listed as failures in the manifest and the rest is collected.
func TestNodeDiags(t *testing.T) {
	metrics := newTCPServer(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "tabby_node_ready 1\n")
	}))
	st := sampleStatus()
	st.MetricsAddr = metrics
	mux := http.NewServeMux()
	serve := func(path string, code int, v any) {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			if err := json.NewEncoder(w).Encode(v); err != nil {
				t.Error(err)
			}
		})
	}
	serve(localapi.PathStatus, http.StatusOK, st)
	serve(localapi.PathEndpoints, http.StatusOK, localapi.EndpointList{Endpoints: st.Felix.Endpoints})
	serve(localapi.PathRoutes, http.StatusOK, localapi.RouteList{Routes: []localapi.Route{{Dst: "10.65.0.1/32", Dev: "cali0d7763386da", Protocol: 116, Kind: "local"}}})
	serve(localapi.PathBGPPeers, http.StatusOK, localapi.BGPStatus{Enabled: true, Peers: []localapi.BGPPeer{}})
	serve(localapi.PathPolicy, http.StatusOK, localapi.PolicyStatus{Enabled: true, Sources: []localapi.PolicySource{}})
	serve(localapi.PathVMs, http.StatusInternalServerError, localapi.Error{Error: "libvirt exploded"})
	serve("/logs", http.StatusOK, map[string]any{"capacity": 2000, "dropped": 0,
		"lines": []string{`{"level":"info","msg":"tabby-node started"}`, `{"level":"warn","msg":"route gone"}`}})
	sock := fakeAgent(t, mux)

	dir := t.TempDir()
	out := filepath.Join(dir, "bundle.tar.gz")
	r := nodeCtl(t, "node", "diags", "--socket", sock, "-o", out, "--bpf-pin-dir", filepath.Join(dir, "no-pins"))
	expectCode(t, r, 0)
	expectContains(t, "summary", r.stdout, "Wrote "+out+": ", "2 parts could not be collected",
		"agent/status.json", "agent/vms.json", "FAILED: tabby-node on "+sock+": GET /vms: 500 Internal Server Error: libvirt exploded",
		"bpf/maps.json", "FAILED: no pin directory")

	files := netnode.ReadTarGz(t, out, "tabby-diags")
	man := readManifest(t, files)
	for _, name := range []string{"agent/status.json", "agent/endpoints.json", "agent/routes.json", "agent/bgp-peers.json",
		"agent/policy.json", "agent/logs.json", "agent/tabby-node.log", "agent/metrics.txt", "versions.json"} {
		if !man[name].OK {
			t.Errorf("%s not collected: %+v", name, man[name])
		}
	}
	for _, name := range []string{"agent/vms.json", "bpf/maps.json"} {
		if e, ok := man[name]; !ok || e.OK || e.Error == "" {
			t.Errorf("%s: want a failure in the manifest, got %+v", name, e)
		}
	}
	// The kernel parts are read from this machine: listed, whatever they found.
	for _, name := range []string{"kernel/routes.json", "kernel/interfaces.json"} {
		if _, ok := man[name]; !ok {
			t.Errorf("%s missing from the manifest", name)
		}
	}
	var got localapi.Status
	if err := json.Unmarshal(files["agent/status.json"], &got); err != nil || got.Node != "node-1" {
		t.Errorf("agent/status.json: %v %+v", err, got)
	}
	if string(files["agent/tabby-node.log"]) != "{\"level\":\"info\",\"msg\":\"tabby-node started\"}\n{\"level\":\"warn\",\"msg\":\"route gone\"}\n" {
		t.Errorf("agent/tabby-node.log: %q", files["agent/tabby-node.log"])
	}
	if string(files["agent/metrics.txt"]) != "tabby_node_ready 1\n" {
		t.Errorf("agent/metrics.txt: %q", files["agent/metrics.txt"])
	}
	var v map[string]string
	if err := json.Unmarshal(files["versions.json"], &v); err != nil || v["tabby-node"] != "v1.2.3" || v["tabbyctl"] == "" {
		t.Errorf("versions.json: %v %v", err, v)
	}
}

// TestNodeDiagsAgentDown: with no agent the bundle is still written, with the kernel
// parts, and the manifest says the agent is not running.
func TestNodeDiagsAgentDown(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "b.tar.gz")
	r := nodeCtl(t, "node", "diags", "--socket", filepath.Join(dir, "none.sock"), "-o", out,
		"--bpf-pin-dir", filepath.Join(dir, "no-pins"))
	expectCode(t, r, 0)
	files := netnode.ReadTarGz(t, out, "tabby-diags")
	man := readManifest(t, files)
	if e := man["agent/status.json"]; e.OK || !strings.Contains(e.Error, localapi.ErrNotRunning.Error()) {
		t.Errorf("agent/status.json: %+v", e)
	}
	if _, ok := files["versions.json"]; !ok {
		t.Error("versions.json missing")
	}
	if r := nodeCtl(t, "node", "diags", "--log-lines", "-1"); r.code != 2 {
		t.Errorf("--log-lines -1: exit %d", r.code)
	}
}

// TestNodeDiagsBPF: a map pinned in the pin directory is described with its entries
// (root only: it mounts a bpffs in a temporary directory).
func TestNodeDiagsBPF(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: needs root to mount a bpffs and create a BPF map")
	}
	pins := t.TempDir()
	if err := unix.Mount("bpffs", pins, "bpf", 0, ""); err != nil {
		t.Skipf("SKIP: cannot mount a bpffs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(pins, unix.MNT_DETACH) })
	m, err := ebpf.NewMap(&ebpf.MapSpec{Name: "diags_test", Type: ebpf.Hash, KeySize: 4, ValueSize: 8, MaxEntries: 16})
	if err != nil {
		t.Skipf("SKIP: cannot create a BPF map: %v", err)
	}
	defer m.Close()
	for i := range uint32(3) {
		if err := m.Put(i, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Pin(filepath.Join(pins, "tabby_test_map")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(pins, "progs"), 0o700); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "b.tar.gz")
	r := nodeCtl(t, "node", "diags", "--socket", filepath.Join(pins, "none.sock"), "-o", out, "--bpf-pin-dir", pins)
	expectCode(t, r, 0)
	files := netnode.ReadTarGz(t, out, "tabby-diags")
	var sum struct {
		Maps []struct {
			Pin        string `json:"pin"`
			Name       string `json:"name"`
			Type       string `json:"type"`
			KeySize    uint32 `json:"keySize"`
			MaxEntries uint32 `json:"maxEntries"`
			Entries    int    `json:"entries"`
		} `json:"maps"`
	}
	if err := json.Unmarshal(files["bpf/maps.json"], &sum); err != nil {
		t.Fatalf("bpf/maps.json: %v\n%s", err, files["bpf/maps.json"])
	}
	if len(sum.Maps) != 1 || sum.Maps[0].Pin != "tabby_test_map" || sum.Maps[0].Name != "diags_test" ||
		sum.Maps[0].Type != ebpf.Hash.String() || sum.Maps[0].KeySize != 4 || sum.Maps[0].MaxEntries != 16 ||
		sum.Maps[0].Entries != 3 {
		t.Fatalf("bpf/maps.json: %s", files["bpf/maps.json"])
	}
}

// newTCPServer serves h on a loopback port and returns its address.
func newTCPServer(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String()
}
