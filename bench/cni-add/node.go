package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bench/internal/benchutil"
	tabbycni "github.com/tabbynet/tabby/cni"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix/routes"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// namePrefix starts every name the benchmark gives a namespace, file or object.
const namePrefix = "tbench-"

// writeConflist writes the network's conflist for cnitool: the plugin alone, at its
// default log level, logging to logFile.
func writeConflist(dir, network, nodeName, kubeconfig, logFile string) error {
	return netnode.WriteConflist(dir, network, cniVersion, map[string]any{
		"type": tabbycni.PluginType, "kubeconfig": kubeconfig, "nodename": nodeName, "mtu": 1500,
		"log_file": logFile, "ipam": map[string]any{"type": tabbycni.IPAMType},
		// The benchmark measures the plugin alone: no tabby-node runs to report policy.
		"policy_setup_timeout": 0,
	})
}

// runner runs cnitool and the plugin inside the node namespace.
type runner struct {
	cnitool, plugin, binDir, confDir, network, node string
}

// cleanEnv is the environment without CNI variables the caller may have set.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "CNI_") || k == "NETCONFPATH" || k == "CAP_ARGS" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// cnitoolRun runs `cnitool <cmd> <network> /run/netns/<podNetns>` for pod namespace/pod
// inside the node namespace and returns how long it took, the CPU time (user + system)
// of cnitool and the plugin it ran, and its stdout.
func (r *runner) cnitoolRun(ctx context.Context, cmd, podNetns, namespace, pod string) (time.Duration, time.Duration, string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, r.cnitool, cmd, r.network, netnode.NSPath(podNetns))
	c.Env = append(cleanEnv(), "NETCONFPATH="+r.confDir, "CNI_PATH="+r.binDir, "CNI_IFNAME=eth0",
		"CNI_ARGS="+netnode.K8sArgs(namespace, pod))
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	killGroup(c)
	d, err := execIn(netnode.NSPath(r.node), c)
	if err != nil {
		return d, 0, stdout.String(), fmt.Errorf("%w\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	// wait4's usage of cnitool includes the children it waited for: the plugin.
	cpu := c.ProcessState.UserTime() + c.ProcessState.SystemTime()
	return d, cpu, stdout.String(), nil
}

// versionFloor runs the plugin's VERSION k times inside the node namespace (a process
// start and exit, no datastore) and returns the median.
func (r *runner) versionFloor(ctx context.Context, n *netnode.Node, k int) (time.Duration, error) {
	var ds []time.Duration
	for range k {
		c := exec.CommandContext(ctx, r.plugin)
		c.Env = append(cleanEnv(), "CNI_COMMAND=VERSION", "CNI_PATH="+r.binDir)
		c.Stdin = strings.NewReader(`{"cniVersion":"` + cniVersion + `"}`)
		var out bytes.Buffer
		c.Stdout, c.Stderr = &out, &out
		killGroup(c)
		d, err := execIn(netnode.NSPath(n.Name), c)
		if err != nil {
			return 0, fmt.Errorf("tabby-cni VERSION: %w: %s", err, out.String())
		}
		ds = append(ds, d)
	}
	return benchutil.Percentile(ds, 50), nil
}

// killGroup makes c the leader of its own process group, killed as a whole when its
// context ends, so a plugin cnitool started goes too.
func killGroup(c *exec.Cmd) {
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
}

// execIn runs c from a thread inside the network namespace at path, so c starts there
// (as under a runtime on the node), and returns the time from just before the exec to
// the process's exit. The thread is never unlocked: it ends with its goroutine, so no
// other goroutine ever runs in that namespace.
func execIn(path string, c *exec.Cmd) (time.Duration, error) {
	type result struct {
		d   time.Duration
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		h, err := netns.GetFromPath(path)
		if err != nil {
			ch <- result{err: err}
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			ch <- result{err: fmt.Errorf("enter %s: %w", path, err)}
			return
		}
		start := time.Now()
		err = c.Run()
		ch <- result{time.Since(start), err}
	}()
	r := <-ch
	return r.d, r.err
}

// resultIP is the one address of an ADD result, which must be CNI 1.1.0.
func resultIP(out string) (netip.Addr, error) {
	var r struct {
		CNIVersion string `json:"cniVersion"`
		IPs        []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return netip.Addr{}, fmt.Errorf("result is not JSON: %w: %s", err, out)
	}
	if r.CNIVersion != cniVersion || len(r.IPs) != 1 {
		return netip.Addr{}, fmt.Errorf("unexpected result: %s", out)
	}
	p, err := netip.ParsePrefix(r.IPs[0].Address)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("result address: %w", err)
	}
	return p.Addr(), nil
}

// verify checks that exactly want pods are wired: WorkloadEndpoints in namespace,
// allocated addresses, cali* veths and Tabby routes in the node namespace.
func verify(ctx context.Context, store datastore.Store, n *netnode.Node, namespace string, want int) error {
	weps, err := datastore.List[*v1.WorkloadEndpoint](ctx, store, datastore.ListOptions{Namespace: namespace})
	if err != nil {
		return err
	}
	blocks, err := datastore.List[*v1.IPAMBlock](ctx, store, datastore.ListOptions{})
	if err != nil {
		return err
	}
	allocated := 0
	for _, b := range blocks {
		for _, a := range b.Spec.Allocations {
			if a >= 0 {
				allocated++
			}
		}
	}
	links, err := n.Handle.LinkList()
	if err != nil {
		return err
	}
	veths := 0
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, tabbycni.VethPrefix) {
			veths++
		}
	}
	rs, err := routes.ListLocal(n.Handle)
	if err != nil {
		return err
	}
	if len(weps) != want || allocated != want || veths != want || len(rs) != want {
		return fmt.Errorf("want %d of each: %d WorkloadEndpoints, %d allocated addresses, %d cali* links, %d protocol-116 routes",
			want, len(weps), allocated, veths, len(rs))
	}
	return nil
}

// logTail is the end of the plugin's log, for an error message.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return "\n--- tabby-cni log (tail) ---\n" + strings.Join(lines, "\n")
}

// host is what the benchmark must never change in the host's namespace: cali* links,
// routes with Tabby's protocols (any table), and network namespaces of this process.
type host struct{ items []string }

func hostState() (*host, error) {
	h := &host{}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, tabbycni.VethPrefix) {
			h.items = append(h.items, "link "+l.Attrs().Name)
		}
	}
	for _, p := range []netlink.RouteProtocol{routes.ProtocolLocal, routes.ProtocolLearned} {
		filter := &netlink.Route{Protocol: p, Table: unix.RT_TABLE_UNSPEC}
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
			return nil, err
		}
		for _, r := range rs {
			h.items = append(h.items, fmt.Sprintf("route %s proto %d table %d", r.Dst, r.Protocol, r.Table))
		}
	}
	own := fmt.Sprintf("%s%d-", namePrefix, os.Getpid())
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), own) {
			h.items = append(h.items, "netns "+e.Name())
		}
	}
	return h, nil
}

// newSince lists what h has and before had not.
func (h *host) newSince(before *host) []string {
	var extra []string
	for _, it := range h.items {
		if !slices.Contains(before.items, it) {
			extra = append(extra, it)
		}
	}
	return extra
}
