package ctl_test

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/ctl"
)

// fakeAgent serves the local API on a unix socket in a temporary directory.
func fakeAgent(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "tabby-node.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return sock
}

func serveJSON(t *testing.T, path string, v any) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+path, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(v); err != nil {
			t.Error(err)
		}
	})
	return mux
}

// nodeCtl runs tabbyctl with a fixed clock; node commands need no Store.
func nodeCtl(t *testing.T, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	code := ctl.Run(args, ctl.Options{Stdout: &out, Stderr: &errb, Now: func() time.Time { return now }})
	r := result{code: code, stdout: out.String(), stderr: errb.String()}
	t.Logf("tabbyctl %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

func sampleStatus() localapi.Status {
	last := time.Date(2026, 3, 1, 11, 59, 57, 0, time.UTC)
	return localapi.Status{
		Node: "node-1", Version: "v1.2.3", StartTime: time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC), Uptime: "2h0m0s",
		UptimeSeconds: 7200, Ready: true, NodeIP: "10.0.0.2/24", NodeIPSource: "first-found on eth0", Registered: true,
		Datastore: localapi.DatastoreStatus{Reachable: true},
		Felix: localapi.FelixStatus{InSync: true, LastApply: &last, Routes: localapi.RouteCounts{Local: 2, Blackhole: 1},
			Endpoints: []localapi.Endpoint{
				{Namespace: "prod", Name: "node-1-k8s-web-0-eth0", Workload: "web-0", Interface: "cali0d7763386da",
					IPs: []string{"10.65.0.1/32"}, Programmed: true},
				{Namespace: "prod", Name: "node-1-k8s-web-1-eth0", Workload: "web-1", Interface: "cali1111111111a",
					IPs: []string{"10.65.0.2/32"}, Message: "interface not found"},
			}},
	}
}

func TestNodeStatus(t *testing.T) {
	sock := fakeAgent(t, serveJSON(t, localapi.PathStatus, sampleStatus()))
	r := nodeCtl(t, "node", "status", "--socket", sock)
	expectCode(t, r, 0)
	expectContains(t, "status", r.stdout,
		"Node:        node-1\n", "Version:     v1.2.3\n", "Uptime:      2h0m0s\n", "Ready:       yes\n",
		"Node IP:     10.0.0.2/24 (first-found on eth0)\n", "Datastore:   reachable\n",
		"Dataplane:   in sync, last apply 3s ago\n", "Routes:      2 local, 1 blackhole, 0 learned\n",
		"Endpoints:   2 (1 programmed)\n",
		"NAMESPACE   NAME                    WORKLOAD   INTERFACE         IPS            PROGRAMMED   MESSAGE\n",
		"prod        node-1-k8s-web-0-eth0   web-0      cali0d7763386da   10.65.0.1/32   yes          -\n",
		"prod        node-1-k8s-web-1-eth0   web-1      cali1111111111a   10.65.0.2/32   no           interface not found\n")

	r = nodeCtl(t, "node", "status", "--socket", sock, "-o", "json")
	expectCode(t, r, 0)
	var got localapi.Status
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("-o json: %v\n%s", err, r.stdout)
	}
	if got.Node != "node-1" || len(got.Felix.Endpoints) != 2 || got.Felix.Routes.Local != 2 || !got.Ready {
		t.Fatalf("-o json decoded %+v", got)
	}
	expectCode(t, nodeCtl(t, "node", "status", "--socket", sock, "-o", "yaml"), 0)
	expectCode(t, nodeCtl(t, "node", "status", "--socket", sock, "-o", "wide"), 2)
}

func TestNodeStatusNotReady(t *testing.T) {
	st := sampleStatus()
	st.Ready, st.NotReady = false, []string{"datastore unreachable: connection refused", "felix not ready"}
	st.Datastore = localapi.DatastoreStatus{Error: "connection refused"}
	st.Felix = localapi.FelixStatus{LastError: "route 10.65.0.1/32: no such device"}
	r := nodeCtl(t, "node", "status", "--socket", fakeAgent(t, serveJSON(t, localapi.PathStatus, st)))
	expectCode(t, r, 0)
	expectContains(t, "status", r.stdout, "Ready:       no (datastore unreachable: connection refused; felix not ready)\n",
		"Datastore:   unreachable: connection refused\n", "Dataplane:   not in sync\n",
		"Last error:  route 10.65.0.1/32: no such device\n", "Endpoints:   0 (0 programmed)\n")
	if strings.Contains(r.stdout, "NAMESPACE") {
		t.Error("an endpoints table without endpoints")
	}
}

func TestNodeRoutes(t *testing.T) {
	routes := localapi.RouteList{Routes: []localapi.Route{
		{Dst: "10.65.0.1/32", Dev: "cali0d7763386da", Protocol: 116, Kind: "local"},
		{Dst: "10.65.0.0/26", Protocol: 116, Kind: "blackhole"},
		{Dst: "10.65.1.0/26", Via: []string{"10.0.0.3", "10.0.0.4"}, Protocol: 117, Kind: "learned"},
	}}
	sock := fakeAgent(t, serveJSON(t, localapi.PathRoutes, routes))
	r := nodeCtl(t, "node", "routes", "--socket", sock)
	expectCode(t, r, 0)
	want := "DESTINATION    KIND        DEVICE            VIA                 PROTOCOL\n" +
		"10.65.0.1/32   local       cali0d7763386da   -                   116\n" +
		"10.65.0.0/26   blackhole   -                 -                   116\n" +
		"10.65.1.0/26   learned     -                 10.0.0.3,10.0.0.4   117\n"
	if r.stdout != want {
		t.Fatalf("routes table\n got:\n%s\nwant:\n%s", r.stdout, want)
	}
	r = nodeCtl(t, "node", "routes", "--socket", sock, "-o", "json")
	expectCode(t, r, 0)
	var got localapi.RouteList
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got.Routes) != 3 || got.Routes[2].Via[1] != "10.0.0.4" {
		t.Fatalf("-o json: %+v %v", got, err)
	}
}

func TestNodeAgentNotRunning(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "absent.sock")
	for _, cmd := range []string{"status", "routes"} {
		r := nodeCtl(t, "node", cmd, "--socket", sock)
		expectCode(t, r, 1)
		expectContains(t, "stderr", r.stderr, "error: tabby-node is not running on this node: dial unix "+sock+": connect: no such file or directory")
	}
	// A stale socket file nobody listens on.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	r := nodeCtl(t, "node", "status", "--socket", stale)
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "error: tabby-node is not running on this node: dial unix "+stale+": connect: connection refused")
}

func TestNodeAgentErrors(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /routes", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_ = json.NewEncoder(w).Encode(localapi.Error{Error: "list routes: netlink: dump interrupted"})
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("not json")) })
	sock := fakeAgent(t, mux)
	r := nodeCtl(t, "node", "routes", "--socket", sock)
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "500 Internal Server Error: list routes: netlink: dump interrupted")
	r = nodeCtl(t, "node", "status", "--socket", sock)
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "decode GET /status")
	expectCode(t, nodeCtl(t, "node", "status", "extra"), 2)
	expectCode(t, nodeCtl(t, "node", "bogus"), 2)
	r = nodeCtl(t, "node")
	expectCode(t, r, 0)
	expectContains(t, "help", r.stdout, "status", "routes", "--socket")
}
