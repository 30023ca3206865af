package ctl_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/ctl"
	"github.com/tabbynet/tabby/test/k8senv"
	"sigs.k8s.io/yaml"
)

// env is the real kube-apiserver with Tabby's CRDs, shared by the tests of this package
// that need one (nil when it could not start outside CI: those tests skip).
var env *k8senv.Env

func TestMain(m *testing.M) {
	k8senv.Main(m, k8senv.Options{CRDDir: "../charts/tabby/crds"}, &env)
}

// tabbyctlKube runs tabbyctl in-process against the real API server, as the binary
// would: kubeconfig from --kubeconfig, store from datastore.NewKube.
func tabbyctlKube(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	k8senv.Require(t, env)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	code := ctl.Run(append([]string{"--kubeconfig", env.Kubeconfig}, args...), ctl.Options{
		Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Context: ctx,
	})
	r := result{code: code, stdout: out.String(), stderr: errb.String()}
	t.Logf("tabbyctl %s -> %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	return r
}

func kubectl(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return env.Kubectl(ctx, args...)
}

const kubeGoodPool = `apiVersion: tabby.dev/v1
kind: IPPool
metadata:
  name: kube-good
spec:
  cidr: 10.200.0.0/16
  natOutgoing: true
`

const kubeBadPool = `apiVersion: tabby.dev/v1
kind: IPPool
metadata:
  name: kube-bad
spec:
  cidr: 10.0.0.1/24
`

func TestKubeApplyGetLabelDelete(t *testing.T) {
	r := tabbyctlKube(t, kubeGoodPool, "apply", "-f", "-")
	expectCode(t, r, 0)
	if r.stdout != "ippool.tabby.dev/kube-good created\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	t.Cleanup(func() { tabbyctlKube(t, "", "delete", "ippool", "kube-good", "--ignore-not-found") })

	r = tabbyctlKube(t, "", "get", "ippool", "kube-good", "-o", "yaml")
	expectCode(t, r, 0)
	var p v1.IPPool
	if err := yaml.UnmarshalStrict([]byte(r.stdout), &p); err != nil {
		t.Fatalf("get -o yaml is not one IPPool: %v", err)
	}
	if p.APIVersion != "tabby.dev/v1" || p.Kind != "IPPool" || p.Name != "kube-good" ||
		p.Spec.CIDR != "10.200.0.0/16" || !p.Spec.NATOutgoing || p.Spec.BlockSize != 26 || p.Spec.NodeSelector != "all()" {
		t.Errorf("got %+v", p)
	}
	if p.UID == "" || p.ResourceVersion == "" || len(p.ManagedFields) != 0 {
		t.Errorf("metadata %+v", p.ObjectMeta)
	}

	// A second apply is an update of the stored object.
	r = tabbyctlKube(t, strings.Replace(kubeGoodPool, "natOutgoing: true", "natOutgoing: false", 1), "apply", "-f", "-")
	expectCode(t, r, 0)
	if r.stdout != "ippool.tabby.dev/kube-good configured\n" {
		t.Errorf("stdout %q", r.stdout)
	}
	r = tabbyctlKube(t, "", "get", "pools", "-o", "wide")
	expectCode(t, r, 0)
	expectContains(t, "stdout", r.stdout, "kube-good", "10.200.0.0/16", "false")

	expectCode(t, tabbyctlKube(t, "", "label", "pool", "kube-good", "zone=a"), 0)
	expectCode(t, tabbyctlKube(t, "", "label", "pool", "kube-good", "zone=b"), 1)
	out, _, err := kubectl(t, "get", "ippools", "kube-good", "-o", "jsonpath={.metadata.labels.zone}")
	if err != nil || out != "a" {
		t.Errorf("kubectl sees zone %q, %v", out, err)
	}

	expectCode(t, tabbyctlKube(t, "", "create", "-f", "-"), 1) // nothing on stdin
	r = tabbyctlKube(t, kubeGoodPool, "create", "-f", "-")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, `IPPool "kube-good" already exists`)

	r = tabbyctlKube(t, "", "delete", "ippool", "kube-good")
	expectCode(t, r, 0)
	expectCode(t, tabbyctlKube(t, "", "get", "ippool", "kube-good"), 1)
}

func TestKubeBadPoolIsRejected(t *testing.T) {
	r := tabbyctlKube(t, kubeBadPool, "apply", "-f", "-")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "spec.cidr", "10.0.0.1/24")

	out, _, err := kubectl(t, "get", "ippools", "-o", "name")
	if err != nil {
		t.Fatalf("kubectl get ippools: %v", err)
	}
	if strings.Contains(out, "kube-bad") {
		t.Errorf("the bad pool was written:\n%s", out)
	}

	// Straight to the API server with kubectl: the CRD schema refuses it too.
	f := writeFile(t, "bad.yaml", kubeBadPool)
	_, stderr, err := kubectl(t, "apply", "-f", f)
	if err == nil {
		t.Fatal("kubectl apply of the bad pool succeeded")
	}
	expectContains(t, "kubectl stderr", stderr, "spec.cidr")
	if out, _, _ := kubectl(t, "get", "ippools", "-o", "name"); strings.Contains(out, "kube-bad") {
		t.Errorf("kubectl wrote the bad pool:\n%s", out)
	}
}

func TestKubeVersion(t *testing.T) {
	r := tabbyctlKube(t, "", "version")
	expectCode(t, r, 0)
	expectContains(t, "stdout", r.stdout, "Client Version: "+ctl.Version+"\n", "Server Version: v1.")
}

func TestKubeNamespacedKinds(t *testing.T) {
	wep := `apiVersion: tabby.dev/v1
kind: WorkloadEndpoint
metadata: {name: kube-wep}
spec: {orchestrator: pod, workload: w, node: n1, interfaceName: cali1}
`
	expectCode(t, tabbyctlKube(t, wep, "apply", "-f", "-"), 0)
	t.Cleanup(func() { tabbyctlKube(t, "", "delete", "wep", "kube-wep", "--ignore-not-found") })
	r := tabbyctlKube(t, "", "get", "weps", "-A")
	expectCode(t, r, 0)
	expectContains(t, "stdout", r.stdout, "NAMESPACE", "default", "kube-wep")
	out, _, err := kubectl(t, "get", "workloadendpoints.tabby.dev", "-n", "default", "-o", "name")
	if err != nil || !strings.Contains(out, "kube-wep") {
		t.Errorf("kubectl: %q, %v", out, err)
	}
}
