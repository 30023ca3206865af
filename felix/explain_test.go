package felix_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ebpf"
	"github.com/tabbynet/tabby/ebpf/ebpftest"
	"github.com/tabbynet/tabby/felix"
	"github.com/tabbynet/tabby/felix/internal/nettest"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/vishvananda/netns"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// explainPod is a pod of the explain tests.
type explainPod struct {
	name string // pod (workload) name; its WorkloadEndpoint is wep-<name>
	ip   string
	ns   string // the pod's network namespace
	idx  int    // host-side ifindex
}

// Ports every pod serves in the explain tests.
var (
	explainTCPPorts = []int{80, 81, 8080}
	explainUDPPorts = []int{53, 5353}
)

// explainServe listens on every explain port in the pod: TCP accepts and closes, UDP echoes.
func explainServe(t *testing.T, p explainPod) {
	t.Helper()
	for _, port := range explainTCPPorts {
		var ln net.Listener
		if err := inPod(p.ns, func() (err error) {
			ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", p.ip, port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ln.Close() })
		ebpftest.Serve(ln)
	}
	for _, port := range explainUDPPorts {
		var pc net.PacketConn
		if err := inPod(p.ns, func() (err error) {
			pc, err = net.ListenPacket("udp", fmt.Sprintf("%s:%d", p.ip, port))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close() })
		go func() {
			buf := make([]byte, 512)
			for {
				n, addr, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(buf[:n], addr)
			}
		}()
	}
}

// explainProbe reports whether a new flow from the pod to ip:port gets through within timeout:
// a TCP connect (a refusal also got through), or a UDP datagram echoed back.
func explainProbe(from explainPod, ip, proto string, port int, timeout time.Duration) bool {
	addr := net.JoinHostPort(ip, strconv.Itoa(port))
	ok := false
	_ = inPod(from.ns, func() error {
		if proto == "TCP" {
			c, err := net.DialTimeout("tcp", addr, timeout)
			if err == nil {
				_ = c.Close()
			}
			ok = err == nil || errors.Is(err, syscall.ECONNREFUSED)
			return nil
		}
		c, err := net.Dial("udp", addr)
		if err != nil {
			return nil
		}
		defer c.Close()
		if _, err := c.Write([]byte("ping")); err != nil {
			return nil
		}
		_ = c.SetReadDeadline(time.Now().Add(timeout))
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		ok = err == nil && string(buf[:n]) == "ping"
		return nil
	})
	return ok
}

// explainEnv is a felix with policy on, three pods and the explain tests' policies.
type explainEnv struct {
	f    *felix.Felix
	ns   string // Kubernetes namespace
	pods map[string]explainPod
}

func setupExplain(t *testing.T, subnet string) *explainEnv {
	t.Helper()
	nettest.Require(t)
	ebpftest.Require(t)
	k8senv.Require(t, env)
	s, err := datastore.NewKube(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	pinDir := ebpftest.PinDir(t)
	n := nettest.NewNode(t)
	n.AddVeth("tedflt", "tedfltp", "")
	n.IP("route", "add", "default", "dev", "tedflt")
	uniq := strings.TrimPrefix(n.Name, "tfx-")
	e := &explainEnv{ns: "explain-" + uniq, pods: map[string]explainPod{}}
	ctx := ctxFor(t, time.Minute)
	create(t, s, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}})
	t.Cleanup(func() {
		_ = s.Delete(context.Background(), datastore.KindNamespace, "", e.ns, datastore.DeleteOptions{})
	})
	for i, name := range []string{"a", "b", "c"} {
		ip := fmt.Sprintf("%s.%d", subnet, i+1)
		pns, idx := addPod(t, n, "te"+name, ip)
		w := mkWEP(e.ns, "wep-"+name, n.Name, "te"+name, ip+"/32")
		w.Spec.Workload = name
		w.Labels = map[string]string{"app": name, "explain": uniq}
		create(t, s, w)
		t.Cleanup(func() { // deleting a namespace leaves its objects without a controller manager
			_ = s.Delete(context.Background(), datastore.KindWorkloadEndpoint, e.ns, w.Name, datastore.DeleteOptions{})
		})
		e.pods[name] = explainPod{name: name, ip: ip, ns: pns, idx: idx}
	}

	// b: K8s NetworkPolicy, TCP 80 from a only.
	tcp, udp := corev1.ProtocolTCP, intstr.FromString("UDP")
	p80 := intstr.FromInt32(80)
	knp := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "b-from-a"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "b"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From:  []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "a"}}}},
				Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p80}},
			}},
		}}
	// c: Tabby NetworkPolicy: deny TCP 81, allow TCP from b, allow UDP 5353.
	tcpS := intstr.FromString("TCP")
	np := &v1.NetworkPolicy{TypeMeta: metav1.TypeMeta{APIVersion: v1.APIVersion, Kind: "NetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "c-ingress"},
		Spec: v1.NetworkPolicySpec{Selector: "app == 'c'", Types: []v1.PolicyType{v1.PolicyTypeIngress},
			Ingress: []v1.Rule{
				{Action: v1.ActionDeny, Protocol: &tcpS, Destination: v1.EntityRule{Ports: []intstr.IntOrString{intstr.FromInt32(81)}}},
				{Action: v1.ActionAllow, Protocol: &tcpS, Source: v1.EntityRule{Selector: "app == 'b'"}},
				{Action: v1.ActionAllow, Protocol: &udp, Destination: v1.EntityRule{Ports: []intstr.IntOrString{intstr.FromInt32(5353)}}},
			}}}
	// a: GlobalNetworkPolicy on egress: deny TCP 8080, allow the rest.
	gnp := &v1.GlobalNetworkPolicy{TypeMeta: metav1.TypeMeta{APIVersion: v1.APIVersion, Kind: "GlobalNetworkPolicy"},
		ObjectMeta: metav1.ObjectMeta{Name: "a-egress-" + uniq},
		Spec: v1.GlobalNetworkPolicySpec{Selector: "app == 'a' && explain == '" + uniq + "'",
			Types: []v1.PolicyType{v1.PolicyTypeEgress},
			Egress: []v1.Rule{
				{Action: v1.ActionDeny, Protocol: &tcpS, Destination: v1.EntityRule{Ports: []intstr.IntOrString{intstr.FromInt32(8080)}}},
				{Action: v1.ActionAllow},
			}}}
	rvs := map[string]string{}
	for _, o := range []struct {
		kind string
		obj  datastore.Object
	}{{"K8sNetworkPolicy", knp}, {"NetworkPolicy", np}, {"GlobalNetworkPolicy", gnp}} {
		got, err := s.Create(ctx, o.obj)
		if err != nil {
			t.Fatal(err)
		}
		rvs[o.kind+" "+got.GetNamespace()+"/"+got.GetName()] = got.GetResourceVersion()
	}
	t.Cleanup(func() {
		bg := context.Background()
		_ = s.Delete(bg, datastore.KindGlobalNetworkPolicy, "", gnp.Name, datastore.DeleteOptions{})
		_ = s.Delete(bg, datastore.KindNetworkPolicy, e.ns, np.Name, datastore.DeleteOptions{})
		_ = s.Delete(bg, datastore.KindK8sNetworkPolicy, e.ns, knp.Name, datastore.DeleteOptions{})
	})

	// Hold one policy kind back until felix is Ready, so the policy is compiled only
	// after felix's first full apply: felix at the base of this change wrote the maps
	// with no local endpoint when the policy watches synced before the IPAMBlock watch
	// (the first full apply did not build the local endpoint list), detaching every
	// program until the next resync. The gate keeps this test off that race either way.
	gs := &gatedStore{Store: s, kind: datastore.KindNetworkSet, open: make(chan struct{})}
	f, err := felix.New(felix.Config{NodeName: n.Name, Store: gs, Logger: zaptest.NewLogger(t),
		Registry: prometheus.NewRegistry(), NetlinkHandle: n.H, NetNSPath: n.Path,
		RouteCleanupGracePeriod: grace, Policy: true, BPFPinDir: pinDir})
	if err != nil {
		t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(rctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after its context ended")
		}
		explainCleanup(t, n, pinDir, e.pods)
	})
	e.f = f
	nettest.Eventually(t, 30*time.Second, "felix ready", func() string {
		if !f.Ready() {
			return "not ready"
		}
		return ""
	})
	close(gs.open)
	for _, name := range []string{"a", "b", "c"} {
		if err := f.WaitPolicyProgrammed(ctxFor(t, 30*time.Second), e.ns, "wep-"+name); err != nil {
			t.Fatal(err)
		}
	}
	nettest.Eventually(t, 30*time.Second, "the policies programmed", func() string {
		st := f.Status().Policy
		if st == nil || !st.Programmed {
			return fmt.Sprintf("policy status %+v", st)
		}
		for k, rv := range rvs {
			kind, key, _ := strings.Cut(k, " ")
			ns, name, _ := strings.Cut(key, "/")
			found := false
			for _, src := range st.Sources {
				found = found || (src.Kind == kind && src.Namespace == ns && src.Name == name && src.ResourceVersion == rv)
			}
			if !found {
				return k + " at " + rv + " not programmed yet"
			}
		}
		return ""
	})
	for _, p := range e.pods {
		explainServe(t, p)
	}
	return e
}

// explainCleanup detaches felix's programs and removes its pins.
func explainCleanup(t *testing.T, n *nettest.Node, pinDir string, pods map[string]explainPod) {
	dp, err := ebpf.Load(ebpf.Options{PinDir: pinDir})
	if err != nil {
		t.Error(err)
		return
	}
	defer dp.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := netns.Set(n.NS); err != nil {
			errc <- err
			return
		}
		var errs []error
		for _, p := range pods {
			errs = append(errs, dp.Detach(p.idx))
		}
		errc <- errors.Join(errs...)
	}()
	if err := <-errc; err != nil {
		t.Errorf("detach: %v", err)
	}
	if err := dp.Unpin(); err != nil {
		t.Errorf("unpin: %v", err)
	}
}

// explainWant is what a case's explanation must name (beyond agreeing with the probe).
type explainWant struct {
	dir    string // the step that must name it: ingress or egress
	stage  string
	policy string // "Kind ns/name" or "Kind name"; "" for the default stage
	index  int
	action string
}

func explainRuleName(r *felix.ExplainRule) string {
	if r == nil {
		return ""
	}
	if r.Namespace == "" {
		return r.Kind + " " + r.Name
	}
	return r.Kind + " " + r.Namespace + "/" + r.Name
}

func TestExplainAgreesWithProbes(t *testing.T) {
	e := setupExplain(t, "10.94.0")
	uniq := strings.TrimPrefix(e.ns, "explain-")
	knp, np, gnp := "K8sNetworkPolicy "+e.ns+"/b-from-a", "NetworkPolicy "+e.ns+"/c-ingress",
		"GlobalNetworkPolicy a-egress-"+uniq
	// What some cases must name; every case must agree with its probe.
	named := map[string]explainWant{
		"a>b TCP/80":   {dir: "ingress", stage: "policy", policy: knp, index: 0, action: "Allow"},
		"a>b TCP/81":   {dir: "ingress", stage: "default"},
		"a>b TCP/8080": {dir: "egress", stage: "policy", policy: gnp, index: 0, action: "Deny"},
		"a>c TCP/81":   {dir: "ingress", stage: "policy", policy: np, index: 0, action: "Deny"},
		"b>c TCP/80":   {dir: "ingress", stage: "policy", policy: np, index: 1, action: "Allow"},
		"a>c TCP/80":   {dir: "ingress", stage: "default"},
		"a>c UDP/5353": {dir: "ingress", stage: "policy", policy: np, index: 2, action: "Allow"},
		"a>c UDP/53":   {dir: "ingress", stage: "default"},
		"b>a TCP/80":   {dir: "ingress", stage: "default"}, // a's ingress: no policy, allowed
		"c>a UDP/53":   {dir: "egress", stage: "default"},  // c's egress: no policy, allowed
	}
	// Each policy's deciding rules must belong to a policy of that endpoint and direction.
	owns := map[string]string{"b ingress": knp, "c ingress": np, "a egress": gnp}
	type tc struct {
		from, to, proto string
		port            int
	}
	var cases []tc
	for _, from := range []string{"a", "b", "c"} {
		for _, to := range []string{"a", "b", "c"} {
			if from == to {
				continue
			}
			for _, p := range explainTCPPorts {
				cases = append(cases, tc{from, to, "TCP", p})
			}
			for _, p := range explainUDPPorts {
				cases = append(cases, tc{from, to, "UDP", p})
			}
		}
	}
	seen := 0
	for _, c := range cases {
		name := fmt.Sprintf("%s>%s %s/%d", c.from, c.to, c.proto, c.port)
		from, to := e.pods[c.from], e.pods[c.to]
		// --from by pod name for local pods, by address for one of them: both resolve.
		src := e.ns + "/" + c.from
		if c.from == "c" {
			src = from.ip
		}
		res, err := e.f.ExplainPolicy(ctxFor(t, 10*time.Second), felix.ExplainRequest{From: src,
			To: e.ns + "/" + c.to, Protocol: c.proto, Port: uint16(c.port)})
		if err != nil {
			t.Fatalf("%s: explain: %v", name, err)
		}
		got := explainProbe(from, to.ip, c.proto, c.port, 300*time.Millisecond)
		if got != res.Allowed {
			got = explainProbe(from, to.ip, c.proto, c.port, 3*time.Second) // a slow first packet
		}
		if got != res.Allowed {
			t.Errorf("%s: probe got through=%t, explain says allowed=%t: %+v %+v", name, got, res.Allowed, res.Egress, res.Ingress)
			continue
		}
		if res.Egress == nil {
			t.Errorf("%s: no egress step for a local source", name)
			continue
		}
		if res.From != e.ns+"/wep-"+c.from || res.To != e.ns+"/wep-"+c.to {
			t.Errorf("%s: from %q to %q", name, res.From, res.To)
		}
		for _, st := range []felix.ExplainStep{*res.Egress, res.Ingress} {
			ep := c.to
			if st.Direction == "egress" {
				ep = c.from
			}
			if st.Stage == "policy" && explainRuleName(st.Rule) != owns[ep+" "+st.Direction] {
				t.Errorf("%s: %s at %s named %q (rule %d)", name, st.Direction, ep, explainRuleName(st.Rule), st.RuleID)
			}
			if st.Stage == "default" && st.Allowed == (owns[ep+" "+st.Direction] != "") {
				t.Errorf("%s: %s at %s default allowed=%t: %s", name, st.Direction, ep, st.Allowed, st.Reason)
			}
			if st.Stage == "default" && !st.Allowed && strings.Join(st.SelectedBy, ",") != owns[ep+" "+st.Direction] {
				t.Errorf("%s: %s at %s default deny selected by %q", name, st.Direction, ep, st.SelectedBy)
			}
		}
		w, ok := named[name]
		if !ok {
			continue
		}
		seen++
		st := res.Ingress
		if w.dir == "egress" {
			st = *res.Egress
		}
		if st.Stage != w.stage || explainRuleName(st.Rule) != w.policy ||
			(st.Rule != nil && (st.Rule.Index != w.index || st.Rule.Action != w.action)) {
			t.Errorf("%s: %s step %+v (rule %+v), want %+v", name, w.dir, st, st.Rule, w)
		}
	}
	if seen != len(named) {
		t.Errorf("checked %d named cases, want %d", seen, len(named))
	}

	// Bad requests.
	for _, req := range []felix.ExplainRequest{
		{From: e.ns + "/a", To: e.ns + "/nobody", Protocol: "TCP", Port: 80},
		{From: e.ns + "/a", To: e.ns + "/b", Protocol: "GRE", Port: 80},
		{From: "not-an-ip", To: e.ns + "/b", Protocol: "TCP", Port: 80},
		{From: e.ns + "/a", To: e.ns + "/b", Protocol: "TCP"},
	} {
		if _, err := e.f.ExplainPolicy(context.Background(), req); err == nil {
			t.Errorf("explain %+v did not fail", req)
		} else if !errors.Is(err, felix.ErrBadRequest) && !errors.Is(err, felix.ErrUnknownEndpoint) {
			t.Errorf("explain %+v: %v, want a bad request or unknown endpoint", req, err)
		}
	}
}

func TestDropsNameEndpointPeerPortAndRule(t *testing.T) {
	e := setupExplain(t, "10.94.1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ch, err := e.f.SubscribeDrops(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// A second subscriber gets the same events (one ring reader, fanned out).
	ch2, err := e.f.SubscribeDrops(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a, c := e.pods["a"], e.pods["c"]
	if explainProbe(a, c.ip, "TCP", 81, 300*time.Millisecond) {
		t.Fatal("a -> c TCP/81 got through; the policy denies it")
	}
	match := func(ev felix.DropEvent) bool {
		return ev.Endpoint == e.ns+"/wep-c" && ev.Peer == a.ip && ev.DstPort == 81 && ev.Protocol == "TCP"
	}
	for i, sub := range []<-chan felix.DropEvent{ch, ch2} {
		for {
			select {
			case ev := <-sub:
				t.Logf("subscriber %d: %+v rule %+v", i, ev, ev.Rule)
				if !match(ev) {
					continue
				}
				if ev.Direction != "ingress" || ev.Reason != "policy" || ev.PeerEndpoint != e.ns+"/wep-a" ||
					explainRuleName(ev.Rule) != "NetworkPolicy "+e.ns+"/c-ingress" || ev.Rule.Index != 0 || ev.Rule.Action != "Deny" {
					t.Errorf("drop event %+v rule %+v", ev, ev.Rule)
				}
			case <-ctx.Done():
				t.Fatalf("subscriber %d: no drop event for a -> c TCP/81", i)
			}
			break
		}
	}
	cancel()
	for range ch { // closed once ctx ends
	}
}
