package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	tabbycni "github.com/tabbynet/tabby/cni"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
)

var env *k8senv.Env

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() { // make unit: no control plane
		os.Exit(m.Run())
	}
	k8senv.Main(m, k8senv.Options{CRDDir: "../../charts/tabby/crds"}, &env)
}

// pod is one pod the test wired with the CNI plugin.
type pod struct {
	name, podNS, veth, wep string
	ip                     netip.Addr
}

// pingCount is how many probes (10 ms apart) the restart test sends: long enough to
// cover two restarts with time to spare.
const pingCount = 600

// TestNodeAgent runs tabby-node inside a node namespace with three pods and checks,
// in order: registration, programming, drift repair, foreign routes, tabbyctl node,
// restarts without packet loss, and endpoint deletion.
func TestNodeAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: root, a kube-apiserver, cnitool and network namespaces")
	}
	h := newHarness(t, env)
	ns := "tabbyn-" + h.id
	h.createNamespace(t, ns)
	h.createPool(t, "tabbyn-"+h.id+"-pool", poolCIDR)
	files := newAgentFiles(t)
	network := h.network(t, files.socket)
	dumpLogOnFailure(t, files)

	agent := h.startAgent(t, files)
	t.Logf("tabby-node ready in %v", h.waitReady(t, agent, 60*time.Second).Round(time.Millisecond))

	// Registration: the Node resource, with the autodetected address of uplink0.
	n, err := datastore.Get[*v1.Node](ctxT(t), h.store, "", h.node)
	if err != nil {
		t.Fatalf("the agent's Node resource: %v", err)
	}
	t.Cleanup(func() {
		_ = h.store.Delete(context.Background(), datastore.KindNode, "", h.node, datastore.DeleteOptions{})
	})
	if n.Spec.BGP == nil || n.Spec.BGP.IPv4Address != uplinkNode || len(n.Spec.OrchRefs) != 1 || n.Spec.OrchRefs[0].Orchestrator != "k8s" {
		t.Fatalf("Node spec %+v", n.Spec)
	}
	if b, err := os.ReadFile(files.nodename); err != nil || string(b) != h.node {
		t.Errorf("node-name file: %q %v", b, err)
	}

	// Three pods, wired by the plugin while the agent runs.
	pods := make([]pod, 3)
	for i, name := range []string{"a", "b", "c"} {
		pods[i] = h.addPod(t, network, ns, "pod-"+name)
	}
	status := h.waitProgrammed(t, files, pods)
	t.Logf("3 endpoints programmed; routes %+v", status.Felix.Routes)

	t.Run("programmed", func(t *testing.T) { h.checkProgrammed(t, pods) })
	t.Run("tabbyctl-node", func(t *testing.T) { h.checkTabbyctl(t, files, ns, pods) })
	t.Run("metrics", func(t *testing.T) {
		code, body, err := h.httpGet("http://" + metricsAddr + "/metrics")
		if err != nil || code != 200 {
			t.Fatalf("/metrics: %d %v", code, err)
		}
		for _, m := range []string{"tabby_node_info{node=\"" + h.node + "\"", "tabby_node_ready 1", "go_goroutines", "process_resident_memory_bytes"} {
			if !strings.Contains(body, m) {
				t.Errorf("/metrics lacks %q", m)
			}
		}
	})

	// A route that is not ours (protocol static), to an address inside the pool: it
	// must survive everything below, restarts included.
	foreign := "10.71.250.77/32"
	netnode.MustRun(t, "ip", "-n", h.node, "route", "add", foreign, "dev", "uplink0", "proto", "static")
	foreignBefore := netnode.MustRun(t, "ip", "-n", h.node, "route", "show", foreign)

	t.Run("route-repaired", func(t *testing.T) {
		p := pods[1]
		netnode.MustRun(t, "ip", "-n", h.node, "route", "del", p.ip.String()+"/32")
		start := time.Now()
		waitFor(t, "the deleted route back", 15*time.Second, func() error { return h.routeOK(p) })
		t.Logf("route to %s repaired in %v", p.ip, time.Since(start).Round(time.Millisecond))
	})
	t.Run("sysctl-repaired", func(t *testing.T) {
		p := pods[2]
		path := "/proc/sys/net/ipv4/conf/" + p.veth + "/proxy_arp"
		netnode.MustRun(t, "ip", "netns", "exec", h.node, "sh", "-c", "echo 0 > "+path)
		waitFor(t, "proxy_arp back to 1", 15*time.Second, func() error {
			if v := strings.TrimSpace(netnode.MustRun(t, "ip", "netns", "exec", h.node, "cat", path)); v != "1" {
				return fmt.Errorf("%s = %s", path, v)
			}
			return nil
		})
	})

	if !t.Run("restart-no-loss", func(t *testing.T) {
		agent = h.restartUnderPing(t, files, agent, pods[0], pods[1])
	}) {
		return
	}
	h.waitProgrammed(t, files, pods)

	// Deleting a WorkloadEndpoint (not the pod's veth) removes its route at once: the
	// grace period for unwanted routes covers only routes felix never saw wanted.
	t.Run("wep-deleted", func(t *testing.T) {
		p := pods[2]
		start := time.Now()
		if err := h.store.Delete(ctxT(t), datastore.KindWorkloadEndpoint, ns, p.wep, datastore.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "route to the deleted endpoint gone", 5*time.Second, func() error {
			out := netnode.MustRun(t, "ip", "-n", h.node, "route", "show", p.ip.String()+"/32", "proto", "116")
			if strings.TrimSpace(out) != "" {
				return fmt.Errorf("still there: %s", out)
			}
			return nil
		})
		t.Logf("route to %s gone %v after its WorkloadEndpoint was deleted", p.ip, time.Since(start).Round(time.Millisecond))
		for _, q := range pods[:2] {
			if err := h.routeOK(q); err != nil {
				t.Error(err)
			}
		}
		waitFor(t, "2 endpoints in the status", 10*time.Second, func() error {
			st, err := localapi.NewClient(files.socket, 5*time.Second).Status(context.Background())
			if err != nil {
				return err
			}
			if len(st.Felix.Endpoints) != 2 {
				return fmt.Errorf("%d endpoints", len(st.Felix.Endpoints))
			}
			return nil
		})
	})

	if got := netnode.MustRun(t, "ip", "-n", h.node, "route", "show", foreign); got != foreignBefore || !strings.Contains(got, "proto static") {
		t.Errorf("the foreign route changed: %q, was %q", got, foreignBefore)
	}

	// A last clean stop: exit 0, socket gone, routes stay.
	before := netnode.MustRun(t, "ip", "-n", h.node, "route", "show", "proto", "116")
	if err := agent.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("tabby-node exit after SIGTERM: %v", err)
	}
	if _, err := os.Lstat(files.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after a clean stop: %v", err)
	}
	if after := netnode.MustRun(t, "ip", "-n", h.node, "route", "show", "proto", "116"); after != before {
		t.Errorf("routes changed when the agent stopped:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	_, stderr, code := h.tabbyctl(t, "node", "status", "--socket", files.socket)
	if code != 1 || !strings.Contains(stderr, "tabby-node is not running on this node: dial unix "+files.socket) {
		t.Errorf("tabbyctl node status with the agent stopped: exit %d, %q", code, stderr)
	}
}

// addPod creates the Pod, its namespace, and ADDs it with cnitool (DEL on cleanup).
func (h *harness) addPod(t *testing.T, network, ns, name string) pod {
	t.Helper()
	h.createPod(t, ns, name)
	podNS := h.n.PodNS(t, name)
	args := netnode.K8sArgs(ns, name)
	t.Cleanup(func() { _, _, _ = h.cnitoolRun("del", network, podNS, args) })
	out, stderr, err := h.cnitoolRun("add", network, podNS, args)
	if err != nil {
		t.Fatalf("cnitool add %s: %v\n%s\n%s", name, err, out, stderr)
	}
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.IPs) != 1 {
		t.Fatalf("ADD result: %v\n%s", err, out)
	}
	ip := netip.MustParsePrefix(res.IPs[0].Address).Addr()
	return pod{name: name, podNS: podNS, veth: tabbycni.VethName(ns, name), wep: tabbycni.WEPName(h.node, name, "eth0"), ip: ip}
}

// waitProgrammed waits until the agent reports every pod's endpoint programmed.
func (h *harness) waitProgrammed(t *testing.T, files agentFiles, pods []pod) *localapi.Status {
	t.Helper()
	var st *localapi.Status
	waitFor(t, "endpoints programmed", 30*time.Second, func() error {
		var err error
		st, err = localapi.NewClient(files.socket, 5*time.Second).Status(context.Background())
		if err != nil {
			return err
		}
		for _, p := range pods {
			i := slices.IndexFunc(st.Felix.Endpoints, func(e localapi.Endpoint) bool { return e.Name == p.wep })
			if i < 0 {
				return fmt.Errorf("%s not in the status", p.wep)
			}
			if e := st.Felix.Endpoints[i]; !e.Programmed {
				return fmt.Errorf("%s not programmed: %s", p.wep, e.Message)
			}
		}
		return nil
	})
	return st
}

// routeOK checks the pod's /32 route: through its veth, protocol 116, scope link.
func (h *harness) routeOK(p pod) error {
	out, err := netnode.Run(context.Background(), "ip", "-n", h.node, "route", "show", p.ip.String()+"/32")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "dev "+p.veth+" proto 116 scope link") {
		return fmt.Errorf("route to %s: %q, want dev %s proto 116 scope link", p.ip, out, p.veth)
	}
	return nil
}

// checkProgrammed: routes, blackholes for the node's blocks, sysctls, and traffic.
func (h *harness) checkProgrammed(t *testing.T, pods []pod) {
	for _, p := range pods {
		if err := h.routeOK(p); err != nil {
			t.Error(err)
		}
		for path, want := range map[string]string{"ipv4/conf/%s/proxy_arp": "1", "ipv4/neigh/%s/proxy_delay": "0", "ipv4/conf/%s/forwarding": "1"} {
			f := "/proc/sys/net/" + fmt.Sprintf(path, p.veth)
			if got := strings.TrimSpace(netnode.MustRun(t, "ip", "netns", "exec", h.node, "cat", f)); got != want {
				t.Errorf("%s = %q, want %q", f, got, want)
			}
		}
	}
	affs, err := datastore.List[*v1.BlockAffinity](ctxT(t), h.store, datastore.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	blackholes := netnode.MustRun(t, "ip", "-n", h.node, "route", "show", "type", "blackhole")
	var blocks int
	for _, a := range affs {
		if a.Spec.Node != h.node {
			continue
		}
		blocks++
		if !strings.Contains(blackholes, "blackhole "+a.Spec.CIDR+" proto 116") {
			t.Errorf("no blackhole for block %s: %q", a.Spec.CIDR, blackholes)
		}
	}
	if blocks == 0 {
		t.Errorf("no block affine to %s", h.node)
	}
	out, err := netnode.Run(context.Background(), "ip", "netns", "exec", pods[0].podNS, "ping", "-c", "2", "-W", "2", pods[2].ip.String())
	if err != nil {
		t.Errorf("ping between pods: %v\n%s", err, out)
	}
}

// checkTabbyctl: tabbyctl node status and routes through the socket.
func (h *harness) checkTabbyctl(t *testing.T, files agentFiles, ns string, pods []pod) {
	out, stderr, code := h.tabbyctl(t, "node", "status", "--socket", files.socket)
	if code != 0 {
		t.Fatalf("tabbyctl node status: exit %d: %s", code, stderr)
	}
	t.Logf("tabbyctl node status:\n%s", out)
	want := []string{"Node:        " + h.node, "Ready:       yes", "Node IP:     " + uplinkNode, "Endpoints:   3 (3 programmed)"}
	for _, p := range pods {
		want = append(want, ns, p.wep, p.veth, p.ip.String())
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("tabbyctl node status lacks %q", w)
		}
	}
	out, stderr, code = h.tabbyctl(t, "node", "status", "--socket", files.socket, "-o", "json")
	var st localapi.Status
	if code != 0 || json.Unmarshal([]byte(out), &st) != nil || len(st.Felix.Endpoints) != 3 || st.Node != h.node {
		t.Errorf("tabbyctl node status -o json: exit %d %s\n%s", code, stderr, out)
	}
	out, stderr, code = h.tabbyctl(t, "node", "routes", "--socket", files.socket)
	if code != 0 {
		t.Fatalf("tabbyctl node routes: exit %d: %s", code, stderr)
	}
	t.Logf("tabbyctl node routes:\n%s", out)
	for _, p := range pods {
		if !strings.Contains(out, p.ip.String()+"/32") || !strings.Contains(out, p.veth) {
			t.Errorf("tabbyctl node routes lacks %s via %s", p.ip, p.veth)
		}
	}
	if !strings.Contains(out, "blackhole") {
		t.Error("tabbyctl node routes lists no blackhole")
	}
}

// restartUnderPing pings b from a every 10 ms while the agent is stopped with SIGTERM
// and started again, then killed with SIGKILL (leaving its socket file) and started
// again; not one probe may be lost. It returns the running agent.
func (h *harness) restartUnderPing(t *testing.T, files agentFiles, agent *agentProc, a, b pod) *agentProc {
	routesBefore := netnode.MustRun(t, "ip", "-n", h.node, "route", "show", "proto", "116")
	p := startPinger(t, a.podNS, b.ip.String(), pingCount)
	waitFor(t, "first 50 ping replies", 10*time.Second, func() error {
		if n, _ := p.progress(); n < 50 {
			return fmt.Errorf("%d replies", n)
		}
		return nil
	})

	// SIGTERM: a clean exit, the socket removed, no route touched.
	start := time.Now()
	if err := agent.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("tabby-node exit after SIGTERM: %v (want status 0)", err)
	}
	stopped := time.Since(start)
	if _, err := os.Lstat(files.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket left after SIGTERM: %v", err)
	}
	if got := netnode.MustRun(t, "ip", "-n", h.node, "route", "show", "proto", "116"); got != routesBefore {
		t.Errorf("routes changed while the agent was down:\nbefore:\n%s\nafter:\n%s", routesBefore, got)
	}
	agent = h.startAgent(t, files)
	ready := h.waitReady(t, agent, 30*time.Second)
	t.Logf("SIGTERM: exited in %v, restarted and ready in %v", stopped.Round(time.Millisecond), ready.Round(time.Millisecond))

	// SIGKILL: the socket file stays behind; the next agent replaces it.
	if err := agent.stop(t, syscall.SIGKILL); err == nil {
		t.Error("tabby-node exited 0 after SIGKILL")
	}
	if fi, err := os.Lstat(files.socket); err != nil || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("after SIGKILL the socket file should remain: %v %v", fi, err)
	}
	agent = h.startAgent(t, files)
	ready = h.waitReady(t, agent, 30*time.Second)
	if _, err := localapi.NewClient(files.socket, 5*time.Second).Status(context.Background()); err != nil {
		t.Errorf("local API after replacing the stale socket: %v", err)
	}
	replies, seq := p.progress()
	t.Logf("SIGKILL: restarted over the stale socket and ready in %v; ping at seq %d (%d replies)", ready.Round(time.Millisecond), seq, replies)
	if seq > pingCount-100 {
		t.Errorf("the ping (%d probes) nearly ended before the restarts finished (seq %d): raise pingCount", pingCount, seq)
	}

	sent, recv, missing, summary := p.result(t)
	t.Logf("ping %s -> %s across two restarts: %d transmitted, %d received\n%s", a.name, b.name, sent, recv, summary)
	if sent != pingCount || recv != sent || len(missing) > 0 || !strings.Contains(summary, " 0% packet loss") {
		t.Errorf("packets lost across the restarts: %d transmitted, %d received, %d reported missing %q", sent, recv, len(missing), missing)
	}
	if got := netnode.MustRun(t, "ip", "-n", h.node, "route", "show", "proto", "116"); got != routesBefore {
		t.Errorf("routes after the restarts differ:\nbefore:\n%s\nafter:\n%s", routesBefore, got)
	}
	return agent
}
