package vm

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/probe"
	"github.com/tabbynet/tabby/test/vmguest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var env *k8senv.Env

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() { // make unit: no control plane
		os.Exit(m.Run())
	}
	k8senv.Main(m, k8senv.Options{CRDDir: "../../charts/tabby/crds"}, &env)
}

// TestVMEndpoint: a libvirt guest on node A, configured only by Tabby's DHCP, is a
// workload endpoint like a pod: reachable from a pod on node B over BGP, policed by a
// NetworkPolicy on its labels, keeping its address across a reboot and an agent
// restart, and unable to spoof addresses by IP or ARP.
func TestVMEndpoint(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: root, libvirt, QEMU, a kube-apiserver, cnitool and network namespaces")
	}
	testStart := time.Now()
	t.Cleanup(func() { t.Logf("test with teardown took %v", time.Since(testStart).Round(time.Millisecond)) })
	w := newWorld(t)
	ctx := netnode.Context(t, 10*time.Minute)
	step := testStart
	lap := func(what string) {
		t.Logf("TIMING %s: %v", what, time.Since(step).Round(time.Millisecond))
		step = time.Now()
	}
	lap("setup (binaries, artifacts, libvirtd, fabric)")

	// Node A follows libvirt, for taps of this run only; node B does not.
	tap := "tapv" + w.id
	w.vmArgs = []string{"--vm-endpoints=true", "--vm-tap-prefix=" + tap, "--policy=true"}
	if err := w.a.Start(w.vmArgs...); err != nil {
		t.Fatal(err)
	}
	if err := w.b.Start("--policy=true"); err != nil {
		t.Fatal(err)
	}
	waitAgent(t, w.a)
	waitAgent(t, w.b)
	lap("both agents registered, policy programmed")

	// Pods: the client on B, and on A a bystander whose address the guest will claim.
	client, err := w.b.AddPodSpec(ctx, fabric.PodSpec{Namespace: w.ns, Name: "client", Labels: map[string]string{"app": "client"}})
	if err != nil {
		t.Fatal(err)
	}
	bystander, err := w.a.AddPodSpec(ctx, fabric.PodSpec{Namespace: w.ns, Name: "bystander", Labels: map[string]string{"app": "bystander"}})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := probe.Serve(bystander.Netns, 80)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	t.Logf("client %s on %s, bystander %s on %s", client.IP, w.b.Name, bystander.IP, w.a.Name)
	lap("pods through tabby-cni")

	// 1. The guest: Tabby metadata (namespace, label app=vm, named port http=80), a libvirt-made tap that
	// the Start hook hands to node A while the guest is paused. Nothing but tabby-node
	// serves DHCP on it.
	name := "tabby-vm-" + w.id
	mac := fmt.Sprintf("52:54:00:%s:%s:%s", w.id[0:2], w.id[2:4], w.id[4:6])
	meta := fmt.Sprintf(`<tabby:endpoint xmlns:tabby="https://tabby.dev/xmlns/vm/1.0" namespace="%s"><tabby:label key="app" value="vm"/><tabby:port name="http" port="80"/></tabby:endpoint>`, w.ns)
	d := vmguest.DefineT(t, w.conn, vmguest.Options{Name: name, MAC: mac, Tap: tap, Metadata: meta, Artifacts: w.art})
	wep, vmNet := w.startOnNodeA(t, ctx, d, name, tap)
	vmIP := vmNet.Addr()
	switch {
	case wep.Spec.Node != w.a.Name || wep.Spec.InterfaceName != tap || wep.Spec.MAC != mac:
		t.Fatalf("endpoint %s: node %s, interface %s, MAC %s; want %s, %s, %s", wep.Name, wep.Spec.Node, wep.Spec.InterfaceName, wep.Spec.MAC, w.a.Name, tap, mac)
	case vmNet.Bits() != 32 || !poolNet.Contains(vmIP):
		t.Fatalf("endpoint %s: address %s, want a /32 from the pool %s", wep.Name, vmNet, poolNet)
	case wep.Labels["app"] != "vm" || wep.Labels["tabby.dev/orchestrator"] != "libvirt":
		t.Fatalf("endpoint %s: labels %v, want app=vm and tabby.dev/orchestrator=libvirt", wep.Name, wep.Labels)
	case len(wep.Spec.Ports) != 1 || wep.Spec.Ports[0] != (v1.WorkloadEndpointPort{Name: "http", Protocol: "TCP", Port: 80}):
		t.Fatalf("endpoint %s: ports %+v, want http TCP 80 from the metadata", wep.Name, wep.Spec.Ports)
	}
	addr, router, err := d.WaitDHCP(ctx, 0, bootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if addr != vmNet.String() || router != "169.254.1.1" {
		t.Fatalf("guest's DHCP: %s via %s, want %s via 169.254.1.1 (its endpoint's)", addr, router, vmNet)
	}
	if _, err := d.Console.Wait(ctx, 0, vmguest.LineReady, cmdTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("guest %s: endpoint %s, %s by DHCP %v after resume", name, wep.Name, addr, time.Since(d.StartedAt).Round(time.Millisecond))
	w.waitEnforced(t, wep.Name)
	lap("1. boot, endpoint, DHCP lease of the endpoint's address")

	// 2. Pod <-> guest across the fabric, through the block A advertises over BGP.
	block := netip.PrefixFrom(vmIP, 26).Masked()
	if block.Contains(client.IP) {
		t.Fatalf("client %s is in the guest's block %s: blocks are affine to one node", client.IP, block)
	}
	wantRoute := fmt.Sprintf("%s via %s dev fab0", block, w.a.IP)
	waitFor(t, w.b.Name+" learns "+block.String()+" over BGP", 90*time.Second, func() error {
		// "ip route show proto 117" lists only protocol-117 routes, without the "proto".
		out, err := w.b.Net.IP(ctx, "route", "show", "proto", "117")
		if err != nil {
			return err
		}
		if !strings.Contains(out, wantRoute) {
			return fmt.Errorf("protocol-117 routes on %s: %q, want %q", w.b.Name, out, wantRoute)
		}
		return nil
	})
	waitFor(t, "ping from the client to the guest", waitTimeout, func() error { return client.Ping(ctx, vmIP, 1) })
	if out, code := guestRun(t, d, "ping -c1 -W2 "+client.IP.String()); code != 0 {
		t.Fatalf("guest: ping %s: status %d\n%s", client.IP, code, out)
	}
	lap("2. BGP route (proto 117 via A), pod <-> guest pings")

	// 3. Policy on the guest's labels: TCP 80 from the client, not 8080; ICMP allowed.
	// Both ports answer before it, so a refusal later is the policy's.
	for _, port := range []uint16{80, 8080} {
		out, err := tcpAsk(client.Netns, vmIP, port, 5*time.Second)
		if err != nil || !strings.Contains(out, name) {
			t.Fatalf("before the policy, %s:%d from the client: %q, %v; want the guest's name", vmIP, port, out, err)
		}
	}
	tcp, icmp := intstr.FromString("TCP"), intstr.FromString("ICMP")
	pol := netnode.Create(t, w.store, &v1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "vm-web", Namespace: w.ns},
		Spec: v1.NetworkPolicySpec{Selector: "app == 'vm'", Types: []v1.PolicyType{v1.PolicyTypeIngress},
			Ingress: []v1.Rule{
				// The guest's named port (from its metadata), as for a pod.
				{Action: v1.ActionAllow, Protocol: &tcp, Source: v1.EntityRule{Selector: "app == 'client'"},
					Destination: v1.EntityRule{Ports: []intstr.IntOrString{intstr.FromString("http")}}},
				{Action: v1.ActionDeny, Protocol: &tcp, Destination: v1.EntityRule{Ports: []intstr.IntOrString{intstr.FromInt32(8080)}}},
				{Action: v1.ActionAllow, Protocol: &icmp},
			}}})
	w.waitPolicy(t, pol.Name, pol.ResourceVersion)
	if out, err := tcpAsk(client.Netns, vmIP, 80, 5*time.Second); err != nil || !strings.Contains(out, name) {
		t.Errorf("with the policy, %s:80 from the client: %q, %v; want the guest's name", vmIP, out, err)
	}
	if out, err := tcpAsk(client.Netns, vmIP, 8080, deniedTimeout); !isTimeout(err) {
		t.Errorf("with the policy, %s:8080 from the client: %q, %v; want no answer (dropped)", vmIP, out, err)
	}
	for _, c := range []struct{ port, want string }{
		{"8080", "DENIED by NetworkPolicy " + w.ns + "/" + pol.Name + " ingress"},
		{"80", "ALLOWED"},
	} {
		out, err := w.tabbyctl("policy", "explain", "--socket", w.a.Socket, "--from", w.ns+"/"+client.Name,
			"--to", w.ns+"/"+wep.Name+":"+c.port+"/tcp")
		if err != nil {
			t.Fatal(err)
		}
		if first, _, _ := strings.Cut(out, "\n"); !strings.HasPrefix(first, c.want) {
			t.Errorf("tabbyctl policy explain to port %s:\n%s\nwant a first line starting %q", c.port, out, c.want)
		}
		t.Logf("tabbyctl policy explain --to %s:%s/tcp:\n%s", wep.Name, c.port, out)
	}
	lap("3. policy on the guest's labels: 80 answers, 8080 dropped, explain")

	// 4a. ACPI reboot: a new boot, a new DHCP lease, the same address and endpoint.
	mark := d.Console.Mark()
	rebootAt := time.Now()
	if err := d.Reboot(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Console.Wait(ctx, mark, vmguest.LineInit, bootTimeout); err != nil {
		t.Fatal(err)
	}
	addr, _, err = d.WaitDHCP(ctx, mark, bootTimeout)
	if err != nil {
		t.Fatal(err)
	}
	if addr != vmNet.String() {
		t.Fatalf("after the reboot the guest got %s, want %s", addr, vmNet)
	}
	if _, err := d.Console.Wait(ctx, mark, vmguest.LineReady, cmdTimeout); err != nil {
		t.Fatal(err)
	}
	t.Logf("reboot: ACPI reboot -> DHCP %s in %v", addr, time.Since(rebootAt).Round(time.Millisecond))
	after, err := w.guestWEP(name)
	if err != nil {
		t.Fatal(err)
	}
	if after.Spec.IPNetworks[0] != vmNet.String() {
		t.Fatalf("after the reboot the endpoint has %v, want %s", after.Spec.IPNetworks, vmNet)
	}
	waitFor(t, "ping from the client after the reboot", waitTimeout, func() error { return client.Ping(ctx, vmIP, 1) })
	lap("4a. ACPI reboot, same address by DHCP")

	// 4b. tabby-node restart on A under a continuous ping from the client.
	wep = after
	p, err := startPing(client.Netns, vmIP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.kill)
	waitFor(t, "the continuous ping answered", waitTimeout, func() error {
		if p.replies() < 5 {
			return fmt.Errorf("%d replies:\n%s", p.replies(), p.output())
		}
		return nil
	})
	restartAt := time.Now()
	if err := w.a.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped, err := w.guestWEP(name)
	if err != nil {
		t.Fatalf("with tabby-node stopped: %v", err)
	}
	if stopped.UID != wep.UID {
		t.Fatalf("with tabby-node stopped the endpoint is another one (uid %s, was %s)", stopped.UID, wep.UID)
	}
	if err := w.a.Start(w.vmArgs...); err != nil {
		t.Fatal(err)
	}
	waitAgent(t, w.a)
	w.waitPolicy(t, pol.Name, pol.ResourceVersion)
	w.waitEnforced(t, wep.Name)
	restarted := time.Since(restartAt)
	got, err := w.guestWEP(name)
	if err != nil {
		t.Fatal(err)
	}
	if got.UID != wep.UID || got.Spec.IPNetworks[0] != vmNet.String() {
		t.Errorf("after the restart: endpoint %s uid %s %v; want uid %s with %s", got.Name, got.UID, got.Spec.IPNetworks, wep.UID, vmNet)
	}
	// The new agent's DHCP server answers the guest: a renewal (udhcpc's SIGUSR1)
	// gets the same address.
	mark = d.Console.Mark()
	guestRun(t, d, "kill -USR1 $(pidof udhcpc)")
	if addr, _, err = d.WaitDHCP(ctx, mark, waitTimeout); err != nil || addr != vmNet.String() {
		t.Errorf("renewal after the restart: %s, %v; want %s", addr, err, vmNet)
	}
	// Fifty more replies (a second) after the agent is back, then the summary.
	base := p.replies()
	waitFor(t, "pings answered after the restart", waitTimeout, func() error {
		if n := p.replies() - base; n < 50 {
			return fmt.Errorf("%d replies since the agent came back", n)
		}
		return nil
	})
	sent, received, err := p.stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("LOSS across the tabby-node restart (%v from SIGTERM to enforced again): %d of %d pings lost (seqs %v)",
		restarted.Round(time.Millisecond), sent-received, sent, p.lostSeqs())
	if sent-received > 5 {
		t.Errorf("%d of %d pings lost across the restart, want at most 5:\n%s", sent-received, sent, p.output())
	}
	if out, err := tcpAsk(client.Netns, vmIP, 8080, deniedTimeout); !isTimeout(err) {
		t.Errorf("after the restart, %s:8080 from the client: %q, %v; want no answer (dropped)", vmIP, out, err)
	}
	lap("4b. tabby-node restart under ping")

	// 5a. A forged source address: the guest's packets from it never reach the client,
	// those from its own address do. The sniffer in the client sees every echo request;
	// the one from the guest's own address, sent after the forged one on the same path,
	// marks the end of the window.
	sn, err := sniffICMP(client.Netns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sn.Close() })
	guestRun(t, d, fmt.Sprintf("ip addr add %s/32 dev eth0", forgedAddr))
	if out, code := guestRun(t, d, fmt.Sprintf("ping -c1 -W1 -I %s %s", forgedAddr, client.IP)); code == 0 {
		t.Errorf("guest: ping from the forged %s answered:\n%s", forgedAddr, out)
	}
	if out, code := guestRun(t, d, fmt.Sprintf("ping -c1 -W2 -I %s %s", vmIP, client.IP)); code != 0 {
		t.Errorf("guest: ping from its own %s: status %d\n%s", vmIP, code, out)
	}
	srcs, err := sn.echoRequestsUntil(vmIP, 10*time.Second)
	if err != nil {
		t.Errorf("client's sniffer: %v (saw %v)", err, srcs)
	}
	for _, s := range srcs {
		if s == forgedAddr {
			t.Errorf("the client received an echo request from the forged %s: spoofing not blocked", forgedAddr)
		}
	}
	guestRun(t, d, fmt.Sprintf("ip addr del %s/32 dev eth0", forgedAddr))

	// 5b. ARP: the guest claims the bystander's address (gratuitous ARP, and an ARP
	// request for its gateway with that sender). Node A must not learn the guest's MAC
	// for it, and the client's connection to the bystander must reach the bystander
	// (its server writes one byte; the guest's would answer HTTP with its name).
	guestRun(t, d, fmt.Sprintf("ip addr add %s/32 dev eth0", bystander.IP))
	out, _ := guestRun(t, d, fmt.Sprintf("arping -U -c 2 -I eth0 -s %[1]s %[1]s; arping -c 2 -w 2 -I eth0 -s %[1]s 169.254.1.1", bystander.IP))
	t.Logf("guest arping as %s:\n%s", bystander.IP, out)
	neigh, err := w.a.Net.IP(ctx, "neigh", "show", "to", bystander.IP.String())
	if err != nil {
		t.Fatal(err)
	}
	// Any entry for it on the guest's tap (with the guest's MAC: proxy ARP answered the
	// claim and learned the sender) means the claim was taken.
	for _, l := range strings.Split(strings.TrimSpace(neigh), "\n") {
		if strings.Contains(l, "dev "+tap+" ") || strings.Contains(strings.ToLower(l), mac) {
			t.Errorf("node A learned the guest's MAC for the bystander's %s on %s: %q (ARP claims from a guest are not blocked)", bystander.IP, tap, l)
		}
	}
	t.Logf("node A's neighbours for %s after the guest's ARP: %q", bystander.IP, neigh)
	if ans, err := tcpAsk(client.Netns, bystander.IP, 80, 5*time.Second); err != nil || strings.Contains(ans, name) || ans == "" {
		t.Errorf("client -> bystander %s:80 after the guest's ARP: %q, %v; want the bystander's one byte", bystander.IP, ans, err)
	}
	route, err := w.a.Net.IP(ctx, "route", "get", bystander.IP.String())
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(route, tap) {
		t.Errorf("node A routes the bystander's %s to the guest: %s", bystander.IP, route)
	}
	guestRun(t, d, fmt.Sprintf("ip addr del %s/32 dev eth0", bystander.IP))
	lap("5. forged source dropped, ARP claim ignored")

	// Everything still works for the guest itself.
	if out, code := guestRun(t, d, "ping -c1 -W2 "+client.IP.String()); code != 0 {
		t.Errorf("guest: ping %s at the end: status %d\n%s", client.IP, code, out)
	}
}
