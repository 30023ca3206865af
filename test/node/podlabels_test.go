package node_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/cni"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ebpf/ebpftest"
	"github.com/tabbynet/tabby/podlabels"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
	corev1 "k8s.io/api/core/v1"
)

// Address ranges only TestPodLabelsFollow uses, inside its own namespaces.
var (
	plPool    = "10.93.0.0/20"
	plFabric  = netip.MustParsePrefix("10.93.254.0/24")
	plUplinks = netip.MustParsePrefix("10.93.255.0/24")
)

// TestPodLabelsFollow: a pod wired by tabby-cni on a node running tabby-node (policy
// on) is labelled through the API; its WorkloadEndpoint takes the label, a
// NetworkPolicy selecting that label then drops the pings it let through before, and
// removing the label lets them through again.
func TestPodLabelsFollow(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: root, a kube-apiserver, cnitool, BPF and network namespaces")
	}
	k8senv.Require(t, env)
	netnode.RequireNetns(t, suite, "ip", "ping")
	ebpftest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	fn := startFabricNode(ctx, t, fabricSetup{prefix: "tpl", pool: plPool, subnet: plFabric, uplinks: plUplinks})
	store, ns, node, api := fn.store, fn.ns, fn.node, fn.api

	server, err := node.AddPodSpec(ctx, fabric.PodSpec{Namespace: ns, Name: "server", Labels: map[string]string{"app": "server"}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := node.AddPodSpec(ctx, fabric.PodSpec{Namespace: ns, Name: "client", Labels: map[string]string{"app": "client"}})
	if err != nil {
		t.Fatal(err)
	}
	wepName := cni.WEPName(node.Name, server.Name, "eth0")
	pingOK := func() error { return client.Ping(ctx, server.IP, 1) }
	pingDropped := func() error {
		if err := client.Ping(ctx, server.IP, 1); err == nil {
			return errors.New("the ping was answered")
		}
		return nil
	}
	waitFor(t, "client pings server", 30*time.Second, pingOK)

	// Deny every ingress to pods labelled role=locked: none is yet.
	np := denyIngress(ctx, t, store, ns, "lock", "role", "locked")
	waitFor(t, "the policy programmed", 30*time.Second, func() error {
		ps, err := api.Policy(ctx)
		if err != nil {
			return err
		}
		if !ps.Programs("K8sNetworkPolicy", ns, np.Name, np.ResourceVersion) || !ps.Programmed {
			return fmt.Errorf("not programmed from %s/%s@%s: %s", ns, np.Name, np.ResourceVersion, ps.Error)
		}
		return nil
	})
	if err := pingOK(); err != nil {
		t.Fatalf("the policy selects no pod yet, but: %v", err)
	}

	// kubectl label pod server role=locked
	start := time.Now()
	pod := setPodLabel(t, ctx, store, ns, server.Name, "role", "locked")
	waitWEPLabels(t, ctx, store, ns, wepName, podlabels.Labels(pod))
	t.Logf("the endpoint carries role=locked %v after the pod was labelled", time.Since(start).Round(time.Millisecond))
	waitFor(t, "pings to the locked server dropped", 30*time.Second, pingDropped)
	t.Logf("pings dropped %v after the pod was labelled (a probe waits up to 2 s for its answer)", time.Since(start).Round(time.Millisecond))

	// kubectl label pod server role-
	pod = setPodLabel(t, ctx, store, ns, server.Name, "role", "")
	waitWEPLabels(t, ctx, store, ns, wepName, podlabels.Labels(pod))
	waitFor(t, "pings to the unlocked server answered", 30*time.Second, pingOK)

	// The client's endpoint was never rewritten: it still has what tabby-cni wrote.
	cw, err := datastore.Get[*v1.WorkloadEndpoint](ctx, store, ns, cni.WEPName(node.Name, client.Name, "eth0"))
	if err != nil {
		t.Fatal(err)
	}
	if want := map[string]string{"app": "client", cni.LabelNamespace: ns, cni.LabelOrchestrator: cni.OrchestratorK8s}; !maps.Equal(cw.Labels, want) {
		t.Errorf("client endpoint labels %v, want %v", cw.Labels, want)
	}
}

// setPodLabel sets (value "" removes) one label of a Pod, retrying on a conflict, and
// returns the Pod as stored.
func setPodLabel(t *testing.T, ctx context.Context, s datastore.Store, ns, name, k, v string) *corev1.Pod {
	t.Helper()
	var out *corev1.Pod
	waitFor(t, "label pod "+name, 10*time.Second, func() error {
		p, err := datastore.Get[*corev1.Pod](ctx, s, ns, name)
		if err != nil {
			return err
		}
		if p.Labels == nil {
			p.Labels = map[string]string{}
		}
		if v == "" {
			delete(p.Labels, k)
		} else {
			p.Labels[k] = v
		}
		out, err = datastore.Update(ctx, s, p)
		return err
	})
	return out
}

// waitWEPLabels waits until the WorkloadEndpoint's labels are exactly want.
func waitWEPLabels(t *testing.T, ctx context.Context, s datastore.Store, ns, name string, want map[string]string) {
	t.Helper()
	waitFor(t, "endpoint "+name+" labels", 10*time.Second, func() error {
		w, err := datastore.Get[*v1.WorkloadEndpoint](ctx, s, ns, name)
		if err != nil {
			return err
		}
		if !maps.Equal(w.Labels, want) {
			return fmt.Errorf("labels %v, want %v", w.Labels, want)
		}
		return nil
	})
}
