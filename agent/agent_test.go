package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"go.uber.org/zap/zaptest"
)

// fakeDataplane stands in for felix.
type fakeDataplane struct {
	ready     atomic.Bool
	mu        sync.Mutex
	status    FelixStatus
	routes    []RouteInfo
	routesErr error
	runErr    error // returned by Run at once when set
	stopped   atomic.Bool
}

func (f *fakeDataplane) Run(ctx context.Context) error {
	if f.runErr != nil {
		return f.runErr
	}
	<-ctx.Done()
	f.stopped.Store(true)
	return nil
}

func (f *fakeDataplane) Ready() bool { return f.ready.Load() }

func (f *fakeDataplane) Status() FelixStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.status
}

func (f *fakeDataplane) Routes() ([]RouteInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.routes, f.routesErr
}

// testAgent is an agent running in the background against a memory store.
type testAgent struct {
	a      *Agent
	dp     *fakeDataplane
	store  datastore.Store
	cfg    Config
	client *localapi.Client
	cancel context.CancelFunc
	done   chan error
}

func testConfig(t *testing.T) Config {
	dir := t.TempDir()
	return Config{NodeName: "node-1", LogLevel: "debug", LogFormat: "json", HealthAddr: "127.0.0.1:0",
		MetricsAddr: "127.0.0.1:0", Socket: filepath.Join(dir, "run", "tabby-node.sock"), IP: "10.0.0.2/24",
		IPAutodetect: "first-found", NodenameFile: filepath.Join(dir, "lib", "nodename"), ResyncInterval: time.Minute}
}

func startAgent(t *testing.T, cfg Config, dp *fakeDataplane, store datastore.Store) *testAgent {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a, err := New(Options{Config: cfg, Store: store, Dataplane: dp, Registry: reg, Logger: zaptest.NewLogger(t),
		Version: "v0.0.1-test", CheckInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testAgent{a: a, dp: dp, store: store, cfg: cfg, client: localapi.NewClient(cfg.Socket, 5*time.Second),
		cancel: cancel, done: make(chan error, 1)}
	go func() { ta.done <- a.Run(ctx) }()
	t.Cleanup(func() { ta.stop(t) })
	return ta
}

// stop cancels the agent and returns what Run returned.
func (ta *testAgent) stop(t *testing.T) error {
	ta.cancel()
	select {
	case err, ok := <-ta.done:
		if ok {
			close(ta.done)
		}
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not stop within 10s")
		return nil
	}
}

func waitUntil(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func httpGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (ta *testAgent) waitServing(t *testing.T) localapi.Status {
	t.Helper()
	var st *localapi.Status
	waitUntil(t, "local API", func() error {
		var err error
		st, err = ta.client.Status(context.Background())
		if err == nil && (st.HealthAddr == "" || !st.Registered) {
			err = errors.New("not registered yet")
		}
		return err
	})
	return *st
}

func TestAgentServes(t *testing.T) {
	dp := &fakeDataplane{}
	last := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	dp.status = FelixStatus{InSync: true, LastApply: last, Routes: RouteCounts{Local: 2, Blackhole: 1},
		Endpoints: []EndpointStatus{
			{Namespace: "ns1", Name: "node-1-k8s-a-eth0", Workload: "a", Interface: "cali1", IPs: []string{"10.65.0.1/32"}, Programmed: true},
			{Namespace: "ns1", Name: "node-1-k8s-b-eth0", Workload: "b", Interface: "cali2", Message: "interface cali2 not found"},
		}}
	dp.routes = []RouteInfo{{Dst: "10.65.0.1/32", Dev: "cali1", Protocol: "116", Kind: "local"},
		{Dst: "10.65.0.0/26", Protocol: "116", Kind: "blackhole"}}
	ta := startAgent(t, testConfig(t), dp, datastore.NewMemory())
	st := ta.waitServing(t)

	// Not ready until felix is.
	if st.Ready || len(st.NotReady) != 1 || st.NotReady[0] != "felix not ready" {
		t.Fatalf("ready %v, not ready %q", st.Ready, st.NotReady)
	}
	health := "http://" + st.HealthAddr
	if code, body, err := httpGet(health + "/readyz"); err != nil || code != 503 || !strings.Contains(body, "felix not ready") {
		t.Fatalf("/readyz before felix is ready: %d %q %v", code, body, err)
	}
	dp.ready.Store(true)
	if code, body, err := httpGet(health + "/readyz"); err != nil || code != 200 {
		t.Fatalf("/readyz: %d %q %v", code, body, err)
	}
	if code, _, err := httpGet(health + "/livez"); err != nil || code != 200 {
		t.Fatalf("/livez: %d %v", code, err)
	}

	stp, err := ta.client.Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	st = *stp
	if st.Node != "node-1" || st.Version != "v0.0.1-test" || !st.Ready || st.NodeIP != "10.0.0.2/24" || st.NodeIPSource != "--ip" ||
		!st.Datastore.Reachable || !st.Felix.InSync || st.Felix.LastApply == nil || !st.Felix.LastApply.Equal(last) ||
		st.Felix.Routes != (localapi.RouteCounts{Local: 2, Blackhole: 1}) || len(st.Felix.Endpoints) != 2 || st.Uptime == "" {
		t.Fatalf("status %+v", st)
	}
	eps, err := ta.client.Endpoints(context.Background())
	if err != nil || len(eps) != 2 || eps[1].Message != "interface cali2 not found" || eps[1].IPs == nil || !eps[0].Programmed {
		t.Fatalf("endpoints %+v %v", eps, err)
	}
	rs, err := ta.client.Routes(context.Background())
	if err != nil || len(rs) != 2 || rs[0].Dev != "cali1" || rs[0].Protocol != 116 || rs[1].Kind != "blackhole" {
		t.Fatalf("routes %+v %v", rs, err)
	}
	dp.mu.Lock()
	dp.routesErr = errors.New("netlink: dump interrupted")
	dp.mu.Unlock()
	if _, err := ta.client.Routes(context.Background()); err == nil || !strings.Contains(err.Error(), "500") ||
		!strings.Contains(err.Error(), "dump interrupted") {
		t.Fatalf("routes error: %v", err)
	}

	// Metrics: ours and the Go/process collectors of the injected registry.
	code, body, err := httpGet("http://" + st.MetricsAddr + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("/metrics: %d %v", code, err)
	}
	for _, m := range []string{`tabby_node_info{node="node-1",version="v0.0.1-test"} 1`, "tabby_node_ready 1",
		"tabby_node_datastore_reachable 1", "tabby_node_registered 1", "go_goroutines", "process_start_time_seconds"} {
		if !strings.Contains(body, m) {
			t.Errorf("/metrics lacks %q", m)
		}
	}

	// The socket: mode 0660, an unknown path is a JSON 404, POST is refused.
	fi, err := os.Stat(ta.cfg.Socket)
	if err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket %v %v", fi, err)
	}
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", ta.cfg.Socket)
	}}}
	resp, err := hc.Get("http://x/nope")
	if err != nil || resp.StatusCode != 404 {
		t.Fatalf("GET /nope: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = hc.Post("http://x/status", "application/json", nil)
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /status: %v %v", resp, err)
	}
	resp.Body.Close()

	// The node-name file for the CNI plugin, and the Node resource.
	if b, err := os.ReadFile(ta.cfg.NodenameFile); err != nil || string(b) != "node-1" {
		t.Fatalf("nodename file %q %v", b, err)
	}
	n, err := datastore.Get[*v1.Node](context.Background(), ta.store, "", "node-1")
	if err != nil || n.Spec.BGP.IPv4Address != "10.0.0.2/24" {
		t.Fatalf("node %+v %v", n, err)
	}

	// Stopping: Run returns nil, felix was stopped, the socket file is gone.
	if err := ta.stop(t); err != nil {
		t.Fatalf("Run returned %v", err)
	}
	if !dp.stopped.Load() {
		t.Error("felix's Run was not cancelled")
	}
	if _, err := os.Lstat(ta.cfg.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
	_, err = ta.client.Status(context.Background())
	if !errors.Is(err, localapi.ErrNotRunning) || !strings.Contains(err.Error(), "tabby-node is not running on this node: dial unix "+ta.cfg.Socket) {
		t.Fatalf("status of a stopped agent: %v", err)
	}
}

// TestAgentReregisters: a deleted Node resource comes back.
func TestAgentReregisters(t *testing.T) {
	ta := startAgent(t, testConfig(t), &fakeDataplane{}, datastore.NewMemory())
	ta.waitServing(t)
	if err := ta.store.Delete(context.Background(), datastore.KindNode, "", "node-1", datastore.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "node registered again", func() error {
		_, err := datastore.Get[*v1.Node](context.Background(), ta.store, "", "node-1")
		return err
	})
}

// downStore fails every call as an unreachable API server does.
type downStore struct{ datastore.Store }

func (downStore) Get(context.Context, datastore.Kind, string, string) (datastore.Object, error) {
	return nil, errors.New("dial tcp 127.0.0.1:6443: connect: connection refused: " + datastore.ErrUnavailable.Error())
}

func TestAgentDatastoreDown(t *testing.T) {
	dp := &fakeDataplane{}
	dp.ready.Store(true)
	ta := startAgent(t, testConfig(t), dp, downStore{datastore.NewMemory()})
	var st *localapi.Status
	waitUntil(t, "datastore checked", func() error {
		var err error
		st, err = ta.client.Status(context.Background())
		if err == nil && st.Datastore.LastCheck.IsZero() {
			err = errors.New("not checked yet")
		}
		return err
	})
	if st.Ready || st.Datastore.Reachable || st.Registered || !strings.Contains(st.Datastore.Error, "connection refused") {
		t.Fatalf("status with the datastore down: %+v", st)
	}
	code, body, err := httpGet("http://" + st.HealthAddr + "/readyz")
	if err != nil || code != 503 || !strings.Contains(body, "datastore unreachable") {
		t.Fatalf("/readyz: %d %q %v", code, body, err)
	}
}

func TestAgentFelixFails(t *testing.T) {
	dp := &fakeDataplane{runErr: errors.New("netlink: permission denied")}
	ta := startAgent(t, testConfig(t), dp, datastore.NewMemory())
	select {
	case err := <-ta.done:
		if err == nil || !strings.Contains(err.Error(), "felix: netlink: permission denied") {
			t.Fatalf("Run returned %v", err)
		}
		close(ta.done)
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after felix failed")
	}
	if _, err := os.Lstat(ta.cfg.Socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left behind: %v", err)
	}
}

// TestSocketStaleAndBusy: a dead agent's socket file is replaced; a live one's is not;
// neither is a file that is not a socket.
func TestSocketStaleAndBusy(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(filepath.Dir(cfg.Socket), 0o755); err != nil {
		t.Fatal(err)
	}
	stale, err := net.ListenUnix("unix", &net.UnixAddr{Name: cfg.Socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	stale.SetUnlinkOnClose(false)
	stale.Close() // the file stays, nobody answers: what a SIGKILLed agent leaves
	if _, err := os.Lstat(cfg.Socket); err != nil {
		t.Fatal(err)
	}
	ta := startAgent(t, cfg, &fakeDataplane{}, datastore.NewMemory())
	ta.waitServing(t)

	// A second agent on the same socket refuses to start and leaves the first alone.
	cfg2 := cfg
	cfg2.HealthAddr, cfg2.MetricsAddr = "", ""
	reg := prometheus.NewRegistry()
	a2, err := New(Options{Config: cfg2, Store: datastore.NewMemory(), Dataplane: &fakeDataplane{}, Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := a2.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second agent: %v", err)
	}
	if _, err := ta.client.Status(context.Background()); err != nil {
		t.Fatalf("first agent after the second failed: %v", err)
	}
	if err := ta.stop(t); err != nil {
		t.Fatal(err)
	}

	// A regular file where the socket goes is never removed.
	if err := os.WriteFile(cfg.Socket, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	a3, err := New(Options{Config: cfg2, Store: datastore.NewMemory(), Dataplane: &fakeDataplane{}, Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := a3.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("agent over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(cfg.Socket); string(b) != "precious" {
		t.Fatal("the regular file was replaced")
	}
}

// TestSocketKeepsNewerAgentsFile: an old agent exiting after a new one took over the
// path does not remove the new one's socket.
func TestSocketKeepsNewerAgentsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	log := zaptest.NewLogger(t)
	old, err := listenSocket(path, log)
	if err != nil {
		t.Fatal(err)
	}
	// The new agent cannot replace a live socket: simulate the takeover by hand.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	newer, err := listenSocket(path, log)
	if err != nil {
		t.Fatal(err)
	}
	defer newer.Close()
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the newer socket was removed: %v", err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial the newer socket: %v", err)
	}
	c.Close()
}
