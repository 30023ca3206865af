package node_test

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/ebpf/ebpftest"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
	"golang.org/x/sys/unix"
)

// Address ranges only TestUnprivilegedAgent uses, inside its own namespaces.
var (
	upPool    = "10.95.0.0/20"
	upFabric  = netip.MustParsePrefix("10.95.254.0/24")
	upUplinks = netip.MustParsePrefix("10.95.255.0/24")
)

// confine is the Wrap that gives tabby-node what the chart's unprivileged DaemonSet
// (privileged: false) gives its container: only the capabilities the chart adds
// (setpriv: the bounding set, no inheritable ones, no new privileges), /proc/sys
// read-only, and the host's /proc/sys/net at $1/net (the chart's hostPath mount at
// /host/proc/sys/net). It runs inside the mount namespace `ip netns exec` makes, so
// the mounts are tabby-node's alone.
const confine = `set -e
root=$1; caps=$2; shift 2
mkdir -p "$root/net"
mount --bind /proc/sys/net "$root/net"
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
exec setpriv --bounding-set "$caps" --inh-caps -all --no-new-privs -- "$@"`

// TestUnprivilegedAgent: tabby-node with only the capabilities the Helm chart's
// unprivileged DaemonSet grants, and /proc/sys read-only as a container runtime
// mounts it, registers, programs policy, wires pods (routes, sysctls through
// --proc-sys-root, BPF programs) and enforces a NetworkPolicy; its effective
// capabilities are exactly the chart's.
func TestUnprivilegedAgent(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: root, a kube-apiserver, cnitool, BPF and network namespaces")
	}
	k8senv.Require(t, env)
	netnode.RequireNetns(t, suite, "ip", "ping", "setpriv", "mount")
	ebpftest.Require(t)
	caps := chartCapabilities(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	hostProcSys := filepath.Join(t.TempDir(), "host-proc-sys")
	spec := "-all"
	for _, c := range caps {
		spec += ",+" + strings.ToLower(c)
	}
	fn := startFabricNode(ctx, t, fabricSetup{prefix: "tup", pool: upPool, subnet: upFabric, uplinks: upUplinks,
		wrap: []string{"sh", "-c", confine, "confine", hostProcSys, spec}, args: []string{"--proc-sys-root=" + hostProcSys}})
	store, ns, node, api := fn.store, fn.ns, fn.node, fn.api

	// Exactly the chart's capabilities, and /proc/sys read-only for it.
	eff := capSet(t, node.PID(), "CapEff:")
	var want uint64
	for _, name := range caps {
		n, ok := capNumbers[name]
		if !ok {
			t.Fatalf("the chart adds %s, which this test does not know", name)
		}
		want |= 1 << n
	}
	// A capability this test process lacks cannot be granted (a sandbox may withhold
	// some, e.g. SYS_RESOURCE): tabby-node then runs without it too.
	if own := capSet(t, os.Getpid(), "CapBnd:"); want&^own != 0 {
		t.Logf("this machine withholds %#x of the chart's capabilities from the test: tabby-node runs without them", want&^own)
		want &= own
	}
	if eff != want {
		t.Errorf("tabby-node's effective capabilities %#x, want the chart's %v (%#x)", eff, caps, want)
	}
	if err := unixWritable(node.PID(), "/proc/sys/net/ipv4/ip_forward"); err == nil {
		t.Error("/proc/sys is writable for the confined tabby-node; the test does not confine it")
	}

	server, err := node.AddPodSpec(ctx, fabric.PodSpec{Namespace: ns, Name: "server", Labels: map[string]string{"app": "server"}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := node.AddPodSpec(ctx, fabric.PodSpec{Namespace: ns, Name: "client", Labels: map[string]string{"app": "client"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "client pings server", 30*time.Second, func() error { return client.Ping(ctx, server.IP, 1) })
	// felix wrote the pod interfaces' sysctls through --proc-sys-root, and its
	// programs are on them.
	eps, err := api.Endpoints(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 2 {
		t.Fatalf("endpoints %+v, want the two pods'", eps)
	}
	for _, ep := range eps {
		out, err := node.Net.Exec(ctx, "cat", "/proc/sys/net/ipv4/conf/"+ep.Interface+"/proxy_arp")
		if err != nil || strings.TrimSpace(out) != "1" || !ep.Programmed || !ep.PolicyEnforced {
			t.Errorf("endpoint %s on %s: proxy_arp %q (%v), programmed %v, policy enforced %v (%s); want 1, true, true",
				ep.Name, ep.Interface, strings.TrimSpace(out), err, ep.Programmed, ep.PolicyEnforced, ep.PolicyMessage)
		}
	}
	// A NetworkPolicy that isolates the server is enforced by the programs it loaded.
	denyIngress(ctx, t, store, ns, "isolate", "app", "server")
	waitFor(t, "pings to the isolated server dropped", 30*time.Second, func() error {
		if err := client.Ping(ctx, server.IP, 1); err == nil {
			return fmt.Errorf("the ping was answered")
		}
		return nil
	})
	if log := node.LogTail(2000); strings.Contains(log, "operation not permitted") || strings.Contains(log, "permission denied") {
		t.Errorf("tabby-node logged a permission error:\n%s", grepLines(log, "operation not permitted", "permission denied"))
	}
}

// chartCapabilities reads the capabilities the chart's DaemonSet adds to tabby-node
// when it is not privileged (the add: list in charts/tabby/templates/daemonset.yaml).
func chartCapabilities(t *testing.T) []string {
	t.Helper()
	root, err := netnode.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(root, "charts", "tabby", "templates", "daemonset.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var caps []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "add:":
			in = true
		case !in || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "- "):
			caps = append(caps, strings.TrimSpace(strings.TrimPrefix(line, "- ")))
		default:
			in = false
		}
	}
	if err := sc.Err(); err != nil || len(caps) == 0 {
		t.Fatalf("no capabilities found in the chart's DaemonSet (%v)", err)
	}
	return caps
}

// capNumbers are the capabilities the chart may add, by name.
var capNumbers = map[string]uint{
	"NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "NET_ADMIN": unix.CAP_NET_ADMIN, "NET_RAW": unix.CAP_NET_RAW,
	"SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "BPF": unix.CAP_BPF, "PERFMON": unix.CAP_PERFMON,
	"SYS_ADMIN": unix.CAP_SYS_ADMIN, "IPC_LOCK": unix.CAP_IPC_LOCK,
}

// capSet is one of a process's capability sets (field "CapEff:", "CapBnd:"...).
func capSet(t *testing.T, pid int, field string) uint64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// unixWritable opens path for writing as seen from pid's mount namespace (through
// /proc/<pid>/root); nil means it is writable there.
func unixWritable(pid int, path string) error {
	f, err := os.OpenFile(fmt.Sprintf("/proc/%d/root%s", pid, path), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

func grepLines(s string, subs ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, sub := range subs {
			if strings.Contains(l, sub) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
