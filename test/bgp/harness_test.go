package bgp_test

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
)

const suite = "test/bgp" // in skip messages

// Address ranges only this suite uses, inside its own namespaces.
var (
	fabricNet  = netip.MustParsePrefix("10.73.0.0/24")   // nodes .1, .2, ...; routers from .254 down
	uplinksNet = netip.MustParsePrefix("10.73.255.0/24") // nodes' /30s to their stubs
)

const poolCIDR = "10.74.0.0/16"

// cluster is the datastore, the binaries and the fabric the nodes share.
type cluster struct {
	id     string
	env    *k8senv.Env
	binDir string
	store  datastore.Store
	f      *fabric.Cluster
}

// newCluster builds the binaries and makes the fabric; everything is removed when t
// ends, and on failure the tabby-node logs are printed.
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
	cnitool, err := netnode.FindCnitool(ctx, "")
	netnode.Require(t, suite, "cnitool (hack/cnitool.sh)", err)
	start := time.Now()
	if err := fabric.BuildBinaries(ctx, c.binDir); err != nil {
		t.Fatalf("build the binaries: %v", err)
	}
	t.Logf("built tabby-cni, tabby-node and tabbyctl in %v", time.Since(start).Round(time.Millisecond))
	if c.store, err = datastore.NewKube(env.Config); err != nil {
		t.Fatal(err)
	}
	c.f, err = fabric.New(ctx, fabric.Options{Prefix: "tabbyb-" + id, Subnet: fabricNet, Uplinks: uplinksNet,
		Kubeconfig: env.Kubeconfig, APIServer: env.Config.Host, Store: c.store, BinDir: c.binDir,
		Cnitool: cnitool, Dir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.f.Close(); err != nil {
			t.Logf("teardown: %v", err)
		}
	})
	return c
}

// tnode is a node of the cluster.
type tnode struct{ *fabric.Node }

// addNode makes node i (see fabric.Cluster.AddNode); its tabby-node log is printed
// when t fails.
func (c *cluster) addNode(t *testing.T, i int) *tnode {
	t.Helper()
	n, err := c.f.AddNode(netnode.Context(t, 2*time.Minute), i)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tabby-node log of %s (last 120 lines):\n%s", n.Name, n.LogTail(120))
		}
	})
	return &tnode{n}
}

// start runs tabby-node on the node (stopped with the cluster).
func (tn *tnode) start(t *testing.T, args ...string) {
	t.Helper()
	if err := tn.Start(args...); err != nil {
		t.Fatal(err)
	}
}

// stop sends tabby-node SIGTERM and waits for a clean exit.
func (tn *tnode) stop(t *testing.T) {
	t.Helper()
	if err := tn.Stop(); err != nil {
		t.Fatal(err)
	}
}

// addPod wires a pod on the node (see fabric.Node.AddPod).
func (tn *tnode) addPod(t *testing.T, ns, name string) *fabric.Pod {
	t.Helper()
	p, err := tn.AddPod(netnode.Context(t, time.Minute), ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return p
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
// its stdout.
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
