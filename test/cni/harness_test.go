package cni_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"k8s.io/client-go/tools/clientcmd"
)

// Address ranges only this suite uses, inside its own namespaces.
const (
	uplinkNode = "10.66.255.1/30" // node side of the node<->stub veth
	uplinkStub = "10.66.255.2"    // the node's default gateway
)

func inCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}

// requireComponent skips (or, under CI=true, fails) when a component is missing.
func requireComponent(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("!!! test/cni: %s unavailable: %v", what, err)
	if inCI() {
		t.Fatal(msg)
	}
	fmt.Fprintln(os.Stderr, strings.Repeat("!", 78)+"\n"+msg+"\n!!! SKIPPING (this would FAIL under CI=true)\n"+strings.Repeat("!", 78))
	t.Skip(msg)
}

// repoRoot is the module root, from this file's path.
func repoRoot(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

func randomID(t *testing.T) string {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := run(ctx, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// harness is one test node: its namespaces, the plugin and cnitool, the datastore.
type harness struct {
	id         string // unique suffix of every name
	node       string // node name = node namespace name
	stub       string
	binDir     string // CNI_PATH: tabby-cni
	cnitool    string
	confDir    string // NETCONFPATH
	kubeconfig string // reaches the apiserver from inside the node namespace
	store      datastore.Store
	alloc      *ipam.Allocator
	nodeH      *netlink.Handle
}

func newHarness(t *testing.T, env *k8senv.Env) *harness {
	t.Helper()
	k8senv.Require(t, env)
	if os.Geteuid() != 0 {
		requireComponent(t, "root", errors.New("network namespaces need root"))
	}
	for _, bin := range []string{"ip", "ping"} {
		_, err := exec.LookPath(bin)
		requireComponent(t, bin, err)
	}
	h := &harness{id: randomID(t), binDir: t.TempDir(), confDir: t.TempDir()}
	h.node = "tabbyt-" + h.id + "-node"
	h.stub = "tabbyt-" + h.id + "-stub"

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tool, err := findCnitool(ctx, repoRoot(t))
	requireComponent(t, "cnitool (hack/cnitool.sh)", err)
	h.cnitool = tool
	if out, err := run(ctx, "go", "build", "-o", filepath.Join(h.binDir, "tabby-cni"), "github.com/tabbynet/tabby/cmd/tabby-cni"); err != nil {
		t.Fatalf("build tabby-cni: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(h.binDir, "tabby-cni")); err != nil {
		t.Fatal(err)
	}

	h.store, err = datastore.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	h.alloc = ipam.New(h.store, ipam.Options{CacheTTL: -1}) // the test changes pools: never cache them
	h.setupNode(t)
	h.kubeconfig = h.proxyAPIServer(t, env)
	return h
}

// findCnitool runs hack/cnitool.sh (or takes $TABBY_CNITOOL).
func findCnitool(ctx context.Context, root string) (string, error) {
	if p := os.Getenv("TABBY_CNITOOL"); p != "" {
		return p, nil
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "hack", "cnitool.sh"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("hack/cnitool.sh: %w: %s", err, stderr.String())
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

// setupNode makes the node namespace (forwarding on, default route via a stub
// namespace so proxy ARP answers for 169.254.1.1) and removes it on cleanup.
func (h *harness) setupNode(t *testing.T) {
	for _, n := range []string{h.node, h.stub} {
		mustRun(t, "ip", "netns", "add", n)
		t.Cleanup(func() { _, _ = run(context.Background(), "ip", "netns", "del", n) })
	}
	mustRun(t, "ip", "-n", h.node, "link", "set", "lo", "up")
	mustRun(t, "ip", "-n", h.stub, "link", "set", "lo", "up")
	mustRun(t, "ip", "-n", h.node, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1", "netns", h.stub)
	mustRun(t, "ip", "-n", h.node, "addr", "add", uplinkNode, "dev", "uplink0")
	mustRun(t, "ip", "-n", h.node, "link", "set", "uplink0", "up")
	mustRun(t, "ip", "-n", h.stub, "addr", "add", uplinkStub+"/30", "dev", "uplink1")
	mustRun(t, "ip", "-n", h.stub, "link", "set", "uplink1", "up")
	mustRun(t, "ip", "-n", h.node, "route", "add", "default", "via", uplinkStub)
	mustRun(t, "ip", "netns", "exec", h.node, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
	nsh, err := netns.GetFromName(h.node)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsh.Close() })
	h.nodeH, err = netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.nodeH.Close)
}

// proxyAPIServer forwards a loopback port inside the node namespace to the apiserver on
// the host's loopback (TLS passes through untouched) and returns a kubeconfig for it.
func (h *harness) proxyAPIServer(t *testing.T, env *k8senv.Env) string {
	u, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	target := u.Host
	var ln net.Listener
	err = ns.WithNetNSPath("/run/netns/"+h.node, func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatalf("listen in the node namespace: %v", err)
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
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return h.writeKubeconfig(t, env, "https://"+ln.Addr().String())
}

// writeKubeconfig copies the env's kubeconfig with another server address.
func (h *harness) writeKubeconfig(t *testing.T, env *k8senv.Env, server string) string {
	cfg, err := clientcmd.LoadFromFile(env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = server
	}
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// pluginConf is the tabby-cni entry of a conflist.
func (h *harness) pluginConf(kubeconfig string) map[string]any {
	return map[string]any{
		"type": "tabby-cni", "kubeconfig": kubeconfig, "nodename": h.node, "mtu": 1500,
		"log_level": "debug", "log_file": filepath.Join(h.confDir, "cni.log"), "datastore_timeout": "5s",
		"ipam": map[string]any{"type": "tabby-ipam"},
	}
}

// network writes a conflist for cnitool and returns the network's name.
func (h *harness) network(t *testing.T, tag, cniVersion, kubeconfig string) string {
	name := "tabbyt-" + h.id + "-" + tag
	list := map[string]any{"cniVersion": cniVersion, "name": name, "plugins": []any{h.pluginConf(kubeconfig)}}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.confDir, name+".conflist"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	// cnitool's cache of results (the runtime's state) goes too, even after a failure.
	t.Cleanup(func() {
		files, _ := filepath.Glob(filepath.Join("/var/lib/cni/results", name+"-*"))
		for _, f := range files {
			_ = os.Remove(f)
		}
	})
	return name
}

// podNS creates a pod network namespace, removed on cleanup.
func (h *harness) podNS(t *testing.T, tag string) string {
	name := "tabbyt-" + h.id + "-" + tag
	mustRun(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _, _ = run(context.Background(), "ip", "netns", "del", name) })
	mustRun(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// cnitoolContainerID is the container id cnitool derives from a namespace path.
func cnitoolContainerID(nsPath string) string {
	s := sha512.Sum512([]byte(nsPath))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

func nsPath(name string) string { return "/run/netns/" + name }

// cnitool runs cnitool inside the node namespace, as the runtime would.
func (h *harness) cnitoolRun(cmd, network, podNS, cniArgs string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "ip", "netns", "exec", h.node, h.cnitool, cmd, network, nsPath(podNS))
	c.Env = append(os.Environ(), "NETCONFPATH="+h.confDir, "CNI_PATH="+h.binDir, "CNI_ARGS="+cniArgs, "CNI_IFNAME=eth0")
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	return stdout.String(), stderr.String(), err
}

// pluginRun executes tabby-cni directly inside the node namespace, as a runtime does,
// and decodes a failure's CNI error from stdout.
func (h *harness) pluginRun(command string, conf map[string]any, containerID, podNS, cniArgs string) (string, *types.Error, error) {
	b, err := json.Marshal(conf)
	if err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "ip", "netns", "exec", h.node, filepath.Join(h.binDir, "tabby-cni"))
	netnsPath := ""
	if podNS != "" {
		netnsPath = nsPath(podNS)
	}
	c.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_CONTAINERID="+containerID, "CNI_NETNS="+netnsPath,
		"CNI_IFNAME=eth0", "CNI_ARGS="+cniArgs, "CNI_PATH="+h.binDir)
	c.Stdin = bytes.NewReader(b)
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err = c.Run()
	if err == nil {
		return stdout.String(), nil, nil
	}
	var ce types.Error
	if jerr := json.Unmarshal(stdout.Bytes(), &ce); jerr != nil || ce.Code == 0 {
		return stdout.String(), nil, fmt.Errorf("%w: stdout %q stderr %q", err, stdout.String(), stderr.String())
	}
	return stdout.String(), &ce, nil
}

// directConf is a single-plugin net config for pluginRun.
func (h *harness) directConf(cniVersion, kubeconfig string) map[string]any {
	c := h.pluginConf(kubeconfig)
	c["cniVersion"], c["name"] = cniVersion, "tabbyt-"+h.id+"-direct"
	return c
}

func k8sArgs(namespace, pod string) string {
	return "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + namespace + ";K8S_POD_NAME=" + pod
}

// waitFor polls cond until it succeeds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		<-tick.C
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// unreachableKubeconfig is a kubeconfig whose apiserver address refuses connections.
func (h *harness) unreachableKubeconfig(t *testing.T) string {
	return h.writeKubeconfig(t, env, "https://127.0.0.1:1")
}
