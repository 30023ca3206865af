package cni_test

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/vishvananda/netlink"
)

// Address ranges only this suite uses, inside its own namespaces.
const (
	uplinkNode = "10.66.255.1/30" // node side of the node<->stub veth
	uplinkStub = "10.66.255.2"    // the node's default gateway
)

const suite = "test/cni" // in skip messages

// harness is one test node: its namespaces, the plugin and cnitool, the datastore.
type harness struct {
	id         string // unique suffix of every name
	n          *netnode.Node
	node       string // node name = node namespace name
	binDir     string // CNI_PATH: tabby-cni
	confDir    string // NETCONFPATH
	kubeconfig string // reaches the apiserver from inside the node namespace
	cnitool    *netnode.Runtime
	store      datastore.Store
	alloc      *ipam.Allocator
	nodeH      *netlink.Handle
}

func newHarness(t *testing.T, env *k8senv.Env) *harness {
	t.Helper()
	k8senv.Require(t, env)
	netnode.RequireNetns(t, suite, "ip", "ping")
	id, err := netnode.RandomID()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{id: id, binDir: t.TempDir(), confDir: t.TempDir()}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	tool, err := netnode.FindCnitool(ctx, "")
	netnode.Require(t, suite, "cnitool (hack/cnitool.sh)", err)
	if err := netnode.Build(ctx, h.binDir, "github.com/tabbynet/tabby/cmd/tabby-cni"); err != nil {
		t.Fatalf("build tabby-cni: %v", err)
	}

	h.store, err = datastore.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	h.alloc = ipam.New(h.store, ipam.Options{CacheTTL: -1}) // the test changes pools: never cache them
	// The node namespace, with forwarding on and a default route via a stub namespace
	// so proxy ARP answers for 169.254.1.1, and the apiserver forwarded into it.
	h.n = netnode.NewT(t, ctx, netnode.Options{Prefix: "tabbyt-" + h.id, UplinkCIDR: uplinkNode, Gateway: uplinkStub})
	h.node, h.nodeH = h.n.Name, h.n.Handle
	h.cnitool = &netnode.Runtime{Node: h.n, Cnitool: tool, ConfDir: h.confDir, BinDir: h.binDir}
	h.kubeconfig = filepath.Join(t.TempDir(), "kubeconfig")
	if err := h.n.ForwardKubeconfig(env.Kubeconfig, env.Config.Host, h.kubeconfig); err != nil {
		t.Fatal(err)
	}
	return h
}

// unreachableKubeconfig is a kubeconfig whose apiserver address refuses connections.
func (h *harness) unreachableKubeconfig(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := netnode.WriteKubeconfig(env.Kubeconfig, "https://127.0.0.1:1", p); err != nil {
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
		// No tabby-node runs in these tests: nothing would report the policy enforced.
		"policy_setup_timeout": 0,
	}
}

// network writes a conflist for cnitool and returns the network's name.
func (h *harness) network(t *testing.T, tag, cniVersion, kubeconfig string) string {
	name := "tabbyt-" + h.id + "-" + tag
	h.cnitool.Network(t, name, cniVersion, h.pluginConf(kubeconfig))
	return name
}

// cnitoolContainerID is the container id cnitool derives from a namespace path.
func cnitoolContainerID(nsPath string) string {
	s := sha512.Sum512([]byte(nsPath))
	return fmt.Sprintf("cnitool-%x", s[:10])
}

// cnitoolRun runs cnitool inside the node namespace, as the runtime would.
func (h *harness) cnitoolRun(cmd, network, podNS, cniArgs string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return h.cnitool.Run(ctx, cmd, network, podNS, cniArgs)
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
	c := h.n.Command(ctx, filepath.Join(h.binDir, "tabby-cni"))
	netnsPath := ""
	if podNS != "" {
		netnsPath = netnode.NSPath(podNS)
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

// waitFor polls cond every 100ms until it succeeds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	netnode.WaitFor(t, what, timeout, 100*time.Millisecond, cond)
}

func ctxT(t *testing.T) context.Context { return netnode.Context(t, 30*time.Second) }
