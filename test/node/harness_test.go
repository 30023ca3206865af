package node_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Address ranges only this suite uses, inside its own namespaces.
const (
	uplinkNode = "10.72.255.1/30" // node side of the node<->stub veth: the node's address
	uplinkStub = "10.72.255.2"    // the node's default gateway
	poolCIDR   = "10.71.0.0/16"
)

const suite = "test/node" // in skip messages

// harness is one test node: its namespaces, the binaries, the datastore.
type harness struct {
	id         string // unique suffix of every name
	n          *netnode.Node
	node       string // node name = node namespace name
	binDir     string // tabby-cni (CNI_PATH), tabby-node, tabbyctl
	confDir    string // NETCONFPATH
	kubeconfig string // reaches the apiserver from inside the node namespace
	cnitool    *netnode.Runtime
	store      datastore.Store
	root       *testing.T // the top-level test: agents live until it ends
}

func newHarness(t *testing.T, env *k8senv.Env) *harness {
	t.Helper()
	k8senv.Require(t, env)
	netnode.RequireNetns(t, suite, "ip", "ping")
	id, err := netnode.RandomID()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{id: id, binDir: t.TempDir(), confDir: t.TempDir(), root: t}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tool, err := netnode.FindCnitool(ctx, "")
	netnode.Require(t, suite, "cnitool (hack/cnitool.sh)", err)
	start := time.Now()
	if err := netnode.Build(ctx, h.binDir, "github.com/tabbynet/tabby/cmd/tabby-cni",
		"github.com/tabbynet/tabby/cmd/tabby-node", "github.com/tabbynet/tabby/cmd/tabbyctl"); err != nil {
		t.Fatalf("build the binaries: %v", err)
	}
	t.Logf("built tabby-cni, tabby-node and tabbyctl in %v", time.Since(start).Round(time.Millisecond))

	h.store, err = datastore.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	// The node namespace, with forwarding on and a default route via a stub namespace
	// so proxy ARP answers for 169.254.1.1, and the apiserver forwarded into it.
	h.n = netnode.NewT(t, ctx, netnode.Options{Prefix: "tabbyn-" + h.id, UplinkCIDR: uplinkNode, Gateway: uplinkStub})
	h.node = h.n.Name
	h.cnitool = &netnode.Runtime{Node: h.n, Cnitool: tool, ConfDir: h.confDir, BinDir: h.binDir}
	h.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := h.n.ForwardKubeconfig(env.Kubeconfig, env.Config.Host, h.kubeconfig); err != nil {
		t.Fatal(err)
	}
	return h
}

// network writes a conflist for cnitool and returns the network's name.
func (h *harness) network(t *testing.T, agentSocket string) string {
	name := "tabbyn-" + h.id
	conf := map[string]any{
		"type": "tabby-cni", "kubeconfig": h.kubeconfig, "nodename": h.node, "mtu": 1500,
		"log_level": "debug", "log_file": filepath.Join(h.confDir, "cni.log"), "datastore_timeout": "10s",
		"ipam": map[string]any{"type": "tabby-ipam"}, "agent_socket": agentSocket,
	}
	h.cnitool.Network(t, name, "1.1.0", conf)
	return name
}

// cnitoolRun runs cnitool inside the node namespace, as the runtime would.
func (h *harness) cnitoolRun(cmd, network, podNS, cniArgs string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return h.cnitool.Run(ctx, cmd, network, podNS, cniArgs)
}

// waitFor polls cond every 50ms until it succeeds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	netnode.WaitFor(t, what, timeout, 50*time.Millisecond, cond)
}

func ctxT(t *testing.T) context.Context { return netnode.Context(t, 30*time.Second) }

func (h *harness) createNamespace(t *testing.T, name string) {
	t.Helper()
	netnode.CreateNamespace(t, h.store, name)
}

func (h *harness) createPool(t *testing.T, name, cidr string) {
	t.Helper()
	netnode.CreatePool(t, h.store, name, cidr, 26)
}

func (h *harness) createPod(t *testing.T, namespace, name string) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: map[string]string{"app": "ping"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}}},
	}
	netnode.Create(t, h.store, pod)
}
