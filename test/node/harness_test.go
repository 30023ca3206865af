package node_test

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

	"github.com/containernetworking/plugins/pkg/ns"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
)

// Address ranges only this suite uses, inside its own namespaces.
const (
	uplinkNode = "10.72.255.1/30" // node side of the node<->stub veth: the node's address
	uplinkStub = "10.72.255.2"    // the node's default gateway
	poolCIDR   = "10.71.0.0/16"
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
	msg := fmt.Sprintf("!!! test/node: %s unavailable: %v", what, err)
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
	if err := cmd.Run(); err != nil {
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

// harness is one test node: its namespaces, the binaries, the datastore.
type harness struct {
	id         string // unique suffix of every name
	node       string // node name = node namespace name
	stub       string
	binDir     string // tabby-cni (CNI_PATH), tabby-node, tabbyctl
	cnitool    string
	confDir    string // NETCONFPATH
	kubeconfig string // reaches the apiserver from inside the node namespace
	store      datastore.Store
	nodeH      *netlink.Handle
	root       *testing.T // the top-level test: agents live until it ends
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
	h := &harness{id: randomID(t), binDir: t.TempDir(), confDir: t.TempDir(), root: t}
	h.node = "tabbyn-" + h.id + "-node"
	h.stub = "tabbyn-" + h.id + "-stub"

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tool, err := findCnitool(ctx, repoRoot(t))
	requireComponent(t, "cnitool (hack/cnitool.sh)", err)
	h.cnitool = tool
	start := time.Now()
	if out, err := run(ctx, "go", "build", "-o", h.binDir+"/", "github.com/tabbynet/tabby/cmd/tabby-cni",
		"github.com/tabbynet/tabby/cmd/tabby-node", "github.com/tabbynet/tabby/cmd/tabbyctl"); err != nil {
		t.Fatalf("build the binaries: %v\n%s", err, out)
	}
	t.Logf("built tabby-cni, tabby-node and tabbyctl in %v", time.Since(start).Round(time.Millisecond))

	h.store, err = datastore.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
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

// inNode runs fn on a thread inside the node namespace (for sockets bound there).
func (h *harness) inNode(fn func() error) error {
	return ns.WithNetNSPath("/run/netns/"+h.node, func(ns.NetNS) error { return fn() })
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
	if err := h.inNode(func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
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
	cfg, err := clientcmd.LoadFromFile(env.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + ln.Addr().String()
	}
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// network writes a conflist for cnitool and returns the network's name.
func (h *harness) network(t *testing.T) string {
	name := "tabbyn-" + h.id
	conf := map[string]any{
		"type": "tabby-cni", "kubeconfig": h.kubeconfig, "nodename": h.node, "mtu": 1500,
		"log_level": "debug", "log_file": filepath.Join(h.confDir, "cni.log"), "datastore_timeout": "10s",
		"ipam": map[string]any{"type": "tabby-ipam"},
	}
	list := map[string]any{"cniVersion": "1.1.0", "name": name, "plugins": []any{conf}}
	b, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.confDir, name+".conflist"), b, 0o644); err != nil {
		t.Fatal(err)
	}
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
	name := "tabbyn-" + h.id + "-" + tag
	mustRun(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _, _ = run(context.Background(), "ip", "netns", "del", name) })
	mustRun(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// cnitoolRun runs cnitool inside the node namespace, as the runtime would.
func (h *harness) cnitoolRun(cmd, network, podNS, cniArgs string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "ip", "netns", "exec", h.node, h.cnitool, cmd, network, "/run/netns/"+podNS)
	c.Env = append(os.Environ(), "NETCONFPATH="+h.confDir, "CNI_PATH="+h.binDir, "CNI_ARGS="+cniArgs, "CNI_IFNAME=eth0")
	var stdout, stderr bytes.Buffer
	c.Stdout, c.Stderr = &stdout, &stderr
	err := c.Run()
	return stdout.String(), stderr.String(), err
}

func k8sArgs(namespace, pod string) string {
	return "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + namespace + ";K8S_POD_NAME=" + pod
}

// waitFor polls cond until it succeeds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
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

func (h *harness) createNamespace(t *testing.T, name string) {
	t.Helper()
	if _, err := datastore.Create(ctxT(t), h.store, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.store.Delete(context.Background(), datastore.KindNamespace, "", name, datastore.DeleteOptions{})
	})
}

func (h *harness) createPool(t *testing.T, name, cidr string) {
	t.Helper()
	if _, err := datastore.Create(ctxT(t), h.store, &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1.IPPoolSpec{CIDR: cidr, BlockSize: 26}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.store.Delete(context.Background(), datastore.KindIPPool, "", name, datastore.DeleteOptions{})
	})
}

func (h *harness) createPod(t *testing.T, namespace, name string) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": "ping"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}}},
	}
	if _, err := datastore.Create(ctxT(t), h.store, pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.store.Delete(context.Background(), datastore.KindPod, namespace, name, datastore.DeleteOptions{})
	})
}
