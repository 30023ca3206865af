package bgp_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const suite = "test/bgp" // in skip messages

// Address ranges only this suite uses, inside its own namespaces.
const (
	fabricBits = 24
	poolCIDR   = "10.74.0.0/16"
)

// fabricAddr is node i's address on the fabric (10.73.0.1, 10.73.0.2, ...).
func fabricAddr(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 73, 0, byte(i + 1)}) }

// uplink is node i's /30 to its stub namespace (the default route, so that proxy ARP
// answers the pods' 169.254.1.1): 10.73.255.4i+1 on the node, +2 on the stub.
func uplink(i int) (cidr, gw string) {
	b := byte(4 * i)
	return netip.AddrFrom4([4]byte{10, 73, 255, b + 1}).String() + "/30", netip.AddrFrom4([4]byte{10, 73, 255, b + 2}).String()
}

// cluster is the datastore, the binaries and the fabric the nodes share.
type cluster struct {
	id      string
	env     *k8senv.Env
	binDir  string
	cnitool string
	store   datastore.Store
	fabric  string // the fabric namespace, with bridge br0
}

// tnode is one node: its namespaces, its CNI runtime and its tabby-node.
type tnode struct {
	c          *cluster
	n          *netnode.Node
	name       string
	ip         netip.Addr // on the fabric
	kubeconfig string
	rt         *netnode.Runtime
	network    string
	dir        string // socket, nodename file, log
	socket     string
	log        string
	proc       *exec.Cmd
	done       chan struct{}
}

func newCluster(t *testing.T, env *k8senv.Env) *cluster {
	t.Helper()
	k8senv.Require(t, env)
	netnode.RequireNetns(t, suite, "ip", "ping")
	id, err := netnode.RandomID()
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{id: id, env: env, binDir: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c.cnitool, err = netnode.FindCnitool(ctx, "")
	netnode.Require(t, suite, "cnitool (hack/cnitool.sh)", err)
	start := time.Now()
	if err := netnode.Build(ctx, c.binDir, "github.com/tabbynet/tabby/cmd/tabby-cni",
		"github.com/tabbynet/tabby/cmd/tabby-node", "github.com/tabbynet/tabby/cmd/tabbyctl"); err != nil {
		t.Fatalf("build the binaries: %v", err)
	}
	t.Logf("built tabby-cni, tabby-node and tabbyctl in %v", time.Since(start).Round(time.Millisecond))
	if c.store, err = datastore.NewKube(env.Config); err != nil {
		t.Fatal(err)
	}

	// The fabric: a namespace with a bridge the nodes' veths join.
	c.fabric = "tabbyb-" + id + "-fabric"
	netnode.MustRun(t, "ip", "netns", "add", c.fabric)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := netnode.Run(ctx, "ip", "netns", "del", c.fabric); err != nil {
			t.Logf("delete the fabric namespace: %v", err)
		}
	})
	for _, args := range [][]string{
		{"-n", c.fabric, "link", "set", "lo", "up"},
		{"-n", c.fabric, "link", "add", "br0", "type", "bridge"},
		{"-n", c.fabric, "link", "set", "br0", "up"},
	} {
		netnode.MustRun(t, "ip", args...)
	}
	return c
}

// addNode makes node i: its namespace (with a stub default route), a veth into the
// fabric bridge with address fabricAddr(i)/24, a kubeconfig reaching the apiserver from
// inside, and a CNI network.
func (c *cluster) addNode(t *testing.T, i int) *tnode {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cidr, gw := uplink(i)
	n := netnode.NewT(t, ctx, netnode.Options{Prefix: fmt.Sprintf("tabbyb-%s-%c", c.id, 'a'+i), UplinkCIDR: cidr, Gateway: gw})
	tn := &tnode{c: c, n: n, name: n.Name, ip: fabricAddr(i), dir: t.TempDir()}
	port := fmt.Sprintf("fab%c", 'a'+i)
	for _, args := range [][]string{
		{"-n", n.Name, "link", "add", "fab0", "type", "veth", "peer", "name", port, "netns", c.fabric},
		{"-n", c.fabric, "link", "set", port, "master", "br0"},
		{"-n", c.fabric, "link", "set", port, "up"},
		{"-n", n.Name, "addr", "add", fmt.Sprintf("%s/%d", tn.ip, fabricBits), "dev", "fab0"},
		{"-n", n.Name, "link", "set", "fab0", "up"},
	} {
		netnode.MustRun(t, "ip", args...)
	}
	tn.kubeconfig = filepath.Join(tn.dir, "kubeconfig")
	if err := n.ForwardKubeconfig(c.env.Kubeconfig, c.env.Config.Host, tn.kubeconfig); err != nil {
		t.Fatal(err)
	}
	confDir := filepath.Join(tn.dir, "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	tn.rt = &netnode.Runtime{Node: n, Cnitool: c.cnitool, ConfDir: confDir, BinDir: c.binDir}
	tn.network = n.Name
	tn.rt.Network(t, tn.network, "1.1.0", map[string]any{
		"type": "tabby-cni", "kubeconfig": tn.kubeconfig, "nodename": tn.name, "mtu": 1500,
		"log_level": "debug", "log_file": filepath.Join(tn.dir, "cni.log"), "datastore_timeout": "10s",
		"ipam": map[string]any{"type": "tabby-ipam"},
	})
	tn.socket = filepath.Join(tn.dir, "run", "tabby-node.sock")
	tn.log = filepath.Join(tn.dir, "tabby-node.log")
	t.Cleanup(func() {
		for _, k := range []datastore.Kind{datastore.KindNode, datastore.KindNodeStatus} {
			_ = c.store.Delete(context.Background(), k, "", tn.name, datastore.DeleteOptions{})
		}
	})
	return tn
}

// start runs tabby-node inside the node namespace with --ip on the fabric. It is
// stopped with SIGTERM (then killed) when t ends; its log is printed if t failed.
func (tn *tnode) start(t *testing.T) {
	t.Helper()
	logf, err := os.OpenFile(tn.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := tn.n.Command(context.Background(), filepath.Join(tn.c.binDir, "tabby-node"),
		"--node-name", tn.name, "--kubeconfig", tn.kubeconfig, "--socket", tn.socket,
		"--ip", fmt.Sprintf("%s/%d", tn.ip, fabricBits), "--health-addr", "127.0.0.1:19099",
		"--metrics-addr", "127.0.0.1:19091", "--nodename-file", filepath.Join(tn.dir, "nodename"),
		"--log-level", "debug", "--resync-interval", "5s")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start tabby-node: %v", err)
	}
	done := make(chan struct{})
	tn.proc, tn.done = cmd, done
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
			return
		default:
		}
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Errorf("tabby-node on %s did not exit within 20s of SIGTERM", tn.name)
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(tn.log)
			lines := strings.Split(string(b), "\n")
			if len(lines) > 120 {
				lines = lines[len(lines)-120:]
			}
			t.Logf("tabby-node log of %s (last %d lines):\n%s", tn.name, len(lines), strings.Join(lines, "\n"))
		}
	})
}

// stop sends SIGTERM to tabby-node and waits for it to exit.
func (tn *tnode) stop(t *testing.T) {
	t.Helper()
	if err := tn.proc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM tabby-node on %s: %v", tn.name, err)
	}
	select {
	case <-tn.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("tabby-node on %s did not exit within 20s of SIGTERM", tn.name)
	}
	if code := tn.proc.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("tabby-node on %s exited %d after SIGTERM", tn.name, code)
	}
}

// addPod creates the Pod and ADDs it with cnitool on the node (DEL on cleanup); it
// returns the pod's namespace and address.
func (tn *tnode) addPod(t *testing.T, ns, name string) (string, netip.Addr) {
	t.Helper()
	c := tn.c
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{NodeName: tn.name, Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}}}}
	if _, err := datastore.Create(ctxT(t), c.store, pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.store.Delete(context.Background(), datastore.KindPod, ns, name, datastore.DeleteOptions{})
	})
	podNS := tn.n.PodNS(t, name)
	args := netnode.K8sArgs(ns, name)
	run := func(cmd string) (string, string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return tn.rt.Run(ctx, cmd, tn.network, podNS, args)
	}
	t.Cleanup(func() { _, _, _ = run("del") })
	out, stderr, err := run("add")
	if err != nil {
		t.Fatalf("cnitool add %s on %s: %v\n%s\n%s", name, tn.name, err, out, stderr)
	}
	var res struct {
		IPs []struct{ Address string } `json:"ips"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.IPs) != 1 {
		t.Fatalf("ADD result: %v\n%s", err, out)
	}
	return podNS, netip.MustParsePrefix(res.IPs[0].Address).Addr()
}

func (c *cluster) createNamespace(t *testing.T, name string) {
	t.Helper()
	netnode.CreateNamespace(t, c.store, name)
}

func (c *cluster) createPool(t *testing.T, name, cidr string) {
	t.Helper()
	netnode.CreatePool(t, c.store, name, cidr, 26)
}

// tabbyctl runs the built tabbyctl (against the apiserver from the host) and returns
// its stdout; t fails when it fails.
func (c *cluster) tabbyctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, "tabbyctl"), append([]string{"--kubeconfig", c.env.Kubeconfig}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("tabbyctl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

func ctxT(t *testing.T) context.Context { return netnode.Context(t, 30*time.Second) }

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	netnode.WaitFor(t, what, timeout, 100*time.Millisecond, cond)
}
