package felix_test

// Harness of the real-traffic policy tests (enforce_tabby_test.go,
// enforce_restart_test.go): felix with Policy on, against the real kube-apiserver of
// this package (k8senv), real BPF programs, pods in network namespaces on veths.
// Addresses are 10.93.0.0/24, inside each test's own node namespace.

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/prometheus/client_golang/prometheus"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ebpf/ebpftest"
	"github.com/tabbynet/tabby/felix"
	"github.com/tabbynet/tabby/felix/dataplane"
	"github.com/tabbynet/tabby/felix/internal/nettest"
	"github.com/tabbynet/tabby/test/k8senv"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// tpProbeTimeout bounds one probe: the path is two veths in one kernel, so a reply
// that has not come within it was dropped.
const tpProbeTimeout = 400 * time.Millisecond

// tpCluster is one test's node, datastore namespace(s), pods and felix.
type tpCluster struct {
	t      *testing.T
	n      *nettest.Node
	s      datastore.Store
	id     string // unique per test: node name, label value tabby-test=<id>
	pinDir string
	nst    *dataplane.NSThread // a thread in the node's namespace
	pods   map[string]*tpPod
	felix  *tpFelix

	mu      sync.Mutex
	written map[string]datastore.Object // policy-kind key -> last written object
	gone    map[string]bool             // policy-kind keys deleted
}

// tpPod is a workload: a namespace with eth0, its host-side veth and its endpoint.
type tpPod struct {
	name, ns, netns, host, ip string
	idx                       int
	wep                       *v1.WorkloadEndpoint
}

// newTPCluster makes the node namespace (with a default route, so that proxy ARP
// answers for 169.254.1.1), a private bpffs and a kube datastore client.
func newTPCluster(t *testing.T) *tpCluster {
	t.Helper()
	nettest.Require(t)
	ebpftest.Require(t)
	k8senv.Require(t, env)
	s, err := datastore.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	c := &tpCluster{t: t, s: s, pinDir: ebpftest.PinDir(t), pods: map[string]*tpPod{},
		written: map[string]datastore.Object{}, gone: map[string]bool{}}
	c.n = nettest.NewNode(t)
	c.id = c.n.Name
	if c.nst, err = dataplane.NewNSThread(c.n.Path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.nst.Close)
	c.n.AddVeth("tdflt", "tdfltp", "")
	c.n.IP("route", "add", "default", "dev", "tdflt")
	return c
}

// namespace creates a kube namespace named <prefix>-<id> with labels.
func (c *tpCluster) namespace(prefix string, labels map[string]string) string {
	c.t.Helper()
	name := prefix + "-" + strings.TrimPrefix(c.id, "tfx-")
	c.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}})
	return name
}

// relabelNamespace replaces a namespace's labels.
func (c *tpCluster) relabelNamespace(name string, labels map[string]string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o, err := c.s.Get(ctx, datastore.KindNamespace, "", name)
	if err != nil {
		c.t.Fatal(err)
	}
	ns := o.(*corev1.Namespace)
	ns.Labels = labels
	if _, err := c.s.Update(ctx, ns); err != nil {
		c.t.Fatal(err)
	}
}

// create writes obj and deletes it when the test ends.
func (c *tpCluster) create(obj datastore.Object) datastore.Object {
	c.t.Helper()
	k, err := datastore.KindOf(obj)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.s.Create(ctx, obj)
	if err != nil {
		c.t.Fatal(err)
	}
	ns, name := out.GetNamespace(), out.GetName()
	c.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.s.Delete(ctx, k, ns, name, datastore.DeleteOptions{})
	})
	return out
}

func tpKey(obj datastore.Object) string {
	k, _ := datastore.KindOf(obj)
	return k.Name + "/" + obj.GetNamespace() + "/" + obj.GetName()
}

// put creates or updates a policy or network set; sync then waits for felix to hold it.
func (c *tpCluster) put(obj datastore.Object) {
	c.t.Helper()
	key := tpKey(obj)
	c.mu.Lock()
	old, ok := c.written[key]
	c.mu.Unlock()
	var out datastore.Object
	if !ok {
		out = c.create(obj)
	} else {
		obj.SetResourceVersion(old.GetResourceVersion())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		var err error
		if out, err = c.s.Update(ctx, obj); err != nil {
			c.t.Fatal(err)
		}
	}
	c.mu.Lock()
	c.written[key], c.gone[key] = out, false
	c.mu.Unlock()
}

// del deletes a policy or network set written by put.
func (c *tpCluster) del(obj datastore.Object) {
	c.t.Helper()
	k, err := datastore.KindOf(obj)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.s.Delete(ctx, k, obj.GetNamespace(), obj.GetName(), datastore.DeleteOptions{}); err != nil {
		c.t.Fatal(err)
	}
	key := tpKey(obj)
	c.mu.Lock()
	delete(c.written, key)
	c.gone[key] = true
	c.mu.Unlock()
}

// sync waits until felix reports its policy programmed from exactly the versions put
// wrote (and without what del deleted).
func (c *tpCluster) sync(what string) {
	c.t.Helper()
	c.mu.Lock()
	want := map[string]string{}
	for k, o := range c.written {
		want[k] = o.GetResourceVersion()
	}
	gone := map[string]bool{}
	for k, g := range c.gone {
		if g {
			gone[k] = true
		}
	}
	c.mu.Unlock()
	f := c.felix.f
	nettest.Eventually(c.t, 30*time.Second, what+": policy programmed", func() string {
		ps := f.Status().Policy
		if ps == nil {
			return "no policy status"
		}
		have := map[string]string{}
		for _, s := range ps.Sources {
			have[s.Kind+"/"+s.Namespace+"/"+s.Name] = s.ResourceVersion
		}
		for k, rv := range want {
			if have[k] != rv {
				return fmt.Sprintf("%s at version %q, want %q", k, have[k], rv)
			}
		}
		for k := range gone {
			if _, ok := have[k]; ok {
				return k + " still in the maps"
			}
		}
		if !ps.Programmed {
			return "not programmed: " + ps.Error
		}
		return ""
	})
}

// addPod makes a pod <name> with address ip in namespace ns, labelled labels plus
// tabby-test=<id>, and writes its WorkloadEndpoint on this node.
func (c *tpCluster) addPod(name, ns, ip string, labels map[string]string) *tpPod {
	c.t.Helper()
	host := "tp" + name
	netnsName, idx := addPod(c.t, c.n, host, ip)
	p := &tpPod{name: name, ns: ns, netns: netnsName, host: host, ip: ip, idx: idx}
	w := mkWEP(ns, name, c.id, host, ip+"/32")
	w.Labels = map[string]string{"tabby-test": c.id}
	for k, v := range labels {
		w.Labels[k] = v
	}
	p.wep = c.create(w).(*v1.WorkloadEndpoint)
	c.pods[name] = p
	return p
}

// updateWEP changes a pod's WorkloadEndpoint with fn.
func (c *tpCluster) updateWEP(p *tpPod, fn func(*v1.WorkloadEndpoint)) {
	c.t.Helper()
	w := p.wep.DeepCopy()
	fn(w)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.s.Update(ctx, w)
	if err != nil {
		c.t.Fatal(err)
	}
	p.wep = out.(*v1.WorkloadEndpoint)
}

// tpFelix is a running felix.
type tpFelix struct {
	f    *felix.Felix
	stop func() // cancels Run and waits for it
}

// startFelix runs a felix with Policy on over the cluster's node and pin dir and
// waits until every pod's policy is programmed.
func (c *tpCluster) startFelix() *tpFelix {
	c.t.Helper()
	return c.startFelixOn(c.s, true)
}

// startFelixOn runs a felix with Policy on over store; with wait, it waits until
// every pod's policy is programmed.
func (c *tpCluster) startFelixOn(store datastore.Store, wait bool) *tpFelix {
	c.t.Helper()
	t := c.t
	f, err := felix.New(felix.Config{NodeName: c.id, Store: store, Logger: zaptest.NewLogger(t),
		Registry: prometheus.NewRegistry(), NetlinkHandle: c.n.H, NetNSPath: c.n.Path,
		RouteCleanupGracePeriod: grace, Policy: true, BPFPinDir: c.pinDir})
	if err != nil {
		t.Fatal(err)
	}
	r := &tpFelix{f: f, stop: runFelix(t, f)}
	c.felix = r
	if !wait {
		return r
	}
	wctx, wcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer wcancel()
	for _, p := range c.pods {
		if err := f.WaitPolicyProgrammed(wctx, p.ns, p.name); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

// tcpServe listens on the pod's address and port and accepts and closes.
func (c *tpCluster) tcpServe(p *tpPod, port int) {
	c.t.Helper()
	var ln net.Listener
	if err := inPod(p.netns, func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(p.ip, strconv.Itoa(port)))
		return err
	}); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { ln.Close() })
	ebpftest.Serve(ln)
}

// tpUDPServer echoes every datagram and remembers what it got.
type tpUDPServer struct {
	mu  sync.Mutex
	got map[string]string // payload -> source address
}

func (u *tpUDPServer) received(token string) (string, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	src, ok := u.got[token]
	return src, ok
}

// udpServe runs a UDP echo server on the pod's address (all its addresses) and port.
func (c *tpCluster) udpServe(p *tpPod, port int) *tpUDPServer {
	c.t.Helper()
	var pc net.PacketConn
	if err := inPod(p.netns, func() (err error) {
		pc, err = net.ListenPacket("udp4", ":"+strconv.Itoa(port))
		return err
	}); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { pc.Close() })
	u := &tpUDPServer{got: map[string]string{}}
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			u.mu.Lock()
			u.got[string(buf[:n])] = from.(*net.UDPAddr).IP.String()
			u.mu.Unlock()
			_, _ = pc.WriteTo(buf[:n], from)
		}
	}()
	return u
}

var tpTokens struct {
	sync.Mutex
	n int
}

func tpToken() string {
	tpTokens.Lock()
	defer tpTokens.Unlock()
	tpTokens.n++
	return "probe-" + strconv.Itoa(tpTokens.n)
}

// udp sends one datagram carrying a fresh token from the pod (from src when not empty,
// else its own address) to dst:port, on a new socket (a new flow), and waits up to
// tpProbeTimeout for the echo. It returns the token and nil if the echo came back.
func tpUDP(p *tpPod, src, dst string, port int) (string, error) {
	token := tpToken()
	err := inPod(p.netns, func() error {
		var laddr *net.UDPAddr
		if src != "" {
			laddr = &net.UDPAddr{IP: net.ParseIP(src)}
		}
		conn, err := net.DialUDP("udp4", laddr, &net.UDPAddr{IP: net.ParseIP(dst), Port: port})
		if err != nil {
			return err
		}
		defer conn.Close()
		if _, err := conn.Write([]byte(token)); err != nil {
			return err
		}
		if err := conn.SetReadDeadline(time.Now().Add(tpProbeTimeout)); err != nil {
			return err
		}
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		if err != nil {
			return err
		}
		if string(buf[:n]) != token {
			return fmt.Errorf("echo %q, want %q", buf[:n], token)
		}
		return nil
	})
	return token, err
}

// tcp connects from the pod to dst:port on a new flow, within tpProbeTimeout.
func tpTCP(p *tpPod, dst string, port int) error {
	return inPod(p.netns, func() error {
		conn, err := net.DialTimeout("tcp4", net.JoinHostPort(dst, strconv.Itoa(port)), tpProbeTimeout)
		if err != nil {
			return err
		}
		return conn.Close()
	})
}

// ping sends one ICMP echo request from the pod and waits a second for the reply.
func tpPing(p *tpPod, dst string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", p.netns, "ping", "-n", "-c1", "-W1", dst).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s: %w: %s", dst, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// tpExpect is one traffic expectation: a probe and whether it must get through.
type tpExpect struct {
	what  string
	probe func() error
	pass  bool
}

// check runs each expectation once; the maps are programmed (sync) before, so the
// verdict must already be the new one.
func (c *tpCluster) check(step string, es ...tpExpect) {
	c.t.Helper()
	for _, e := range es {
		err := e.probe()
		switch {
		case e.pass && err != nil:
			again := e.probe()
			c.t.Errorf("%s: %s: want it through, got %v (again: %v)\n%s", step, e.what, err, again, c.diag())
		case !e.pass && err == nil:
			c.t.Errorf("%s: %s: want it dropped, it got through\n%s", step, e.what, c.diag())
		}
	}
}

// diag describes the node's neighbours, routes and BPF attachments, for failures.
func (c *tpCluster) diag() string {
	var b strings.Builder
	b.WriteString("node neigh:\n" + c.n.IP("neigh") + "node routes:\n" + c.n.IP("route"))
	for _, p := range c.pods {
		fmt.Fprintf(&b, "%s (ifindex %d): tcx %s\n", p.host, p.idx, c.tcxProgs(p.idx))
	}
	out, _ := c.n.Try("bpftool", "map", "dump", "pinned", filepath.Join(c.pinDir, "tabby_endpoints"))
	b.WriteString("tabby_endpoints:\n" + out)
	return b.String()
}

// tpHook is one program on a TCX hook: its program and link ids.
type tpHook struct{ prog, link uint32 }

// tcx lists what is on ifindex's TCX ingress and egress hooks, in the node's namespace.
func (c *tpCluster) tcx(ifindex int) (in, eg []tpHook, err error) {
	c.nst.Do(func() {
		for i, a := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
			r, qerr := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: a})
			if qerr != nil {
				err = qerr
				return
			}
			var hs []tpHook
			for _, p := range r.Programs {
				l, _ := p.LinkID()
				hs = append(hs, tpHook{prog: uint32(p.ID), link: uint32(l)})
			}
			if i == 0 {
				in = hs
			} else {
				eg = hs
			}
		}
	})
	return in, eg, err
}

// tcxProgs describes ifindex's TCX hooks, for failure messages.
func (c *tpCluster) tcxProgs(ifindex int) string {
	in, eg, err := c.tcx(ifindex)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("ingress %v egress %v", in, eg)
}

func tpTCPTo(from, to *tpPod, port int, pass bool) tpExpect {
	return tpExpect{what: fmt.Sprintf("tcp %s -> %s:%d", from.name, to.name, port), pass: pass,
		probe: func() error { return tpTCP(from, to.ip, port) }}
}

func tpUDPTo(from, to *tpPod, port int, pass bool) tpExpect {
	return tpExpect{what: fmt.Sprintf("udp %s -> %s:%d", from.name, to.name, port), pass: pass,
		probe: func() error { _, err := tpUDP(from, "", to.ip, port); return err }}
}

func tpPingTo(from, to *tpPod, pass bool) tpExpect {
	return tpExpect{what: fmt.Sprintf("ping %s -> %s", from.name, to.name), pass: pass,
		probe: func() error { return tpPing(from, to.ip) }}
}

// Policy builders.

func tpOrder(o float64) *float64 { return &o }

func tpProto(p string) *intstr.IntOrString { v := intstr.FromString(p); return &v }

func tpPorts(ps ...string) []intstr.IntOrString {
	out := make([]intstr.IntOrString, len(ps))
	for i, p := range ps {
		out[i] = intstr.Parse(p)
	}
	return out
}

func tpNP(ns, name string, order *float64, selector string, types []v1.PolicyType, ingress, egress []v1.Rule) *v1.NetworkPolicy {
	return &v1.NetworkPolicy{TypeMeta: metav1.TypeMeta{APIVersion: v1.APIVersion, Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1.NetworkPolicySpec{Order: order, Selector: selector, Types: types, Ingress: ingress,
			Egress: egress}}
}

func tpGNP(name string, spec v1.GlobalNetworkPolicySpec) *v1.GlobalNetworkPolicy {
	return &v1.GlobalNetworkPolicy{TypeMeta: metav1.TypeMeta{APIVersion: v1.APIVersion, Kind: "GlobalNetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

func tpNetworkSet(ns, name string, labels map[string]string, nets ...string) *v1.NetworkSet {
	return &v1.NetworkSet{TypeMeta: metav1.TypeMeta{APIVersion: v1.APIVersion, Kind: "NetworkSet"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec:       v1.NetworkSetSpec{Nets: nets}}
}

func tpGlobalNetworkSet(name string, labels map[string]string, nets ...string) *v1.GlobalNetworkSet {
	return &v1.GlobalNetworkSet{TypeMeta: metav1.TypeMeta{APIVersion: v1.APIVersion, Kind: "GlobalNetworkSet"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: v1.NetworkSetSpec{Nets: nets}}
}

var (
	tpIngress = []v1.PolicyType{v1.PolicyTypeIngress}
	tpBoth    = []v1.PolicyType{v1.PolicyTypeIngress, v1.PolicyTypeEgress}
)
