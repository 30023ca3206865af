package cni_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	tabbycni "github.com/tabbynet/tabby/cni"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix/routes"
	"github.com/tabbynet/tabby/ipam"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func (h *harness) createNamespace(t *testing.T, name string) {
	t.Helper()
	netnode.CreateNamespace(t, h.store, name)
}

func (h *harness) createPool(t *testing.T, name, cidr string, blockSize int) {
	t.Helper()
	netnode.CreatePool(t, h.store, name, cidr, blockSize)
}

// podLabels are the labels every test pod carries (and its WEP must).
func podLabels(name string) map[string]string {
	return map[string]string{"app": "web", "tabbyt/pod": name}
}

func (h *harness) createPod(t *testing.T, namespace, name string, annotations map[string]string) *corev1.Pod {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: podLabels(name), Annotations: annotations},
		Spec: corev1.PodSpec{
			ServiceAccountName: "web-sa",
			Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/web:1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {ContainerPort: 9000}}}},
		},
	}
	return netnode.Create(t, h.store, pod)
}

// attached is one pod interface a test wired.
type attached struct {
	ns, pod, podNS, containerID string
	ip                          netip.Addr
}

func (a attached) handle() string { return ipam.PodHandle(a.ns, a.pod, a.containerID) }

// resultIP reads the address from an ADD result and checks its cniVersion.
func resultIP(t *testing.T, out, cniVersion string) netip.Addr {
	t.Helper()
	var r struct {
		CNIVersion string `json:"cniVersion"`
		IPs        []struct {
			Address string `json:"address"`
			Gateway string `json:"gateway"`
		} `json:"ips"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("ADD result is not JSON: %v\n%s", err, out)
	}
	if r.CNIVersion != cniVersion {
		t.Fatalf("result cniVersion %q, want %q\n%s", r.CNIVersion, cniVersion, out)
	}
	if len(r.IPs) != 1 || r.IPs[0].Gateway != "169.254.1.1" {
		t.Fatalf("result ips %+v", r.IPs)
	}
	p, err := netip.ParsePrefix(r.IPs[0].Address)
	if err != nil || p.Bits() != 32 {
		t.Fatalf("result address %q", r.IPs[0].Address)
	}
	return p.Addr()
}

// podLink returns the pod's eth0 (nil when absent).
func podLink(t *testing.T, podNS string) netlink.Link {
	t.Helper()
	nsh, err := netns.GetFromName(podNS)
	if err != nil {
		t.Fatal(err)
	}
	defer nsh.Close()
	ph, err := netlink.NewHandleAt(nsh)
	if err != nil {
		t.Fatal(err)
	}
	defer ph.Close()
	l, err := ph.LinkByName("eth0")
	if err != nil {
		return nil
	}
	return l
}

// checkWired asserts everything ADD promises for one pod interface.
func (h *harness) checkWired(t *testing.T, a attached) {
	t.Helper()
	ctx := ctxT(t)
	veth := tabbycni.VethName(a.ns, a.pod)
	// The WorkloadEndpoint.
	wepName := tabbycni.WEPName(h.node, a.pod, "eth0")
	wep, err := datastore.Get[*v1.WorkloadEndpoint](ctx, h.store, a.ns, wepName)
	if err != nil {
		t.Fatalf("WorkloadEndpoint %s/%s: %v", a.ns, wepName, err)
	}
	wantLabels := podLabels(a.pod)
	wantLabels["tabby.dev/namespace"] = a.ns
	wantLabels["tabby.dev/orchestrator"] = "k8s"
	if !reflect.DeepEqual(wep.Labels, wantLabels) {
		t.Errorf("WEP labels %v, want %v", wep.Labels, wantLabels)
	}
	eth0 := podLink(t, a.podNS)
	if eth0 == nil {
		t.Fatalf("no eth0 in pod namespace %s", a.podNS)
	}
	s := wep.Spec
	want := v1.WorkloadEndpointSpec{Orchestrator: "pod", Workload: a.pod, Node: h.node, ContainerID: a.containerID,
		Endpoint: "eth0", ServiceAccountName: "web-sa", InterfaceName: veth, MAC: eth0.Attrs().HardwareAddr.String(),
		IPNetworks: []string{a.ip.String() + "/32"}, Profiles: []string{"kns." + a.ns},
		Ports: []v1.WorkloadEndpointPort{{Name: "http", Protocol: "TCP", Port: 8080}}}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("WEP spec\n got %+v\nwant %+v", s, want)
	}
	// The allocation.
	held, err := h.alloc.AddressesOf(ctx, a.handle())
	if err != nil || !reflect.DeepEqual(held, []netip.Addr{a.ip}) {
		t.Errorf("handle %s holds %v (%v), want [%s]", a.handle(), held, err, a.ip)
	}
	// The host side: veth, sysctls, route.
	hl, err := h.nodeH.LinkByName(veth)
	if err != nil {
		t.Fatalf("host veth %s: %v", veth, err)
	}
	if hl.Type() != "veth" || eth0.Attrs().ParentIndex != hl.Attrs().Index {
		t.Errorf("host %s (%s) is not eth0's peer", veth, hl.Type())
	}
	for path, v := range map[string]string{"ipv4/conf/%s/proxy_arp": "1", "ipv4/neigh/%s/proxy_delay": "0", "ipv4/conf/%s/forwarding": "1"} {
		p := "/proc/sys/net/" + fmt.Sprintf(path, veth)
		if got := strings.TrimSpace(netnode.MustRun(t, "ip", "netns", "exec", h.node, "cat", p)); got != v {
			t.Errorf("%s = %q, want %q", p, got, v)
		}
	}
	rs, err := routes.Lookup(h.nodeH, a.ip)
	if err != nil || len(rs) != 1 || !routes.IsWorkloadRoute(rs[0], a.ip, hl.Attrs().Index) {
		t.Errorf("host routes to %s: %+v (%v)", a.ip, rs, err)
	}
	out := netnode.MustRun(t, "ip", "-n", h.node, "route", "show", a.ip.String()+"/32")
	if !strings.Contains(out, "dev "+veth+" proto 116 scope link") {
		t.Errorf("ip route show %s: %q, want dev %s proto 116 scope link", a.ip, out, veth)
	}
	if addrs := netnode.MustRun(t, "ip", "-n", h.node, "-4", "addr", "show", "dev", veth); strings.Contains(addrs, "inet ") {
		t.Errorf("host side has an address: %s", addrs)
	}
	// The pod side.
	if out := netnode.MustRun(t, "ip", "-n", a.podNS, "-4", "addr", "show", "dev", "eth0"); !strings.Contains(out, "inet "+a.ip.String()+"/32") {
		t.Errorf("pod eth0: %s", out)
	}
	out = netnode.MustRun(t, "ip", "-n", a.podNS, "-4", "route", "show")
	for _, want := range []string{"default via 169.254.1.1 dev eth0 onlink", "169.254.1.1 dev eth0 scope link"} {
		if !strings.Contains(out, want) {
			t.Errorf("pod routes %q lack %q", out, want)
		}
	}
}

// checkGone asserts nothing of a pod interface is left: no WEP, no allocation, no
// veth, no route, no eth0.
func (h *harness) checkGone(t *testing.T, a attached) {
	t.Helper()
	ctx := ctxT(t)
	wepName := tabbycni.WEPName(h.node, a.pod, "eth0")
	if _, err := datastore.Get[*v1.WorkloadEndpoint](ctx, h.store, a.ns, wepName); !errors.Is(err, datastore.ErrNotFound) {
		t.Errorf("WorkloadEndpoint %s/%s still there (%v)", a.ns, wepName, err)
	}
	if held, err := h.alloc.AddressesOf(ctx, a.handle()); err != nil || len(held) != 0 {
		t.Errorf("handle %s still holds %v (%v)", a.handle(), held, err)
	}
	if _, err := h.nodeH.LinkByName(tabbycni.VethName(a.ns, a.pod)); err == nil {
		t.Errorf("host veth %s still there", tabbycni.VethName(a.ns, a.pod))
	}
	if a.ip.IsValid() {
		if rs, _ := routes.Lookup(h.nodeH, a.ip); len(rs) != 0 {
			t.Errorf("routes to %s still there: %+v", a.ip, rs)
		}
	}
	if a.podNS != "" && podLink(t, a.podNS) != nil {
		t.Errorf("eth0 still in %s", a.podNS)
	}
}

// checkNodeClean asserts the node namespace has no cali* interface and no Tabby route.
func (h *harness) checkNodeClean(t *testing.T) {
	t.Helper()
	links, err := h.nodeH.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, tabbycni.VethPrefix) {
			t.Errorf("interface %s left in the node namespace", l.Attrs().Name)
		}
	}
	if rs, err := routes.ListLocal(h.nodeH); err != nil || len(rs) != 0 {
		t.Errorf("Tabby routes left in the node namespace: %+v (%v)", rs, err)
	}
}

// ping checks pod a reaches ip through the node, within a deadline.
func (h *harness) ping(t *testing.T, podNS string, ip netip.Addr) {
	t.Helper()
	waitFor(t, "ping "+ip.String()+" from "+podNS, 15*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := netnode.Run(ctx, "ip", "netns", "exec", podNS, "ping", "-c", "3", "-W", "1", ip.String())
		return err
	})
}

// handlesOn lists the pod handles with allocations on a node.
func (h *harness) handlesOn(t *testing.T, node string) []string {
	t.Helper()
	blocks, err := datastore.List[*v1.IPAMBlock](ctxT(t), h.store, datastore.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range blocks {
		for _, a := range b.Spec.Attributes {
			if a.HandleID != nil && a.Secondary[ipam.AttrNode] == node && !slices.Contains(out, *a.HandleID) {
				out = append(out, *a.HandleID)
			}
		}
	}
	slices.Sort(out)
	return out
}
