package felix_test

// Real-traffic tests of Tabby policy semantics (felix/policy's doc is the contract):
// each step writes objects to the real kube-apiserver, waits until felix reports the
// maps programmed from exactly those versions, then probes with new flows (TCP
// connects, UDP request/replies, pings) between pods on veths with the real programs.

import (
	"fmt"
	"net"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/felix/internal/nettest"
)

// TestTabbyPolicyOrder: two Tabby NetworkPolicies select b, one allowing and one
// denying a; the lower order decides, and a policy without an order comes after any
// policy with one.
func TestTabbyPolicyOrder(t *testing.T) {
	c := newTPCluster(t)
	ns := c.namespace("tpo", nil)
	a := c.addPod("a", ns, "10.93.0.1", map[string]string{"app": "a"})
	b := c.addPod("b", ns, "10.93.0.2", map[string]string{"app": "b"})
	c.tcpServe(b, 80)
	c.startFelix()
	c.check("no policy", tpTCPTo(a, b, 80, true))

	from := v1.EntityRule{Selector: "app == 'a'"}
	allow := func(o *float64) *v1.NetworkPolicy {
		return tpNP(ns, "allow-a", o, "app == 'b'", tpIngress, []v1.Rule{{Action: v1.ActionAllow, Source: from}}, nil)
	}
	deny := func(o *float64) *v1.NetworkPolicy {
		return tpNP(ns, "deny-a", o, "app == 'b'", tpIngress, []v1.Rule{{Action: v1.ActionDeny, Source: from}}, nil)
	}
	steps := []struct {
		name              string
		allowOrd, denyOrd *float64
		pass              bool
	}{
		{"allow 10, deny 20", tpOrder(10), tpOrder(20), true},
		{"allow 20, deny 10", tpOrder(20), tpOrder(10), false},
		{"allow 20, deny without order", tpOrder(20), nil, true},
		{"allow without order, deny 5", nil, tpOrder(5), false},
		{"allow 1000.5, deny 1000", tpOrder(1000.5), tpOrder(1000), false},
		{"allow 999.5, deny 1000", tpOrder(999.5), tpOrder(1000), true},
	}
	for _, s := range steps {
		c.put(allow(s.allowOrd))
		c.put(deny(s.denyOrd))
		c.sync(s.name)
		c.check(s.name, tpTCPTo(a, b, 80, s.pass))
	}
}

// TestTabbyPassAndDeny: a GlobalNetworkPolicy Pass skips the rest of Tabby's one tier,
// namespaced policies included, and the namespace profile allows; a Pass ordered
// after the deciding policy does nothing; within a policy a Deny beats a later Allow,
// and a global Deny beats a later namespaced Allow.
func TestTabbyPassAndDeny(t *testing.T) {
	c := newTPCluster(t)
	ns := c.namespace("tpp", nil)
	a := c.addPod("a", ns, "10.93.0.1", map[string]string{"app": "a"})
	b := c.addPod("b", ns, "10.93.0.2", map[string]string{"app": "b"})
	c.tcpServe(b, 80)
	c.tcpServe(b, 81)
	c.startFelix()

	sel := fmt.Sprintf("tabby-test == '%s' && app == 'b'", c.id)
	fromA := v1.EntityRule{Selector: fmt.Sprintf("tabby-test == '%s' && app == 'a'", c.id)}
	np := tpNP(ns, "deny-a", tpOrder(100), "app == 'b'", tpIngress,
		[]v1.Rule{{Action: v1.ActionDeny, Source: v1.EntityRule{Selector: "app == 'a'"}}}, nil)
	c.put(np)
	c.sync("namespaced deny")
	c.check("namespaced deny", tpTCPTo(a, b, 80, false), tpTCPTo(a, b, 81, false))

	gnp := func(order float64, rules ...v1.Rule) *v1.GlobalNetworkPolicy {
		return tpGNP("tp-pass-"+c.id, v1.GlobalNetworkPolicySpec{Order: tpOrder(order), Selector: sel,
			Types: tpIngress, Ingress: rules})
	}
	c.put(gnp(10, v1.Rule{Action: v1.ActionPass, Source: fromA}))
	c.sync("global pass before the namespaced deny")
	c.check("global pass before the namespaced deny", tpTCPTo(a, b, 80, true), tpTCPTo(a, b, 81, true))

	c.put(gnp(200, v1.Rule{Action: v1.ActionPass, Source: fromA}))
	c.sync("global pass after the namespaced deny")
	c.check("global pass after the namespaced deny", tpTCPTo(a, b, 80, false), tpTCPTo(a, b, 81, false))

	c.put(gnp(10,
		v1.Rule{Action: v1.ActionDeny, Source: fromA, Protocol: tpProto("TCP"), Destination: v1.EntityRule{Ports: tpPorts("80")}},
		v1.Rule{Action: v1.ActionAllow, Source: fromA}))
	c.sync("global deny 80 then allow")
	c.check("global deny 80 then allow", tpTCPTo(a, b, 80, false), tpTCPTo(a, b, 81, true))

	// The namespaced policy now allows, after the global Deny of port 80.
	c.put(tpNP(ns, "deny-a", tpOrder(100), "app == 'b'", tpIngress,
		[]v1.Rule{{Action: v1.ActionAllow, Source: v1.EntityRule{Selector: "app == 'a'"}}}, nil))
	c.put(gnp(10, v1.Rule{Action: v1.ActionDeny, Source: fromA, Protocol: tpProto("TCP"),
		Destination: v1.EntityRule{Ports: tpPorts("80")}}))
	c.sync("global deny before namespaced allow")
	c.check("global deny before namespaced allow", tpTCPTo(a, b, 80, false), tpTCPTo(a, b, 81, true))
}

// TestTabbyGlobalAcrossNamespaces: a GlobalNetworkPolicy's selector picks endpoints
// in every namespace, a rule's namespaceSelector picks peers by their namespace's
// labels, spec.namespaceSelector restricts the policy to some namespaces, and a
// namespace relabel changes all that.
func TestTabbyGlobalAcrossNamespaces(t *testing.T) {
	c := newTPCluster(t)
	red := c.namespace("tpred", map[string]string{"team": "red"})
	blue := c.namespace("tpblue", map[string]string{"team": "blue"})
	ca := c.addPod("ca", red, "10.93.0.1", map[string]string{"app": "client"})
	cb := c.addPod("cb", blue, "10.93.0.2", map[string]string{"app": "client"})
	sa := c.addPod("sa", red, "10.93.0.3", map[string]string{"app": "server"})
	sb := c.addPod("sb", blue, "10.93.0.4", map[string]string{"app": "server"})
	for _, s := range []*tpPod{sa, sb} {
		c.tcpServe(s, 80)
	}
	c.startFelix()
	all := func(caSa, caSb, cbSa, cbSb bool) []tpExpect {
		return []tpExpect{tpTCPTo(ca, sa, 80, caSa), tpTCPTo(ca, sb, 80, caSb), tpTCPTo(cb, sa, 80, cbSa),
			tpTCPTo(cb, sb, 80, cbSb)}
	}
	c.check("no policy", all(true, true, true, true)...)

	spec := v1.GlobalNetworkPolicySpec{Order: tpOrder(10),
		Selector: fmt.Sprintf("tabby-test == '%s' && app == 'server'", c.id), Types: tpIngress,
		Ingress: []v1.Rule{
			{Action: v1.ActionDeny, Source: v1.EntityRule{Selector: "app == 'client'", NamespaceSelector: "team == 'red'"}},
			{Action: v1.ActionAllow},
		}}
	gnp := tpGNP("tp-ns-"+c.id, spec)
	c.put(gnp)
	c.sync("servers of both namespaces deny red clients")
	c.check("servers of both namespaces deny red clients", all(false, false, true, true)...)

	spec.NamespaceSelector = "team == 'blue'"
	c.put(tpGNP("tp-ns-"+c.id, spec))
	c.sync("only blue servers")
	c.check("only blue servers", all(true, false, true, true)...)

	// red becomes blue: both servers are selected, and no client is red any more.
	c.relabelNamespace(red, map[string]string{"team": "blue"})
	nettest.Eventually(t, 30*time.Second, "namespace relabel", func() string {
		if err := tpTCP(ca, sb.ip, 80); err != nil {
			return "ca -> sb:80: " + err.Error()
		}
		return ""
	})
	c.check("red relabelled blue", all(true, true, true, true)...)

	// blue becomes red: both servers leave the policy.
	c.relabelNamespace(blue, map[string]string{"team": "red"})
	c.relabelNamespace(red, map[string]string{"team": "red"})
	spec.NamespaceSelector = ""
	c.put(tpGNP("tp-ns-"+c.id, spec))
	c.sync("all red")
	nettest.Eventually(t, 30*time.Second, "namespace relabel", func() string {
		if tpTCP(cb, sa.ip, 80) == nil {
			return "cb -> sa:80 still connects"
		}
		return ""
	})
	c.check("all red", all(false, false, false, false)...)
}

// TestTabbyNetworkSets: a rule selecting a NetworkSet (or GlobalNetworkSet) by its
// labels admits addresses inside its nets and not others; updating the set's nets
// changes who gets in.
func TestTabbyNetworkSets(t *testing.T) {
	c := newTPCluster(t)
	ns := c.namespace("tpset", nil)
	a := c.addPod("a", ns, "10.93.0.1", map[string]string{"app": "a"})
	b := c.addPod("b", ns, "10.93.0.2", map[string]string{"app": "b"})
	srv := c.addPod("srv", ns, "10.93.0.3", map[string]string{"app": "srv"})
	c.tcpServe(srv, 80)
	c.startFelix()

	c.put(tpNP(ns, "from-trusted", nil, "app == 'srv'", tpIngress,
		[]v1.Rule{{Action: v1.ActionAllow, Source: v1.EntityRule{Selector: "role == 'trusted'"}}}, nil))
	c.sync("no set yet")
	c.check("no set yet", tpTCPTo(a, srv, 80, false), tpTCPTo(b, srv, 80, false))

	// A namespaced policy's selector sees only the network sets of its namespace.
	other := c.namespace("tpsetx", nil)
	c.put(tpNetworkSet(other, "trusted", map[string]string{"role": "trusted"}, a.ip+"/32"))
	c.sync("set of another namespace")
	c.check("set of another namespace", tpTCPTo(a, srv, 80, false), tpTCPTo(b, srv, 80, false))

	c.put(tpNetworkSet(ns, "trusted", map[string]string{"role": "trusted"}, a.ip+"/32"))
	c.sync("network set holds a")
	c.check("network set holds a", tpTCPTo(a, srv, 80, true), tpTCPTo(b, srv, 80, false))

	c.put(tpNetworkSet(ns, "trusted", map[string]string{"role": "trusted"}, b.ip+"/32"))
	c.sync("network set holds b")
	c.check("network set holds b", tpTCPTo(a, srv, 80, false), tpTCPTo(b, srv, 80, true))

	c.put(tpNetworkSet(ns, "trusted", map[string]string{"role": "other"}, a.ip+"/32", b.ip+"/32"))
	c.sync("network set relabelled")
	c.check("network set relabelled", tpTCPTo(a, srv, 80, false), tpTCPTo(b, srv, 80, false))

	gsel := map[string]string{"tp-gset": c.id}
	c.put(tpGNP("tp-gset-"+c.id, v1.GlobalNetworkPolicySpec{Order: tpOrder(1),
		Selector: fmt.Sprintf("tabby-test == '%s' && app == 'srv'", c.id), Types: tpIngress,
		Ingress: []v1.Rule{{Action: v1.ActionAllow, Source: v1.EntityRule{Selector: "tp-gset == '" + c.id + "'"}}}}))
	c.put(tpGlobalNetworkSet("tp-gset-"+c.id, gsel, "10.93.0.0/31")) // .0 and .1: a, not b
	c.sync("global network set holds a")
	c.check("global network set holds a", tpTCPTo(a, srv, 80, true), tpTCPTo(b, srv, 80, false))

	c.put(tpGlobalNetworkSet("tp-gset-"+c.id, gsel, "10.93.0.2/31")) // .2 and .3: b
	c.sync("global network set holds b")
	c.check("global network set holds b", tpTCPTo(a, srv, 80, false), tpTCPTo(b, srv, 80, true))

	c.del(tpGlobalNetworkSet("tp-gset-"+c.id, gsel))
	c.sync("global network set deleted")
	c.check("global network set deleted", tpTCPTo(a, srv, 80, false), tpTCPTo(b, srv, 80, false))
}

// TestTabbyRuleMatchers: nets/notNets, ports/notPorts, protocol/notProtocol and an
// ICMP protocol rule, each checked with traffic it must admit and traffic it must not.
func TestTabbyRuleMatchers(t *testing.T) {
	c := newTPCluster(t)
	ns := c.namespace("tpmatch", nil)
	a := c.addPod("a", ns, "10.93.0.1", map[string]string{"app": "a"})
	b := c.addPod("b", ns, "10.93.0.2", map[string]string{"app": "b"})
	srv := c.addPod("srv", ns, "10.93.0.3", map[string]string{"app": "srv"})
	for _, p := range []int{80, 81, 82} {
		c.tcpServe(srv, p)
	}
	c.udpServe(srv, 7000)
	c.startFelix()

	put := func(step string, rules ...v1.Rule) {
		c.put(tpNP(ns, "matchers", nil, "app == 'srv'", tpIngress, rules, nil))
		c.sync(step)
	}
	// Pings are denied until the last step: an ICMP echo "flow" has no ports, so once
	// allowed, conntrack lets the same pair's later pings through.
	step := "tcp from a's /32 to port 80"
	put(step, v1.Rule{Action: v1.ActionAllow, Protocol: tpProto("TCP"),
		Source: v1.EntityRule{Nets: []string{a.ip + "/32"}}, Destination: v1.EntityRule{Ports: tpPorts("80")}})
	c.check(step, tpTCPTo(a, srv, 80, true), tpTCPTo(a, srv, 81, false), tpTCPTo(b, srv, 80, false),
		tpUDPTo(a, srv, 7000, false), tpPingTo(a, srv, false))

	step = "tcp from notNets a's /32 to notPorts 80"
	put(step, v1.Rule{Action: v1.ActionAllow, Protocol: tpProto("TCP"),
		Source: v1.EntityRule{NotNets: []string{a.ip + "/32"}}, Destination: v1.EntityRule{NotPorts: tpPorts("80")}})
	c.check(step, tpTCPTo(a, srv, 81, false), tpTCPTo(b, srv, 80, false), tpTCPTo(b, srv, 81, true),
		tpTCPTo(b, srv, 82, true), tpUDPTo(b, srv, 7000, false))

	step = "nets 10.93.0.0/30 except notNets b, port range 81:82"
	put(step, v1.Rule{Action: v1.ActionAllow, Protocol: tpProto("TCP"),
		Source:      v1.EntityRule{Nets: []string{"10.93.0.0/30"}, NotNets: []string{b.ip + "/32"}},
		Destination: v1.EntityRule{Ports: tpPorts("81:82")}})
	c.check(step, tpTCPTo(a, srv, 80, false), tpTCPTo(a, srv, 81, true), tpTCPTo(a, srv, 82, true),
		tpTCPTo(b, srv, 81, false))

	step = "udp only"
	put(step, v1.Rule{Action: v1.ActionAllow, Protocol: tpProto("UDP")})
	c.check(step, tpUDPTo(a, srv, 7000, true), tpTCPTo(a, srv, 80, false), tpPingTo(a, srv, false))

	step = "notProtocol ICMP"
	put(step, v1.Rule{Action: v1.ActionAllow, NotProtocol: tpProto("ICMP")})
	c.check(step, tpUDPTo(a, srv, 7000, true), tpTCPTo(a, srv, 80, true), tpPingTo(a, srv, false))

	step = "notProtocol TCP, deny first"
	put(step, v1.Rule{Action: v1.ActionDeny, Protocol: tpProto("ICMP"), Source: v1.EntityRule{Nets: []string{b.ip + "/32"}}},
		v1.Rule{Action: v1.ActionAllow, NotProtocol: tpProto("TCP")})
	c.check(step, tpUDPTo(a, srv, 7000, true), tpTCPTo(a, srv, 80, false), tpPingTo(b, srv, false),
		tpPingTo(a, srv, true))

	step = "icmp only"
	put(step, v1.Rule{Action: v1.ActionAllow, Protocol: tpProto("ICMP")})
	c.check(step, tpPingTo(a, srv, true), tpPingTo(b, srv, true), tpTCPTo(a, srv, 80, false),
		tpUDPTo(a, srv, 7000, false))
}

// TestTabbyAntiSpoofing: a workload sending from an address that is not its
// endpoint's is dropped while its real address passes; with a MAC in its endpoint, a
// frame from another source MAC is dropped.
func TestTabbyAntiSpoofing(t *testing.T) {
	c := newTPCluster(t)
	ns := c.namespace("tpspoof", nil)
	a := c.addPod("a", ns, "10.93.0.1", map[string]string{"app": "a"})
	b := c.addPod("b", ns, "10.93.0.2", map[string]string{"app": "b"})
	srv := c.udpServe(b, 7000)
	const forged = "10.93.0.99"
	c.n.Run("ip", "-n", a.netns, "addr", "add", forged+"/32", "dev", "eth0")
	c.startFelix()

	// received says whether the datagram carrying token reached b, once a later
	// datagram from a's real address (sent after it, on the same path) has.
	received := func(token string) bool {
		t.Helper()
		nettest.Eventually(t, 10*time.Second, "marker from a's real address", func() string {
			tok, err := tpUDP(a, a.ip, b.ip, 7000)
			if err != nil {
				return err.Error()
			}
			if _, ok := srv.received(tok); !ok {
				return "marker not recorded"
			}
			return ""
		})
		_, ok := srv.received(token)
		return ok
	}

	if _, err := tpUDP(a, a.ip, b.ip, 7000); err != nil {
		t.Errorf("udp from a's own address: %v\n%s", err, c.diag())
	}
	tok, err := tpUDP(a, forged, b.ip, 7000)
	if err == nil {
		t.Errorf("udp from forged %s got an echo", forged)
	}
	if received(tok) {
		t.Errorf("udp from forged %s reached b\n%s", forged, c.diag())
	}
	if err := inPod(a.netns, func() error {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(forged)}, Timeout: tpProbeTimeout}
		conn, err := d.Dial("tcp4", b.ip+":7000")
		if err == nil {
			conn.Close()
			return fmt.Errorf("tcp from forged %s connected", forged)
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	// Control: with the address in a's endpoint the same datagram goes through.
	c.updateWEP(a, func(w *v1.WorkloadEndpoint) { w.Spec.IPNetworks = append(w.Spec.IPNetworks, forged+"/32") })
	nettest.Eventually(t, 30*time.Second, "the second address is a's", func() string {
		if _, err := tpUDP(a, forged, b.ip, 7000); err != nil {
			return "udp from " + forged + ": " + err.Error()
		}
		return ""
	})

	// MAC: an endpoint MAC that is not the pod's drops everything from it...
	var podMAC net.HardwareAddr
	if err := inPod(a.netns, func() error {
		l, err := net.InterfaceByName("eth0")
		if err == nil {
			podMAC = l.HardwareAddr
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	c.updateWEP(a, func(w *v1.WorkloadEndpoint) { w.Spec.MAC = "02:93:00:00:00:99" })
	nettest.Eventually(t, 30*time.Second, "wrong endpoint MAC drops", func() string {
		if _, err := tpUDP(a, a.ip, b.ip, 7000); err == nil {
			return "udp from a still echoed"
		}
		return ""
	})
	// ... the pod's own MAC passes ...
	c.updateWEP(a, func(w *v1.WorkloadEndpoint) { w.Spec.MAC = podMAC.String() })
	nettest.Eventually(t, 30*time.Second, "right endpoint MAC passes", func() string {
		if _, err := tpUDP(a, a.ip, b.ip, 7000); err != nil {
			return "udp from a: " + err.Error()
		}
		return ""
	})
	// ... and a frame from another source MAC (the pod changed its own) is dropped.
	c.n.Run("ip", "-n", a.netns, "link", "set", "eth0", "address", "02:93:00:00:00:77")
	tok, err = tpUDP(a, a.ip, b.ip, 7000)
	if err == nil {
		t.Errorf("udp from a with a changed MAC got an echo\n%s", c.diag())
	}
	c.n.Run("ip", "-n", a.netns, "link", "set", "eth0", "address", podMAC.String())
	if received(tok) {
		t.Error("udp from a with a changed MAC reached b")
	}
}

// TestTabbyConntrack: a's ingress denies b and a's egress allows b: a's connections
// to b get their replies (TCP and UDP) while b cannot open one to a.
func TestTabbyConntrack(t *testing.T) {
	c := newTPCluster(t)
	ns := c.namespace("tpct", nil)
	a := c.addPod("a", ns, "10.93.0.1", map[string]string{"app": "a"})
	b := c.addPod("b", ns, "10.93.0.2", map[string]string{"app": "b"})
	for _, p := range []*tpPod{a, b} {
		c.tcpServe(p, 80)
	}
	srvA := c.udpServe(a, 7000)
	c.udpServe(b, 7000)
	c.startFelix()
	c.check("no policy", tpTCPTo(a, b, 80, true), tpTCPTo(b, a, 80, true), tpUDPTo(a, b, 7000, true),
		tpUDPTo(b, a, 7000, true))

	c.put(tpNP(ns, "a", tpOrder(1), "app == 'a'", tpBoth,
		[]v1.Rule{{Action: v1.ActionDeny, Source: v1.EntityRule{Selector: "app == 'b'"}}},
		[]v1.Rule{{Action: v1.ActionAllow, Destination: v1.EntityRule{Selector: "app == 'b'"}}}))
	c.sync("a denies b in, allows b out")
	c.check("a denies b in, allows b out", tpTCPTo(a, b, 80, true), tpUDPTo(a, b, 7000, true),
		tpTCPTo(b, a, 80, false), tpUDPTo(b, a, 7000, false))

	// b's datagram must not have reached a at all (not just its echo lost): the probe
	// waited tpProbeTimeout, and a's server records a datagram before echoing it.
	tok, err := tpUDP(b, "", a.ip, 7000)
	if err == nil {
		t.Error("b -> a:7000 got an echo")
	}
	if _, ok := srvA.received(tok); ok {
		t.Error("b's datagram to a reached a")
	}

	// A long-lived flow opened by a keeps working both ways.
	if err := inPod(a.netns, func() error {
		conn, err := net.DialTimeout("tcp4", b.ip+":80", tpProbeTimeout)
		if err != nil {
			return err
		}
		defer conn.Close()
		// b's server closes at once: a FIN from b must reach a through a's ingress.
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := conn.Read(make([]byte, 1)); err == nil || tpIsTimeout(err) {
			return fmt.Errorf("no FIN from b: %v", err)
		}
		return nil
	}); err != nil {
		t.Errorf("a -> b established flow: %v", err)
	}
}

func tpIsTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestTabbyConntrackICMPEcho: a pinging b (a's egress allows b) must not let b's own
// echo requests through a's ingress, which denies b: b's request is a new flow, not a
// reply to a's, whatever its echo identifier (Linux conntrack and Calico tell request
// from reply by ICMP type). Echoes are sent on raw sockets to choose the identifier.
func TestTabbyConntrackICMPEcho(t *testing.T) {
	c := newTPCluster(t)
	ns := c.namespace("tpicmp", nil)
	a := c.addPod("a", ns, "10.93.0.1", map[string]string{"app": "a"})
	b := c.addPod("b", ns, "10.93.0.2", map[string]string{"app": "b"})
	c.startFelix()
	c.put(tpNP(ns, "a", tpOrder(1), "app == 'a'", tpBoth,
		[]v1.Rule{{Action: v1.ActionDeny, Source: v1.EntityRule{Selector: "app == 'b'"}}},
		[]v1.Rule{{Action: v1.ActionAllow, Destination: v1.EntityRule{Selector: "app == 'b'"}}}))
	c.sync("a denies b in, allows b out")
	const id = 0x7a93
	if err := tpEcho(b, a.ip, id, 1); err == nil {
		t.Error("b's echo request to a answered before a pinged b")
	}
	if err := tpEcho(a, b.ip, id, 2); err != nil {
		t.Fatalf("a's echo request to b: %v", err)
	}
	if err := tpEcho(b, a.ip, id+1, 3); err == nil {
		t.Error("b's echo request (another identifier) to a answered after a pinged b")
	}
	if err := tpEcho(b, a.ip, id, 4); err == nil {
		t.Error("BUG (ebpf/bpf/tabby.c conntrack): b's echo REQUEST to a, with the identifier of a's " +
			"echo flow to b, got through a's ingress, which denies b: ICMP conntrack keys on the echo " +
			"identifier but not the type, so b's request matches the reverse of a's flow as if a reply")
	}
	if err := tpPing(b, a.ip); err == nil {
		t.Error("b's ping to a got through a's ingress, which denies b")
	}
}

// tpEcho sends an ICMP echo request with identifier id and sequence seq from the pod
// to dst on a raw socket and waits up to tpProbeTimeout for the matching reply.
func tpEcho(p *tpPod, dst string, id, seq uint16) error {
	return inPod(p.netns, func() error {
		pc, err := net.ListenPacket("ip4:icmp", p.ip)
		if err != nil {
			return err
		}
		defer pc.Close()
		msg := []byte{8, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 't', 'p'}
		var sum uint32
		for i := 0; i < len(msg); i += 2 {
			sum += uint32(msg[i])<<8 | uint32(msg[i+1])
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		msg[2], msg[3] = byte(^sum>>8), byte(^sum)
		if _, err := pc.WriteTo(msg, &net.IPAddr{IP: net.ParseIP(dst)}); err != nil {
			return err
		}
		deadline := time.Now().Add(tpProbeTimeout)
		if err := pc.SetReadDeadline(deadline); err != nil {
			return err
		}
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return err
			}
			r := buf[:n]
			if from.String() == dst && n >= 8 && r[0] == 0 && uint16(r[4])<<8|uint16(r[5]) == id &&
				uint16(r[6])<<8|uint16(r[7]) == seq {
				return nil
			}
		}
	})
}
