package node_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/netnode"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// fabricSetup is a one-node test/fabric cluster of a test's own: its name prefix
// (with a random id added), its pool and address ranges, a Wrap for tabby-node and
// extra flags.
type fabricSetup struct {
	prefix          string
	pool            string
	subnet, uplinks netip.Prefix
	wrap            []string
	args            []string
}

// fabricNode is that cluster's node, its tabby-node ready with policy programmed, and
// the Kubernetes namespace (named like the cluster) its pods go in.
type fabricNode struct {
	store datastore.Store
	ns    string
	node  *fabric.Node
	api   *localapi.Client
	// binDir holds the tabby-node, tabby-cni and tabbyctl the test built.
	binDir string
}

// startFabricNode builds the binaries, makes the namespace, the pool and the cluster,
// starts tabby-node (policy on) and waits until it is registered, ready and its policy
// programmed. Everything is removed at the end of the test; tabby-node's log is
// printed when the test failed.
func startFabricNode(ctx context.Context, t *testing.T, s fabricSetup) *fabricNode {
	t.Helper()
	tool, err := netnode.FindCnitool(ctx, "")
	netnode.Require(t, suite, "cnitool (hack/cnitool.sh)", err)
	id, err := netnode.RandomID()
	if err != nil {
		t.Fatal(err)
	}
	binDir := t.TempDir()
	if err := fabric.BuildBinaries(ctx, binDir); err != nil {
		t.Fatalf("build the binaries: %v", err)
	}
	store, err := datastore.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	name := s.prefix + "-" + id
	// Made before the cluster, so removed after it and its pods.
	netnode.CreateNamespace(t, store, name)
	netnode.CreatePool(t, store, name, s.pool, 26)
	c, err := fabric.New(ctx, fabric.Options{Prefix: name, Subnet: s.subnet, Uplinks: s.uplinks,
		Kubeconfig: env.Kubeconfig, APIServer: env.Config.Host, Store: store, BinDir: binDir,
		Cnitool: tool, Dir: t.TempDir(), Logf: t.Logf, Wrap: s.wrap})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	node, err := c.AddNode(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tabby-node log (last 80 lines):\n%s", node.LogTail(80))
		}
	})
	if err := node.Start(append([]string{"--policy=true"}, s.args...)...); err != nil {
		t.Fatal(err)
	}
	api := localapi.NewClient(node.Socket, 5*time.Second)
	waitFor(t, "tabby-node ready with policy programmed", 90*time.Second, func() error {
		st, err := api.Status(ctx)
		if err != nil {
			return err
		}
		ps, err := api.Policy(ctx)
		if err != nil {
			return err
		}
		if !st.Registered || len(st.NotReady) > 0 || !ps.Programmed {
			return fmt.Errorf("registered %v, not ready %v, policy programmed %v (%s)", st.Registered, st.NotReady, ps.Programmed, ps.Error)
		}
		return nil
	})
	return &fabricNode{store: store, ns: name, node: node, api: api, binDir: binDir}
}

// denyIngress creates a Kubernetes NetworkPolicy that isolates (ingress) the pods of
// ns labelled key=value, removed at the end of the test.
func denyIngress(ctx context.Context, t *testing.T, store datastore.Store, ns, name, key, value string) *networkingv1.NetworkPolicy {
	t.Helper()
	np, err := datastore.Create(ctx, store, &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{key: value}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = store.Delete(context.Background(), datastore.KindK8sNetworkPolicy, ns, np.Name, datastore.DeleteOptions{})
	})
	return np
}
