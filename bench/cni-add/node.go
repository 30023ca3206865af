package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bench/internal/benchutil"
	tabbycni "github.com/tabbynet/tabby/cni"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix/routes"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	"k8s.io/client-go/tools/clientcmd"
)

// namePrefix starts every name the benchmark gives a namespace, file or object.
const namePrefix = "tbench-"

// cniResults is where cnitool (libcni) caches ADD results.
const cniResults = "/var/lib/cni/results"

// cleanup is the teardown: functions run once, last added first. A function added after
// the teardown ran runs at once.
type cleanup struct {
	mu   sync.Mutex
	fns  []func()
	done bool
}

func (c *cleanup) add(what string, fn func() error) {
	f := func() {
		if err := fn(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: teardown: %s: %v\n", what, err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		f()
		return
	}
	c.fns = append(c.fns, f)
}

func (c *cleanup) run() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	c.done = true
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
}

// newID is the prefix of every name of this run: tbench-<pid>-<random>. The pid lets a
// later run recognise what a killed run left behind.
func newID() (string, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s%d-%s", namePrefix, os.Getpid(), hex.EncodeToString(b)), nil
}

var staleName = regexp.MustCompile(`^` + namePrefix + `([0-9]+)-[0-9a-f]{6}-`)

// sweepStale removes the network namespaces and cached cnitool results of earlier runs
// whose process is gone (killed before it could tear down). A run that is alive is
// left alone.
func sweepStale() error {
	dead := func(name string) bool {
		m := staleName.FindStringSubmatch(name)
		if m == nil {
			return false
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() {
			return false
		}
		err = syscall.Kill(pid, 0)
		return errors.Is(err, syscall.ESRCH)
	}
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		if dead(e.Name()) {
			step(" removing network namespace %s left by a killed run", e.Name())
			if _, err := run(context.Background(), "ip", "netns", "del", e.Name()); err != nil {
				return err
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(cniResults, namePrefix+"*"))
	for _, f := range files {
		if dead(filepath.Base(f)) {
			_ = os.Remove(f)
		}
	}
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), namePrefix+"*"))
	for _, d := range dirs {
		if dead(filepath.Base(d)) {
			step(" removing %s left by a killed run", d)
			_ = os.RemoveAll(d)
		}
	}
	return nil
}

// withTempDir runs f with $TMPDIR set to dir (os.MkdirTemp("", ...) then creates there).
func withTempDir[T any](dir string, f func() (T, error)) (T, error) {
	old, had := os.LookupEnv("TMPDIR")
	if err := os.Setenv("TMPDIR", dir); err != nil {
		var zero T
		return zero, err
	}
	defer func() {
		if had {
			_ = os.Setenv("TMPDIR", old)
		} else {
			_ = os.Unsetenv("TMPDIR")
		}
	}()
	return f()
}

// run executes a command and returns its combined output; an error carries the output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// teardownRun is run for a teardown step, with its own deadline.
func teardownRun(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := run(ctx, name, args...)
	return err
}

// findCnitool takes $TABBY_CNITOOL or runs hack/cnitool.sh, which installs cnitool once
// and prints its path.
func findCnitool(ctx context.Context) (string, error) {
	if p := os.Getenv("TABBY_CNITOOL"); p != "" {
		return p, nil
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join("hack", "cnitool.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/cnitool.sh (run from the repository root): %w: %s", err, stderr.String())
	}
	fields := strings.Fields(string(out))
	if len(fields) == 0 {
		return "", errors.New("hack/cnitool.sh printed no path")
	}
	p := fields[len(fields)-1]
	if _, err := os.Stat(p); err != nil {
		return "", err
	}
	return p, nil
}

// addNetns creates a network namespace with lo up, deleted in the teardown.
func addNetns(ctx context.Context, cl *cleanup, name string) error {
	if _, err := run(ctx, "ip", "netns", "add", name); err != nil {
		return err
	}
	cl.add("delete network namespace "+name, func() error { return teardownRun("ip", "netns", "del", name) })
	_, err := run(ctx, "ip", "-n", name, "link", "set", "lo", "up")
	return err
}

func nsPath(name string) string { return "/run/netns/" + name }

// node is the node network namespace and the stub namespace behind its default route.
type node struct {
	name, stub string
	h          *netlink.Handle // netlink inside the node namespace
}

// setup makes the node namespace (forwarding on, default route via the stub namespace,
// so proxy ARP answers for 169.254.1.1), as test/cni does.
func (n *node) setup(ctx context.Context, cl *cleanup) error {
	step(" node namespace %s, stub namespace %s, uplink %s via %s", n.name, n.stub, uplinkNode, uplinkStub)
	for _, name := range []string{n.name, n.stub} {
		if err := addNetns(ctx, cl, name); err != nil {
			return err
		}
	}
	for _, args := range [][]string{
		{"-n", n.name, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1", "netns", n.stub},
		{"-n", n.name, "addr", "add", uplinkNode, "dev", "uplink0"},
		{"-n", n.name, "link", "set", "uplink0", "up"},
		{"-n", n.stub, "addr", "add", uplinkStub + "/30", "dev", "uplink1"},
		{"-n", n.stub, "link", "set", "uplink1", "up"},
		{"-n", n.name, "route", "add", "default", "via", uplinkStub},
		{"netns", "exec", n.name, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"},
	} {
		if _, err := run(ctx, "ip", args...); err != nil {
			return err
		}
	}
	nsh, err := netns.GetFromName(n.name)
	if err != nil {
		return err
	}
	defer nsh.Close()
	if n.h, err = netlink.NewHandleAt(nsh); err != nil {
		return err
	}
	cl.add("close the node's netlink handle", func() error { n.h.Close(); return nil })
	return nil
}

// forward listens on a loopback port inside the node namespace and forwards every
// connection to the apiserver at host (on the host's loopback; TLS passes through
// untouched). It returns the https URL to use inside the node namespace.
func (n *node) forward(host string, cl *cleanup) (string, error) {
	u, err := url.Parse(host)
	if err != nil {
		return "", err
	}
	target := u.Host
	var ln net.Listener
	err = ns.WithNetNSPath(nsPath(n.name), func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		return "", fmt.Errorf("listen in the node namespace: %w", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, add bool) {
		mu.Lock()
		defer mu.Unlock()
		if add {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				up, err := net.DialTimeout("tcp", target, 5*time.Second)
				if err != nil {
					return
				}
				defer up.Close()
				track(c, true)
				track(up, true)
				defer track(c, false)
				defer track(up, false)
				go func() { _, _ = io.Copy(up, c); _ = up.(*net.TCPConn).CloseWrite() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	cl.add("stop the apiserver forwarder", func() error {
		err := ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
		return err
	})
	return "https://" + ln.Addr().String(), nil
}

// writeKubeconfig copies the kubeconfig at from to to with another server address.
func writeKubeconfig(from, server, to string) error {
	cfg, err := clientcmd.LoadFromFile(from)
	if err != nil {
		return err
	}
	for _, c := range cfg.Clusters {
		c.Server = server
	}
	return clientcmd.WriteToFile(*cfg, to)
}

// writeConflist writes the network's conflist for cnitool: the plugin alone, at its
// default log level, logging to logFile.
func writeConflist(dir, network, nodeName, kubeconfig, logFile string) error {
	list := map[string]any{"cniVersion": cniVersion, "name": network, "plugins": []any{map[string]any{
		"type": tabbycni.PluginType, "kubeconfig": kubeconfig, "nodename": nodeName, "mtu": 1500,
		"log_file": logFile, "ipam": map[string]any{"type": tabbycni.IPAMType},
	}}}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, network+".conflist"), b, 0o644)
}

// removeResults removes what cnitool cached for the network (DEL removes it too).
func removeResults(network string) error {
	files, _ := filepath.Glob(filepath.Join(cniResults, network+"-*"))
	var errs []error
	for _, f := range files {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
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
	c := exec.CommandContext(ctx, r.cnitool, cmd, r.network, nsPath(podNetns))
	c.Env = append(cleanEnv(), "NETCONFPATH="+r.confDir, "CNI_PATH="+r.binDir, "CNI_IFNAME=eth0",
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE="+namespace+";K8S_POD_NAME="+pod)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	killGroup(c)
	d, err := execIn(nsPath(r.node), c)
	if err != nil {
		return d, 0, stdout.String(), fmt.Errorf("%w\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}
	// wait4's usage of cnitool includes the children it waited for: the plugin.
	cpu := c.ProcessState.UserTime() + c.ProcessState.SystemTime()
	return d, cpu, stdout.String(), nil
}

// versionFloor runs the plugin's VERSION k times inside the node namespace (a process
// start and exit, no datastore) and returns the median.
func (r *runner) versionFloor(ctx context.Context, n *node, k int) (time.Duration, error) {
	var ds []time.Duration
	for range k {
		c := exec.CommandContext(ctx, r.plugin)
		c.Env = append(cleanEnv(), "CNI_COMMAND=VERSION", "CNI_PATH="+r.binDir)
		c.Stdin = strings.NewReader(`{"cniVersion":"` + cniVersion + `"}`)
		var out bytes.Buffer
		c.Stdout, c.Stderr = &out, &out
		killGroup(c)
		d, err := execIn(nsPath(n.name), c)
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
func verify(ctx context.Context, store datastore.Store, n *node, namespace string, want int) error {
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
	links, err := n.h.LinkList()
	if err != nil {
		return err
	}
	veths := 0
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, tabbycni.VethPrefix) {
			veths++
		}
	}
	rs, err := routes.ListLocal(n.h)
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
