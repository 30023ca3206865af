package cni_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tabbycni "github.com/tabbynet/tabby/cni"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/netnode"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// testRollbackAfterVeth makes the last step of ADD fail for real: the plugin runs as a
// ServiceAccount whose RBAC lets it read pods and do IPAM but not create
// WorkloadEndpoints. By then the address, the veth pair and the route exist; all of it
// must be undone.
func testRollbackAfterVeth(t *testing.T, h *harness, ns string) {
	kc := h.restrictedKubeconfig(t, ns)
	h.createPod(t, ns, "unlucky", nil)
	podNS := h.n.PodNS(t, "unlucky")
	cid := "tabbyt-" + h.id + "-unlucky"
	args := netnode.K8sArgs(ns, "unlucky")
	_, cerr, err := h.pluginRun("ADD", h.directConf("1.1.0", kc), cid, podNS, args)
	if err != nil || cerr == nil || cerr.Code != tabbycni.CodeAccessDenied || !strings.Contains(cerr.Details, "WorkloadEndpoint") {
		t.Fatalf("ADD without the right to write WorkloadEndpoints: %+v %v, want code %d about the WorkloadEndpoint",
			cerr, err, tabbycni.CodeAccessDenied)
	}
	t.Logf("rbac: code %d: %s; %s", cerr.Code, cerr.Msg, cerr.Details)
	// The log shows the undo ran over what ADD had made, in reverse.
	log, err := os.ReadFile(filepath.Join(h.confDir, "cni.log"))
	if err != nil {
		t.Fatal(err)
	}
	var undone []string
	for _, line := range strings.Split(string(log), "\n") {
		if strings.Contains(line, cid) && strings.Contains(line, `"msg":"undone"`) {
			undone = append(undone, line[strings.Index(line, `"step":`):])
		}
	}
	want := []string{"delete route to", "delete veth " + tabbycni.VethName(ns, "unlucky"), "release handle"}
	if len(undone) != len(want) {
		t.Fatalf("undo steps %q, want %q", undone, want)
	}
	for i := range want {
		if !strings.Contains(undone[i], want[i]) {
			t.Errorf("undo step %d is %s, want %q", i, undone[i], want[i])
		}
	}
	h.checkGone(t, attached{ns: ns, pod: "unlucky", podNS: podNS, containerID: cid})
	h.checkNodeClean(t)
}

// restrictedKubeconfig returns a kubeconfig (through the node's apiserver proxy) for a
// ServiceAccount that may read pods and nodes and do IPAM, and only read
// WorkloadEndpoints.
func (h *harness) restrictedKubeconfig(t *testing.T, ns string) string {
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	name := "tabbyt-" + h.id + "-restricted"
	read := []string{"get", "list", "watch"}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"pods", "nodes", "namespaces"}, Verbs: read},
		{APIGroups: []string{"tabby.dev"}, Resources: []string{"ippools", "ipamconfigurations", "ipreservations",
			"ipamblocks", "blockaffinities", "ipamhandles", "nodes"}, Verbs: []string{"*"}},
		{APIGroups: []string{"tabby.dev"}, Resources: []string{"workloadendpoints"}, Verbs: read},
	}}
	if _, err := cs.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.RbacV1().ClusterRoles().Delete(ctxT(t), name, metav1.DeleteOptions{}) })
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}}}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cs.RbacV1().ClusterRoleBindings().Delete(ctxT(t), name, metav1.DeleteOptions{}) })
	exp := int64(3600)
	tok, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name,
		&authv1.TokenRequest{Spec: authv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the authorizer has the binding: the SA can list IPAM blocks.
	cfg := rest.AnonymousClientConfig(env.Config)
	cfg.BearerToken = tok.Status.Token
	s, err := datastore.NewKube(cfg)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "RBAC for "+name, 20*time.Second, func() error {
		_, err := s.List(ctxT(t), datastore.KindIPAMBlock, datastore.ListOptions{})
		return err
	})

	kc, err := clientcmd.LoadFromFile(h.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range kc.AuthInfos {
		a.Token = tok.Status.Token
		a.ClientCertificateData, a.ClientKeyData, a.TokenFile = nil, nil, ""
	}
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, p); err != nil {
		t.Fatal(err)
	}
	return p
}
