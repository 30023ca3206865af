package helm

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/podlabels"
	"github.com/tabbynet/tabby/test/k8senv"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

var (
	installOnce sync.Once
	installErr  error
	installed   []*unstructured.Unstructured // what the release's manifest holds
)

// install installs the chart once per test binary with testdata/peers-vm.yaml (every
// feature on) and a Secret holding the BGP password it names.
func install(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	helmBin(t) // first: it skips under -short, where no control plane starts
	k8senv.Require(t, env)
	installOnce.Do(func() { installed, installErr = doInstall(t) })
	if installErr != nil {
		t.Fatal(installErr)
	}
	return installed
}

func doInstall(t *testing.T) ([]*unstructured.Unstructured, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	out, err := helmCmd(t, ctx, "install", release, chartDir, "--kubeconfig", env.Kubeconfig,
		"--namespace", namespace, "--create-namespace", "--values", valuesFiles[0], "--timeout", "2m")
	if err != nil {
		return nil, fmt.Errorf("helm install: %w\n%s", err, out)
	}
	t.Logf("helm install took %v", time.Since(start).Round(time.Millisecond))
	if i := strings.Index(out, "NOTES:"); i >= 0 {
		t.Logf("helm install %s", out[i:])
	}
	if !strings.Contains(out, "tabbyctl node status") {
		return nil, fmt.Errorf("helm install printed no NOTES with what to check next:\n%s", out)
	}
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		return nil, err
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-passwords", Namespace: secretNS},
		StringData: map[string]string{"tor-a": "s3cret"}}
	if _, err := cs.CoreV1().Secrets(secretNS).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("create the BGP password secret: %w", err)
	}
	manifest, err := helmCmd(t, ctx, "get", "manifest", release, "--kubeconfig", env.Kubeconfig, "--namespace", namespace)
	if err != nil {
		return nil, err
	}
	return parseManifests(manifest)
}

// TestInstall installs the chart on a real API server and checks that every object it
// renders exists, and the CRDs too.
func TestInstall(t *testing.T) {
	objs := install(t)
	// The release holds exactly what the chart renders for the same values.
	rendered, err := parseManifests(mustRender(t, valuesFiles...))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := objectKeys(objs), objectKeys(rendered); strings.Join(a, "\n") != strings.Join(b, "\n") {
		t.Fatalf("the release's manifest holds\n%s\nbut the chart renders\n%s", strings.Join(a, "\n"), strings.Join(b, "\n"))
	}
	dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	dyn, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Errorf("%s %s: no API for it: %v", gvk.Kind, o.GetName(), err)
			continue
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if o.GetNamespace() != "" {
			ri = dyn.Resource(m.Resource).Namespace(o.GetNamespace())
		}
		got, err := ri.Get(ctx, o.GetName(), metav1.GetOptions{})
		if err != nil {
			t.Errorf("%s %s/%s: %v", gvk.Kind, o.GetNamespace(), o.GetName(), err)
			continue
		}
		if got.GetLabels()["app.kubernetes.io/managed-by"] != "Helm" {
			t.Errorf("%s %s: not labelled as managed by Helm: %v", gvk.Kind, o.GetName(), got.GetLabels())
		}
	}
	// helm installs crds/ before the templates.
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	files, err := filepath.Glob(filepath.Join(chartDir, "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in the chart: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		crds, err := parseManifests(string(b))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, c := range crds {
			if _, err := dyn.Resource(crdGVR).Get(ctx, c.GetName(), metav1.GetOptions{}); err != nil {
				t.Errorf("CRD %s (%s): %v", c.GetName(), filepath.Base(f), err)
			}
		}
	}
	t.Logf("%d objects and %d CRD files installed", len(objs), len(files))
}

// objectKeys lists kind namespace/name of each object, sorted.
func objectKeys(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind()+" "+o.GetNamespace()+"/"+o.GetName())
	}
	sort.Strings(out)
	return out
}

// as returns a client configuration that impersonates the chart's ServiceAccount sa,
// with the groups the API server gives a ServiceAccount token.
func as(sa string) *rest.Config {
	c := rest.CopyConfig(env.Config)
	c.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + namespace + ":" + sa,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
	return c
}

// allowed asks the API server, as p.sa, whether p is allowed.
func allowed(ctx context.Context, p perm) (bool, string, error) {
	cs, err := kubernetes.NewForConfig(as(p.sa))
	if err != nil {
		return false, "", err
	}
	r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authv1.SelfSubjectAccessReview{
		Spec: authv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authv1.ResourceAttributes{
			Namespace: p.ns, Verb: p.verb, Group: p.group, Resource: p.resource,
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("access review of %v: %w", p, err)
	}
	return r.Status.Allowed, r.Status.Reason, nil
}

// TestRBAC asks the API server, as each ServiceAccount of the installed chart, about
// every permission in the list (all allowed: every feature is on in the install) and
// the denied ones.
func TestRBAC(t *testing.T) {
	install(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, p := range needed {
		ok, _, err := allowed(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Errorf("%v is denied, but %s needs it", p, p.why)
		}
	}
	for _, p := range denied {
		ok, reason, err := allowed(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			t.Errorf("%v is allowed (%s); it must not be", p, reason)
		}
	}
}

// kindOf finds the datastore kind of group/resource.
func kindOf(t *testing.T, group, resource string) datastore.Kind {
	t.Helper()
	for _, k := range append(append([]datastore.Kind{}, datastore.TabbyKinds...), datastore.CoreKinds...) {
		if k.GVR.Group == group && k.GVR.Resource == resource {
			return k
		}
	}
	t.Fatalf("no datastore kind for %s/%s", group, resource)
	return datastore.Kind{}
}

// TestDatastoreAsServiceAccounts performs what tabby-node and tabby-cni do with the
// datastore, through datastore.NewKube as their ServiceAccounts: every watch, the
// node's registration and BGP status, IPAM for a pod (as tabby-cni) and for a VM and
// the empty-block GC (as tabby-node). A Forbidden anywhere fails.
func TestDatastoreAsServiceAccounts(t *testing.T) {
	install(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	nodeStore, err := datastore.NewKube(as(saNode))
	if err != nil {
		t.Fatal(err)
	}
	cniStore, err := datastore.NewKube(as(saCNI))
	if err != nil {
		t.Fatal(err)
	}

	// Every watch tabby-node starts (the list's watch entries) syncs.
	for _, p := range needed {
		if p.sa != saNode || p.verb != "watch" {
			continue
		}
		k := kindOf(t, p.group, p.resource)
		if err := watchSynced(ctx, nodeStore, k, p.ns); err != nil {
			t.Errorf("%v: %v", p, err)
		}
	}

	const node = "helm-test-node"
	runNodeOps(ctx, t, nodeStore, node)
	runIPAM(ctx, t, nodeStore, cniStore, node)
	runPodLabels(ctx, t, nodeStore, cniStore, node)

	// tabby-cni reads the pod it wires: NotFound here, not Forbidden.
	if _, err := datastore.Get[*corev1.Pod](ctx, cniStore, "default", "no-such-pod"); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("tabby-cni: get pod: %v, want not found", err)
	}
	// And nothing more: the API server refuses what the code never does.
	if _, err := datastore.List[*corev1.Pod](ctx, cniStore, datastore.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("tabby-cni: list pods: %v, want forbidden", err)
	}
	secrets := kindOf(t, "", "secrets")
	if _, err := nodeStore.List(ctx, secrets, datastore.ListOptions{Namespace: "kube-system"}); !apierrors.IsForbidden(err) {
		t.Errorf("tabby-node: list secrets in kube-system: %v, want forbidden", err)
	}
	if _, err := nodeStore.Get(ctx, secrets, secretNS, "bgp-passwords"); !apierrors.IsForbidden(err) {
		t.Errorf("tabby-node: get a secret (it only lists and watches): %v, want forbidden", err)
	}
	if err := nodeStore.Delete(ctx, kindOf(t, "tabby.dev", "ippools"), "", "pods", datastore.DeleteOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("tabby-node: delete an IPPool: %v, want forbidden", err)
	}
}

// watchSynced starts a watch of k (in ns) and waits for its Synced event.
func watchSynced(ctx context.Context, s datastore.Store, k datastore.Kind, ns string) error {
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ch, err := s.Watch(wctx, k, datastore.WatchOptions{ListOptions: datastore.ListOptions{Namespace: ns}})
	if err != nil {
		return err
	}
	for ev := range ch {
		if ev.Type == datastore.Synced {
			return nil
		}
	}
	return fmt.Errorf("watch %s ended before it synced: %w", k.Name, wctx.Err())
}

// runNodeOps registers the node (agent.Register) and writes its BGP status as
// bgp/controller/status.go does, as tabby-node.
func runNodeOps(ctx context.Context, t *testing.T, s datastore.Store, node string) {
	t.Helper()
	for _, ip := range []string{"10.90.0.1/24", "10.90.0.2/24"} { // create, then update
		reg := agent.Registration{Name: node, IPv4: netip.MustParsePrefix(ip)}
		if _, err := agent.Register(ctx, s, reg, zap.NewNop()); err != nil {
			t.Errorf("tabby-node: register with %s: %v", ip, err)
		}
	}
	ns := &v1.NodeStatus{ObjectMeta: metav1.ObjectMeta{Name: node}, Spec: v1.NodeStatusSpec{Node: node}}
	if _, err := datastore.Create(ctx, s, ns); err != nil {
		t.Errorf("tabby-node: create NodeStatus: %v", err)
		return
	}
	cur, err := datastore.Get[*v1.NodeStatus](ctx, s, "", node)
	if err != nil {
		t.Errorf("tabby-node: get NodeStatus: %v", err)
		return
	}
	cur.Status.LastUpdated = metav1.Now()
	if _, err := datastore.Update(ctx, s, cur); err != nil {
		t.Errorf("tabby-node: update NodeStatus: %v", err)
	}
}

// runPodLabels runs tabby-node's pod label controller as its ServiceAccount: a pod of
// the node (written by the admin) and its endpoint (as tabby-cni); a new pod label
// reaches the endpoint.
func runPodLabels(ctx context.Context, t *testing.T, nodeStore, cniStore datastore.Store, node string) {
	t.Helper()
	admin, err := datastore.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "labelled", Namespace: "default", Labels: map[string]string{"app": "a"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "none"}}}}
	created, err := datastore.Create(ctx, admin, pod)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = admin.Delete(context.Background(), datastore.KindPod, "default", "labelled", datastore.DeleteOptions{})
	})
	wep := &v1.WorkloadEndpoint{ObjectMeta: metav1.ObjectMeta{Name: node + "-k8s-labelled-eth0", Namespace: "default",
		Labels: podlabels.Labels(created)},
		Spec: v1.WorkloadEndpointSpec{Orchestrator: v1.OrchestratorPod, Workload: "labelled", Node: node, InterfaceName: "cali0helm0",
			IPNetworks: []string{"10.96.7.7/32"}}}
	if _, err := datastore.Create(ctx, cniStore, wep); err != nil {
		t.Fatal(err)
	}
	c, err := podlabels.New(podlabels.Config{NodeName: node, Store: nodeStore, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(cctx) }()
	defer func() { stop(); <-done }()
	created.Labels["tier"] = "gold"
	if _, err := datastore.Update(ctx, admin, created); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		w, err := datastore.Get[*v1.WorkloadEndpoint](ctx, admin, "default", wep.Name)
		if err == nil && w.Labels["tier"] == "gold" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tabby-node's pod label controller, as its ServiceAccount: endpoint labels %v, %v; want tier=gold (stats %+v)",
				w.GetLabels(), err, c.Stats())
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
