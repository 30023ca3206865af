package policy

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/cni"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ebpf/ebpftest"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/probe"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const suite = "test/policy" // in skip messages

// Address ranges only this suite uses, inside its own namespaces (podNet: cases_test.go).
var (
	fabricNet  = netip.MustParsePrefix("10.78.0.0/24")
	uplinksNet = netip.MustParsePrefix("10.78.255.0/24")
)

// policyKind is how the agent's local API names a Kubernetes NetworkPolicy.
const policyKind = "K8sNetworkPolicy"

// Timeouts of the agent's reports.
const (
	agentTimeout  = 90 * time.Second // tabby-node registered with policy on
	policyTimeout = 30 * time.Second // a step's policies programmed, or gone
)

// world is the node, its pods and the probes.
type world struct {
	store  datastore.Store
	node   *fabric.Node
	api    *localapi.Client
	pods   map[string]*pod // by "ns/name"
	prober *probe.Prober
}

// pod is a recorded pod made for real.
type pod struct {
	*fabric.Pod
	Recorded string     // its recorded address
	Addr     netip.Addr // remapped, and what CNI gave it
}

// servePorts and the protocols every pod serves, as the recorded pods do.
var servePorts = []uint16{80, 81}

// containerPorts are serve-<port>-<proto> for 80 and 81 on tcp, udp and sctp.
func containerPorts() []corev1.ContainerPort {
	var out []corev1.ContainerPort
	for _, port := range servePorts {
		for _, pr := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP} {
			out = append(out, corev1.ContainerPort{Name: fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(pr))),
				ContainerPort: int32(port), Protocol: pr})
		}
	}
	return out
}

// newWorld builds the binaries, starts tabby-node with policy on a fabric node, and
// makes the recorded namespaces and pods with servers in them. Everything goes when t
// ends.
func newWorld(t *testing.T, env *k8senv.Env, first *caseStep) *world {
	t.Helper()
	k8senv.Require(t, env)
	netnode.RequireNetns(t, suite, "ip")
	ebpftest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cnitool, err := netnode.FindCnitool(ctx, "")
	netnode.Require(t, suite, "cnitool (hack/cnitool.sh)", err)
	id, err := netnode.RandomID()
	if err != nil {
		t.Fatal(err)
	}
	binDir := t.TempDir()
	start := time.Now()
	if err := fabric.BuildBinaries(ctx, binDir); err != nil {
		t.Fatalf("build the binaries: %v", err)
	}
	t.Logf("built tabby-cni, tabby-node and tabbyctl in %v", time.Since(start).Round(time.Millisecond))
	w := &world{pods: map[string]*pod{}}
	if w.store, err = datastore.NewKube(env.Config); err != nil {
		t.Fatal(err)
	}
	// Made before the cluster, so removed after it (and its pods).
	for name, labels := range first.Namespaces {
		w.create(t, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})
	}
	w.create(t, &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "tpol-" + id}, Spec: v1.IPPoolSpec{CIDR: podNet.String(), BlockSize: 26}})

	c, err := fabric.New(ctx, fabric.Options{Prefix: "tpol-" + id, Subnet: fabricNet, Uplinks: uplinksNet,
		Kubeconfig: env.Kubeconfig, APIServer: env.Config.Host, Store: w.store, BinDir: binDir,
		Cnitool: cnitool, Dir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})

	if w.node, err = c.AddNode(ctx, 0); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("tabby-node log (last 80 lines):\n%s", w.node.LogTail(80))
		}
	})
	if err := w.node.Start("--policy=true"); err != nil {
		t.Fatal(err)
	}
	w.api = localapi.NewClient(w.node.Socket, 5*time.Second)
	if err := netnode.Poll(ctx, agentTimeout, 50*time.Millisecond, func() error {
		st, err := w.api.Status(ctx)
		if err != nil {
			return err
		}
		ps, err := w.api.Policy(ctx)
		if err != nil {
			return err
		}
		if !st.Registered || !ps.Enabled || !ps.Programmed {
			return fmt.Errorf("registered %v, policy enabled %v, programmed %v (%s)", st.Registered, ps.Enabled, ps.Programmed, ps.Error)
		}
		return nil
	}); err != nil {
		t.Fatalf("tabby-node with policy on: not ready within %v: %v\n%s", agentTimeout, err, w.node.LogTail(40))
	}

	start = time.Now()
	for _, rp := range first.Pods {
		addr, err := remapAddr(rp.IP)
		if err != nil {
			t.Fatal(err)
		}
		fp, err := w.node.AddPodSpec(ctx, fabric.PodSpec{Namespace: rp.Namespace, Name: rp.Name, Labels: rp.Labels,
			Annotations: map[string]string{cni.AnnotationIPAddrs: fmt.Sprintf(`["%s"]`, addr)},
			Ports:       containerPorts(), NetnsTag: rp.Namespace + "-" + rp.Name})
		if err != nil {
			t.Fatal(err)
		}
		if fp.IP != addr {
			t.Fatalf("pod %s/%s got %s from CNI, want %s", rp.Namespace, rp.Name, fp.IP, addr)
		}
		if err := w.waitEnforced(ctx, rp.Namespace, addr); err != nil {
			t.Fatalf("pod %s/%s: %v", rp.Namespace, rp.Name, err)
		}
		s, err := probe.Serve(fp.Netns, servePorts...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Error(err)
			}
		})
		w.pods[rp.Namespace+"/"+rp.Name] = &pod{Pod: fp, Recorded: rp.IP, Addr: addr}
	}
	t.Logf("made %d pods through tabby-cni, with servers, in %v", len(first.Pods), time.Since(start).Round(time.Millisecond))
	w.prober = probe.NewProber()
	t.Cleanup(func() {
		if err := w.prober.Close(); err != nil {
			t.Error(err)
		}
	})
	return w
}

// waitEnforced waits until the agent reports the endpoint with addr in namespace
// enforced by policy.
func (w *world) waitEnforced(ctx context.Context, namespace string, addr netip.Addr) error {
	err := netnode.Poll(ctx, policyTimeout, 10*time.Millisecond, func() error {
		eps, err := w.api.Endpoints(ctx)
		if err != nil {
			return err
		}
		for _, e := range eps {
			if e.Namespace != namespace {
				continue
			}
			for _, ip := range e.IPs {
				if ip == addr.String() || ip == netip.PrefixFrom(addr, 32).String() {
					if !e.PolicyEnforced {
						return fmt.Errorf("endpoint %s: policy not enforced: %s", e.Name, e.PolicyMessage)
					}
					return nil
				}
			}
		}
		return fmt.Errorf("no endpoint with %s in %s yet", addr, namespace)
	})
	if err != nil {
		return fmt.Errorf("policy enforced on %s: not within %v: %w", addr, policyTimeout, err)
	}
	return nil
}

// create writes obj and deletes it when t ends.
func (w *world) create(t *testing.T, obj datastore.Object) {
	t.Helper()
	k, err := datastore.KindOf(obj)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := w.store.Create(ctx, obj); err != nil {
		t.Fatal(err)
	}
	ns, name := obj.GetNamespace(), obj.GetName()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := w.store.Delete(ctx, k, ns, name, datastore.DeleteOptions{}); err != nil && !errors.Is(err, datastore.ErrNotFound) {
			t.Errorf("teardown: delete %s %s/%s: %v", k.Name, ns, name, err)
		}
	})
}

// applied is a policy written for a step, at the version the apiserver gave it.
type applied struct {
	Namespace, Name, RV string
}

// applyPolicies creates the step's policies and waits until the agent reports its maps
// written from exactly those versions.
func (w *world) applyPolicies(ctx context.Context, nps []*networkingv1.NetworkPolicy) ([]applied, error) {
	var out []applied
	for _, np := range nps {
		got, err := datastore.Create(ctx, w.store, np)
		if err != nil {
			return out, fmt.Errorf("create policy %s/%s: %w", np.Namespace, np.Name, err)
		}
		out = append(out, applied{got.Namespace, got.Name, got.ResourceVersion})
	}
	return out, w.waitPolicy(ctx, "programmed", func(ps *localapi.PolicyStatus) bool {
		for _, a := range out {
			if !ps.Programs(policyKind, a.Namespace, a.Name, a.RV) {
				return false
			}
		}
		return true
	})
}

// deletePolicies deletes what applyPolicies made and waits until the agent reports
// the policies gone.
func (w *world) deletePolicies(ctx context.Context, as []applied) error {
	var errs []error
	for _, a := range as {
		if err := w.store.Delete(ctx, datastore.KindK8sNetworkPolicy, a.Namespace, a.Name, datastore.DeleteOptions{}); err != nil && !errors.Is(err, datastore.ErrNotFound) {
			errs = append(errs, fmt.Errorf("delete policy %s/%s: %w", a.Namespace, a.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return w.waitPolicy(ctx, "gone", func(ps *localapi.PolicyStatus) bool {
		for _, a := range as {
			if !ps.Programs(policyKind, a.Namespace, a.Name, "") {
				return false
			}
		}
		return true
	})
}

// waitPolicy polls the agent's GET /policy until it is programmed and cond holds.
func (w *world) waitPolicy(ctx context.Context, what string, cond func(*localapi.PolicyStatus) bool) error {
	var last *localapi.PolicyStatus
	err := netnode.Poll(ctx, policyTimeout, 10*time.Millisecond, func() error {
		ps, err := w.api.Policy(ctx)
		if err != nil {
			return err
		}
		last = ps
		if !ps.Programmed || !cond(ps) {
			return errors.New("not yet")
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("policies %s: not within %v: %w (last status %+v)", what, policyTimeout, err, last)
	}
	return nil
}
