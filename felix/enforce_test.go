package felix_test

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ebpf"
	"github.com/tabbynet/tabby/ebpf/ebpftest"
	"github.com/tabbynet/tabby/felix"
	"github.com/tabbynet/tabby/felix/internal/nettest"
	"github.com/vishvananda/netns"
	"go.uber.org/zap/zaptest"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// addPod moves the peer of host into a new namespace as a pod with address ip/32 and
// a default route through the host side (proxy ARP, as the CNI plugin sets it up).
func addPod(t *testing.T, n *nettest.Node, host, ip string) (string, int) {
	t.Helper()
	pod := n.Name + "-" + host
	n.Run("ip", "netns", "add", pod)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", pod).Run() })
	idx := n.AddVeth(host, "p"+host, "")
	n.IP("link", "set", "p"+host, "netns", pod)
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "set", "p" + host, "name", "eth0"},
		{"link", "set", "eth0", "up"},
		{"addr", "add", ip + "/32", "dev", "eth0"},
		{"route", "add", "169.254.1.1", "dev", "eth0", "scope", "link"},
		{"route", "add", "default", "via", "169.254.1.1", "dev", "eth0"},
	} {
		n.Run("ip", append([]string{"-n", pod}, args...)...)
	}
	return pod, idx
}

// inPod runs fn on a thread of its own inside the pod's namespace.
func inPod(pod string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := netns.GetFromPath(filepath.Join("/run/netns", pod))
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// dial opens (and closes) a TCP connection from the pod to addr. Each connection is a
// new flow (new source port), so the datapath's conntrack does not carry a verdict
// over from before a policy change (an ICMP echo flow would, without ports).
func dial(pod, addr string) error {
	return inPod(pod, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func TestPolicyEnforcement(t *testing.T) {
	nettest.Require(t)
	ebpftest.Require(t)
	pinDir := ebpftest.PinDir(t)
	n := nettest.NewNode(t)
	// Proxy ARP answers for 169.254.1.1 only if the node has a route to it.
	n.AddVeth("tdflt", "tdfltp", "")
	n.IP("route", "add", "default", "dev", "tdflt")
	podA, idxA := addPod(t, n, "tpa", "10.98.0.1")
	podB, idxB := addPod(t, n, "tpb", "10.98.0.2")

	s := datastore.NewMemory()
	a := mkWEP("pods", "a", "node1", "tpa", "10.98.0.1/32")
	a.Labels = map[string]string{"app": "a"}
	b := mkWEP("pods", "b", "node1", "tpb", "10.98.0.2/32")
	b.Labels = map[string]string{"app": "b"}
	create(t, s, a)
	create(t, s, b)

	f, err := felix.New(felix.Config{NodeName: "node1", Store: s, Logger: zaptest.NewLogger(t),
		Registry: prometheus.NewRegistry(), NetlinkHandle: n.H, NetNSPath: n.Path,
		RouteCleanupGracePeriod: grace, Policy: true, BPFPinDir: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	stop := runFelix(t, f)
	defer stop()

	wctx, wcancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer wcancel()
	for _, name := range []string{"a", "b"} {
		if err := f.WaitPolicyProgrammed(wctx, "pods", name); err != nil {
			t.Fatal(err)
		}
	}
	for _, idx := range []int{idxA, idxB} {
		for _, h := range []string{"tc_ingress", "tc_egress"} {
			if _, err := os.Stat(filepath.Join(pinDir, "links", "if"+strconv.Itoa(idx)+"_"+h)); err != nil {
				// ModeTC leaves no link pin; the traffic checks below still hold.
				t.Logf("no TCX link pin for %d: %v", idx, err)
			}
		}
	}
	var ln net.Listener
	if err := inPod(podB, func() (err error) {
		ln, err = net.Listen("tcp", "10.98.0.2:80")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ebpftest.Serve(ln)
	allowed := func() string {
		if err := dial(podA, "10.98.0.2:80"); err != nil {
			return "a -> b:80: " + err.Error()
		}
		return ""
	}
	denied := func() string {
		if dial(podA, "10.98.0.2:80") == nil {
			return "a -> b:80 still connects"
		}
		return ""
	}
	nettest.Eventually(t, 20*time.Second, "allowed without policy", allowed)

	deny := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "pods", Name: "deny-b"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		}}
	create(t, s, deny)
	nettest.Eventually(t, 20*time.Second, "denied by deny-all ingress", denied)
	if st := f.Status(); !st.InSync {
		t.Errorf("not in sync: %s", st.LastError)
	}

	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	if err := s.Delete(dctx, datastore.KindK8sNetworkPolicy, "pods", "deny-b", datastore.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	nettest.Eventually(t, 20*time.Second, "allowed after the policy went", allowed)

	// Clean up: felix leaves everything pinned and attached; detach and unpin here.
	stop()
	dp, err := ebpf.Load(ebpf.Options{PinDir: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(n.NS); err != nil {
			errc <- err
			return
		}
		errc <- errors.Join(dp.Detach(idxA), dp.Detach(idxB))
	}()
	if err := <-errc; err != nil {
		t.Errorf("detach: %v", err)
	}
	if err := dp.Unpin(); err != nil {
		t.Errorf("unpin: %v", err)
	}
}
