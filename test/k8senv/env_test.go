package k8senv

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
)

var env *Env

func TestMain(m *testing.M) {
	Main(m, Options{CRDDir: "testdata/crds"}, &env)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestCRDEstablished(t *testing.T) {
	Require(t, env)
	cs, err := apiextensionsclient.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	crd, err := cs.ApiextensionsV1().CustomResourceDefinitions().Get(testCtx(t), "widgets.k8senvtest.tabby.dev", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := crdStatus(crd); !ok {
		t.Fatalf("crd not established: %+v", crd.Status.Conditions)
	}
}

func TestDynamicCreateGet(t *testing.T) {
	Require(t, env)
	ctx := testCtx(t)
	dc, err := dynamic.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	gvr := schema.GroupVersionResource{Group: "k8senvtest.tabby.dev", Version: "v1", Resource: "widgets"}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8senvtest.tabby.dev/v1",
		"kind":       "Widget",
		"metadata":   map[string]any{"name": "blue-one"},
		"spec":       map[string]any{"color": "blue"},
	}}
	if _, err := dc.Resource(gvr).Create(ctx, obj, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := dc.Resource(gvr).Get(ctx, "blue-one", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	color, _, _ := unstructured.NestedString(got.Object, "spec", "color")
	if color != "blue" {
		t.Fatalf("spec.color = %q, want blue", color)
	}
	out, _, err := env.Kubectl(ctx, "get", "widgets", "blue-one", "-o", "jsonpath={.spec.color}")
	if err != nil || out != "blue" {
		t.Fatalf("kubectl get widget: %q, %v", out, err)
	}
}

func TestDefaultServiceAccount(t *testing.T) {
	Require(t, env)
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts("default").Get(testCtx(t), "default", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestKubectlVersion(t *testing.T) {
	Require(t, env)
	out, _, err := env.Kubectl(testCtx(t), "version", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var v struct {
		ClientVersion struct{ GitVersion string } `json:"clientVersion"`
		ServerVersion struct{ GitVersion string } `json:"serverVersion"`
	}
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("parse %q: %v", out, err)
	}
	if v.ServerVersion.GitVersion != "v1.32.13" {
		t.Fatalf("server gitVersion = %q, want v1.32.13 (output %s)", v.ServerVersion.GitVersion, out)
	}
	if v.ClientVersion.GitVersion != "v1.32.13" {
		t.Errorf("client gitVersion = %q, want v1.32.13", v.ClientVersion.GitVersion)
	}
}

func TestKubectlError(t *testing.T) {
	Require(t, env)
	_, stderr, err := env.Kubectl(testCtx(t), "get", "nosuchkind")
	if err == nil || stderr == "" {
		t.Fatalf("want an error with stderr, got err=%v stderr=%q", err, stderr)
	}
}

// TestSecondEnv starts another Env next to the package one and checks that
// Stop leaves neither processes nor the temp dir behind.
func TestSecondEnv(t *testing.T) {
	Require(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	t0 := time.Now()
	e2, err := Start(ctx, Options{Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second Start took %v", time.Since(t0))
	stopped := false
	defer func() {
		if !stopped {
			e2.Stop()
		}
	}()
	if e2.Config.Host == env.Config.Host || e2.dir == env.dir {
		t.Fatalf("second env shares host %s or dir %s", e2.Config.Host, e2.dir)
	}
	for _, p := range []int{e2.apiPort, e2.etcdPorts[0], e2.etcdPorts[1]} {
		if p == env.apiPort || p == env.etcdPorts[0] || p == env.etcdPorts[1] {
			t.Fatalf("port %d used by both envs", p)
		}
	}
	cs, err := kubernetes.NewForConfig(e2.Config)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	}
	// The second env has no CRDs: the first one's must not leak into it.
	if _, _, err := e2.Kubectl(ctx, "get", "widgets"); err == nil {
		t.Fatal("second env serves widgets, want no CRDs")
	}
	var pids []int
	for _, p := range e2.procs {
		pids = append(pids, p.cmd.Process.Pid)
	}
	if len(pids) != 2 {
		t.Fatalf("got %d processes, want 2", len(pids))
	}
	stopped = true
	if err := e2.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := e2.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("pid %d still exists after Stop (kill 0: %v)", pid, err)
		}
	}
	if _, err := os.Stat(e2.dir); !os.IsNotExist(err) {
		t.Errorf("temp dir %s still exists after Stop (%v)", e2.dir, err)
	}
	// The package env is unaffected.
	if _, _, err := env.Kubectl(ctx, "get", "ns", "default"); err != nil {
		t.Fatal(err)
	}
}

func TestStartFailureCleansUp(t *testing.T) {
	Require(t, env)
	before, _ := filepath.Glob(filepath.Join(os.TempDir(), "tabby-k8senv-*"))
	_, err := Start(testCtx(t), Options{CRDDir: "testdata/no-such-dir"})
	if err == nil || !strings.Contains(err.Error(), "read crd dir") || !strings.Contains(err.Error(), "kube-apiserver.log (tail)") {
		t.Fatalf("want crd dir error with log tails, got %v", err)
	}
	after, _ := filepath.Glob(filepath.Join(os.TempDir(), "tabby-k8senv-*"))
	if len(after) > len(before) {
		t.Errorf("temp dirs before %v, after %v", before, after)
	}
}
