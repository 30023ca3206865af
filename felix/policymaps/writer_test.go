package policymaps

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/tabbynet/tabby/ebpf"
	"github.com/tabbynet/tabby/ebpf/ebpftest"
	"github.com/tabbynet/tabby/felix/policy"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

const (
	tcp  = policy.ProtoTCP
	udp  = policy.ProtoUDP
	icmp = policy.ProtoICMP
	sctp = policy.ProtoSCTP
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func kport(p corev1.Protocol, port int, end ...int32) networkingv1.NetworkPolicyPort {
	n := intstr.FromInt32(int32(port))
	np := networkingv1.NetworkPolicyPort{Protocol: &p, Port: &n}
	if len(end) > 0 {
		np.EndPort = &end[0]
	}
	return np
}

func podPeer(app string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}}
}

func blockPeer(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

// input is three pods of namespace shop; db admits web on 5432, 192.168/16 but not
// 192.168.1/24 on TCP 8000-8003 and UDP 53, and (withHTTPS) 172.16/12 on TCP 443; web
// may only reach db on 5432 (and withRedis 6379) and non-10/8 addresses on UDP 53.
func input(withHTTPS, withRedis bool) *policy.Input {
	ep := func(name string, ips ...string) policy.Endpoint {
		e := policy.Endpoint{Namespace: "shop", Name: name, Labels: map[string]string{"app": name}}
		for _, s := range ips {
			e.IPs = append(e.IPs, addr(s))
		}
		return e
	}
	dbIngress := []networkingv1.NetworkPolicyIngressRule{
		{From: []networkingv1.NetworkPolicyPeer{podPeer("web")},
			Ports: []networkingv1.NetworkPolicyPort{kport(corev1.ProtocolTCP, 5432)}},
		{From: []networkingv1.NetworkPolicyPeer{blockPeer("192.168.0.0/16", "192.168.1.0/24")},
			Ports: []networkingv1.NetworkPolicyPort{kport(corev1.ProtocolTCP, 8000, 8003), kport(corev1.ProtocolUDP, 53)}},
	}
	if withHTTPS {
		dbIngress = append(dbIngress, networkingv1.NetworkPolicyIngressRule{
			From:  []networkingv1.NetworkPolicyPeer{blockPeer("172.16.0.0/12")},
			Ports: []networkingv1.NetworkPolicyPort{kport(corev1.ProtocolTCP, 443)}})
	}
	webEgress := []networkingv1.NetworkPolicyEgressRule{
		{To: []networkingv1.NetworkPolicyPeer{podPeer("db")},
			Ports: []networkingv1.NetworkPolicyPort{kport(corev1.ProtocolTCP, 5432)}},
		{To: []networkingv1.NetworkPolicyPeer{blockPeer("0.0.0.0/0", "10.0.0.0/8")},
			Ports: []networkingv1.NetworkPolicyPort{kport(corev1.ProtocolUDP, 53)}},
	}
	if withRedis {
		webEgress = append(webEgress, networkingv1.NetworkPolicyEgressRule{
			To:    []networkingv1.NetworkPolicyPeer{podPeer("db")},
			Ports: []networkingv1.NetworkPolicyPort{kport(corev1.ProtocolTCP, 6379)}})
	}
	return &policy.Input{
		Namespaces: map[string]map[string]string{"shop": {"kubernetes.io/metadata.name": "shop"}},
		Endpoints: []policy.Endpoint{ep("web", "10.0.0.1"), ep("db", "10.0.0.2"),
			ep("client", "10.0.0.3", "fd00::3")},
		KubePolicies: []networkingv1.NetworkPolicy{
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-ingress"},
				Spec: networkingv1.NetworkPolicySpec{
					PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
					Ingress:     dbIngress}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-egress"},
				Spec: networkingv1.NetworkPolicySpec{
					PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
					PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress},
					Egress:      webEgress}},
		},
	}
}

func compile(t *testing.T, withHTTPS, withRedis bool) *policy.Compiled {
	t.Helper()
	c, err := policy.Compile(input(withHTTPS, withRedis))
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	return c
}

func macOf(id uint32) net.HardwareAddr { return net.HardwareAddr{0x02, 0, 0, 0, 0, byte(id)} }

// endpoints places the endpoint keyed under on ifindex 1 (where BPF_PROG_TEST_RUN
// packets arrive) and the others on 100+id.
func endpoints(c *policy.Compiled, under string) []Endpoint {
	var eps []Endpoint
	for _, t := range c.Endpoints {
		e := Endpoint{Ifindex: 100 + int(t.ID), ID: t.ID, IPv4: t.IPs, MAC: macOf(t.ID)}
		if t.Key == under {
			e.Ifindex = ebpf.LoopbackIfindex
		}
		eps = append(eps, e)
	}
	return eps
}

// expected is the map contents c and eps must give, translated independently of the
// Writer.
func expected(t *testing.T, c *policy.Compiled, eps []Endpoint) *state {
	t.Helper()
	s := newState()
	hes, err := c.HashEntries(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hes {
		v := ebpf.PolicyValue{Verdict: ebpf.Deny, RuleID: uint32(h.Decision.RuleID + 1)}
		if h.Decision.RuleID < 0 {
			v.RuleID = 0
		}
		if h.Decision.Log {
			v.LogRuleID = uint32(h.Decision.LogRuleID + 1)
		}
		if h.Decision.Verdict == policy.Allow {
			v.Verdict = ebpf.Allow
		}
		s.policy[ebpf.PolicyKey{Endpoint: h.Endpoint, Direction: ebpf.Direction(h.Direction), Proto: h.Proto,
			Port: h.Port, Peer: h.Class}] = v
	}
	for _, e := range c.IPCache {
		if e.Prefix.Addr().Is4() {
			s.ipcache[e.Prefix] = e.Class
		}
	}
	for _, e := range eps {
		var tb *policy.EndpointTables
		for i := range c.Endpoints {
			if c.Endpoints[i].ID == e.ID {
				tb = &c.Endpoints[i]
			}
		}
		v := endpointValue{ID: e.ID, IngressDefault: ebpf.Allow, EgressDefault: ebpf.Allow, HasMAC: true}
		if tb.Ingress.Selected {
			v.IngressDefault = ebpf.Deny
		}
		if tb.Egress.Selected {
			v.EgressDefault = ebpf.Deny
		}
		copy(v.MAC[:], e.MAC)
		for _, a := range e.IPv4 {
			if a.Is4() {
				v.Addrs[v.N] = a
				v.N++
			}
		}
		s.endpoints[e.Ifindex] = v
	}
	return s
}

// checkMaps dumps the pinned maps and compares them with want.
func checkMaps(t *testing.T, dp *ebpf.Datapath, want *state) {
	t.Helper()
	got, _, err := dump(dp.PinDir())
	if err != nil {
		t.Fatal(err)
	}
	diffMaps(t, "ipcache", got.ipcache, want.ipcache)
	diffMaps(t, "policy", got.policy, want.policy)
	diffMaps(t, "endpoints", got.endpoints, want.endpoints)
}

func diffMaps[K comparable, V comparable](t *testing.T, name string, got, want map[K]V) {
	t.Helper()
	bad := 0
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			bad++
			if bad < 5 {
				t.Errorf("%s[%v] = %v (present %t), want %v", name, k, g, ok, v)
			}
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			bad++
			if bad < 5 {
				t.Errorf("%s[%v] = %v, want absent", name, k, v)
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%s: %d differences (%d entries, want %d)", name, bad, len(got), len(want))
	}
}

// diffStats is what turning a into b costs, map by map.
func diffStats(a, b *state) Stats {
	return Stats{IPCache: diffMap(a.ipcache, b.ipcache), Policy: diffMap(a.policy, b.policy),
		Endpoints: diffMap(a.endpoints, b.endpoints)}
}

func diffMap[K comparable, V comparable](a, b map[K]V) MapStats {
	var s MapStats
	for k, v := range b {
		if old, ok := a[k]; !ok {
			s.Added++
		} else if old != v {
			s.Updated++
		}
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			s.Deleted++
		}
	}
	return s
}

var peers = []string{"10.0.0.1", "10.0.0.2", "10.0.0.3", "10.9.9.9", "192.168.5.5", "192.168.1.7",
	"172.16.3.3", "8.8.8.8"}

var services = []struct {
	proto uint8
	port  uint16
}{{tcp, 5432}, {tcp, 443}, {tcp, 8001}, {tcp, 8003}, {tcp, 8004}, {tcp, 6379}, {udp, 53}, {udp, 5432},
	{sctp, 5432}, {icmp, policy.ICMPPort(8, 0)}, {icmp, policy.ICMPPort(0, 0)}, {icmp, policy.ICMPPort(3, 4)},
	{icmp, policy.ICMPPort(3, 1)}, {icmp, policy.ICMPPort(11, 0)}, {icmp, policy.ICMPPort(5, 1)}}

var sport uint16 = 20000 // for ICMP, port is policy.ICMPPort(type, code)

// checkVerdicts runs packets to and from the endpoint on ifindex 1 through the real
// program and compares each with the evaluator's verdict for that direction.
func checkVerdicts(t *testing.T, dp *ebpf.Datapath, c *policy.Compiled, under string) {
	t.Helper()
	if err := dp.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	ev := policy.NewEvaluator(c)
	tb := tableOf(c, under)
	local := tb.IPs[0]
	seen := map[ebpf.Result]int{}
	run := func(dir ebpf.Direction, fr []byte, want policy.Verdict, what string) {
		t.Helper()
		// A fresh conntrack: an ICMP packet (no ports) would otherwise read as the
		// reply to the previous one the other way.
		if err := dp.FlushConntrack(); err != nil {
			t.Fatal(err)
		}
		got, err := dp.RunPacket(dir, fr)
		if err != nil {
			t.Fatal(err)
		}
		seen[got]++
		wantRes := ebpf.Drop
		if want == policy.Allow {
			wantRes = ebpf.Pass
		}
		if got != wantRes {
			t.Helper()
			t.Errorf("%s %s: datapath %v, policy evaluator %v", under, what, got, want)
		}
	}
	for _, p := range peers {
		peer := addr(p)
		if peer == local {
			continue
		}
		for _, s := range services {
			sport++
			r := ev.Verdict(peer, local, s.proto, s.port)
			run(ebpf.Ingress, frame(peerMAC, peer, local, s.proto, sport, s.port), r.Ingress.Decision.Verdict,
				fmt.Sprintf("ingress from %s proto %d port %d", peer, s.proto, s.port))
			r = ev.Verdict(local, peer, s.proto, s.port)
			run(ebpf.Egress, frame(macOf(tb.ID), local, peer, s.proto, sport, s.port), r.Egress.Decision.Verdict,
				fmt.Sprintf("egress to %s proto %d port %d", peer, s.proto, s.port))
		}
	}
	// Probes to a selected endpoint must see both outcomes; an unselected one allows all.
	selected := tb.Ingress.Selected || tb.Egress.Selected
	if seen[ebpf.Pass] == 0 || (seen[ebpf.Drop] == 0) == selected {
		t.Errorf("%s: %d passed, %d dropped", under, seen[ebpf.Pass], seen[ebpf.Drop])
	}
	t.Logf("%s: %d packets passed, %d dropped, all as the evaluator says", under, seen[ebpf.Pass], seen[ebpf.Drop])
}

func tableOf(c *policy.Compiled, key string) *policy.EndpointTables {
	for i := range c.Endpoints {
		if c.Endpoints[i].Key == key {
			return &c.Endpoints[i]
		}
	}
	panic("no endpoint " + key)
}

func mustSync(t *testing.T, w *Writer, c *policy.Compiled, eps []Endpoint) Stats {
	t.Helper()
	st, err := w.Sync(c, eps)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	t.Logf("stats %+v", st)
	return st
}

func TestSync(t *testing.T) {
	ebpftest.Require(t)
	dir := ebpftest.PinDir(t)
	dp := loadAt(t, dir)
	w := New(dp, zaptest.NewLogger(t))

	c1 := compile(t, true, true)
	eps := endpoints(c1, "shop/db")
	want1 := expected(t, c1, eps)
	st := mustSync(t, w, c1, eps)
	if !st.Dumped || st != (Stats{Dumped: true, SkippedIPv6: st.SkippedIPv6,
		IPCache:   MapStats{Added: len(want1.ipcache)},
		Policy:    MapStats{Added: len(want1.policy)},
		Endpoints: MapStats{Added: 3}}) {
		t.Fatalf("first sync: %+v, want everything added (%d ipcache, %d policy)", st, len(want1.ipcache),
			len(want1.policy))
	}
	if st.SkippedIPv6 == 0 {
		t.Errorf("client's fd00::3 and the v6 ipcache entries were not counted as skipped")
	}
	checkMaps(t, dp, want1)
	checkVerdicts(t, dp, c1, "shop/db")

	// Nothing changed: nothing written.
	if st := mustSync(t, w, c1, eps); st.Writes() != 0 || st.Dumped {
		t.Fatalf("idempotent sync wrote: %+v", st)
	}

	// Moving endpoints between interfaces rewrites endpoints only.
	for _, under := range []string{"shop/web", "shop/client"} {
		eps := endpoints(c1, under)
		st := mustSync(t, w, c1, eps)
		if st.Policy.Writes()+st.IPCache.Writes() != 0 || st.Endpoints.Writes() == 0 {
			t.Fatalf("endpoint move: %+v", st)
		}
		checkMaps(t, dp, expected(t, c1, eps))
		checkVerdicts(t, dp, c1, under)
	}

	// Remove web's last rule (db on TCP 6379): no class or rule id moves, so the cost
	// is that rule's entries alone.
	eps = endpoints(c1, "shop/web")
	before := expected(t, c1, eps)
	mustSync(t, w, c1, eps)
	checkVerdicts(t, dp, c1, "shop/web")
	redis := frame(macOf(tableOf(c1, "shop/web").ID), addr("10.0.0.1"), addr("10.0.0.2"), tcp, 998, 6379)
	if r, err := dp.RunPacket(ebpf.Egress, redis); err != nil || r != ebpf.Pass {
		t.Fatalf("web to db:6379 with the rule: %v %v, want pass", r, err)
	}
	c2 := compile(t, true, false)
	want2 := expected(t, c2, eps)
	wantSt := diffStats(before, want2)
	st = mustSync(t, w, c2, eps)
	st.SkippedIPv6 = 0
	if st != wantSt || st != (Stats{Policy: MapStats{Deleted: 1}}) {
		t.Fatalf("removing web's redis rule: %+v, want %+v (one entry deleted)", st, wantSt)
	}
	checkMaps(t, dp, want2)
	checkVerdicts(t, dp, c2, "shop/web")
	if err := dp.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	if r, err := dp.RunPacket(ebpf.Egress, redis); err != nil || r != ebpf.Drop {
		t.Fatalf("web to db:6379 after the rule's removal: %v %v, want drop", r, err)
	}

	// Remove db's 172.16/12 HTTPS rule. Its CIDR goes, so felix/policy renumbers peer
	// classes and later rule ids: the writes are exactly the compiled difference.
	eps = endpoints(c2, "shop/db")
	before = expected(t, c2, eps)
	mustSync(t, w, c2, eps)
	c3 := compile(t, false, false)
	want3 := expected(t, c3, eps)
	wantSt = diffStats(before, want3)
	st = mustSync(t, w, c3, eps)
	st.SkippedIPv6 = 0
	if st != wantSt || st.Policy.Deleted == 0 {
		t.Fatalf("removing db's HTTPS rule: %+v, want %+v", st, wantSt)
	}
	checkMaps(t, dp, want3)
	checkVerdicts(t, dp, c3, "shop/db")
	https := frame(peerMAC, addr("172.16.3.3"), addr("10.0.0.2"), tcp, 999, 443)
	if r, err := dp.RunPacket(ebpf.Ingress, https); err != nil || r != ebpf.Drop {
		t.Fatalf("HTTPS from 172.16.3.3 after the rule's removal: %v %v, want drop", r, err)
	}
	want2 = want3

	// Empty input removes everything.
	st = mustSync(t, w, nil, nil)
	if st != (Stats{IPCache: MapStats{Deleted: len(want2.ipcache)}, Policy: MapStats{Deleted: len(want2.policy)},
		Endpoints: MapStats{Deleted: 3}}) {
		t.Fatalf("empty sync: %+v", st)
	}
	checkMaps(t, dp, newState())
}

// TestRestart: a new Writer over maps pinned by an earlier one reads them back and
// writes only what differs, stray entries included.
func TestRestart(t *testing.T) {
	ebpftest.Require(t)
	dir := ebpftest.PinDir(t)
	dp := loadAt(t, dir)
	c := compile(t, true, true)
	eps := endpoints(c, "shop/db")
	want := expected(t, c, eps)
	mustSync(t, New(dp, nil), c, eps)
	if err := dp.Close(); err != nil {
		t.Fatal(err)
	}

	dp = loadAt(t, dir) // the maps survive in the pins
	checkMaps(t, dp, want)
	// Someone else's leftovers and one tampered entry.
	if err := dp.SetIPCache(netip.MustParsePrefix("203.0.113.0/24"), 4242); err != nil {
		t.Fatal(err)
	}
	if err := dp.SetPolicy(ebpf.PolicyKey{Endpoint: 99, Direction: ebpf.Egress, Peer: ebpf.ClassAny},
		ebpf.PolicyValue{Verdict: ebpf.Allow, RuleID: 7}); err != nil {
		t.Fatal(err)
	}
	if err := dp.SetEndpoint(77, ebpf.Endpoint{ID: 99, IngressDefault: ebpf.Allow, EgressDefault: ebpf.Allow}); err != nil {
		t.Fatal(err)
	}
	for k, v := range want.policy {
		v.Verdict = 3 - v.Verdict // allow <-> deny
		if err := dp.SetPolicy(k, v); err != nil {
			t.Fatal(err)
		}
		break
	}

	st := mustSync(t, New(dp, nil), c, eps)
	st.SkippedIPv6 = 0
	wantSt := Stats{Dumped: true, IPCache: MapStats{Deleted: 1}, Policy: MapStats{Updated: 1, Deleted: 1},
		Endpoints: MapStats{Deleted: 1}}
	if st != wantSt {
		t.Fatalf("sync after restart: %+v, want %+v", st, wantSt)
	}
	checkMaps(t, dp, want)
	checkVerdicts(t, dp, c, "shop/db")
}

// TestSyncInvalid: input the maps cannot hold fails before anything is read or written
// (so it needs no datapath).
func TestSyncInvalid(t *testing.T) {
	c := compile(t, true, true)
	w := New(nil, nil)
	many := []netip.Addr{addr("10.0.0.2"), addr("10.0.0.4"), addr("10.0.0.5"), addr("10.0.0.6"), addr("10.0.0.7")}
	for name, eps := range map[string][]Endpoint{
		"unknown id":     {{Ifindex: 3, ID: 42}},
		"dup ifindex":    {{Ifindex: 3, ID: 1}, {Ifindex: 3, ID: 2}},
		"bad ifindex":    {{Ifindex: 0, ID: 1}},
		"too many addrs": {{Ifindex: 3, ID: 2, IPv4: many}},
		"bad mac":        {{Ifindex: 3, ID: 2, MAC: net.HardwareAddr{1, 2, 3}}},
	} {
		if _, err := w.Sync(c, eps); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	w.MaxPerTable = 2
	if _, err := w.Sync(c, nil); !errors.Is(err, policy.ErrTooLarge) {
		t.Errorf("cap of 2 entries per table: %v, want ErrTooLarge", err)
	}
}
