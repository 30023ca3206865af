package vm

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/vmguest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"libvirt.org/go/libvirt"
)

// maxBlackout bounds the longest gap in a 20 ms ping across the live migration.
const maxBlackout = 5 * time.Second

// TestLiveMigration: each node runs a libvirtd of its own inside its network namespace
// (vmguest.PrivateLibvirtdIn: the taps and QEMU's sockets are the node's), and its
// tabby-node follows it. A guest on node A, policed by a NetworkPolicy on its labels
// and pinged every 20 ms by a pod on node B, is live-migrated to node B (client-managed
// Migrate3, QEMU's stream over the fabric to node B's address). Node B's endpoint
// waits on standby until node A pauses the guest for the last pages, then the endpoint
// moves to node B with the same address (node A's goes), the allocation becomes node
// B's (a borrowed address of node A's block), node A learns the /32 over BGP from node
// B, the policy is enforced on node B, the guest keeps its address, the longest gap in
// each ping (the blackout) is logged and bounded, and node B reports the blackout it
// measured (tabbyctl vm list, the metrics).
func TestLiveMigration(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: root, libvirt, QEMU, a kube-apiserver, cnitool and network namespaces")
	}
	testStart := time.Now()
	t.Cleanup(func() { t.Logf("test with teardown took %v", time.Since(testStart).Round(time.Millisecond)) })
	w := newWorldOn(t, noLibvirtd)
	ctx := netnode.Context(t, 10*time.Minute)

	// One libvirtd per node, in its namespace; the connections close after the
	// domain's cleanup (registered later), the daemons after them.
	privA := vmguest.PrivateLibvirtdInT(t, suite, w.a.Name)
	privB := vmguest.PrivateLibvirtdInT(t, suite, w.b.Name)
	connect := func(p *vmguest.PrivateLibvirtd) *libvirt.Connect {
		c, err := libvirt.NewConnect(p.URI)
		if err != nil {
			t.Fatalf("connect to %s: %v", p.URI, err)
		}
		t.Cleanup(func() { _, _ = c.Close() })
		return c
	}
	connA, connB := connect(privA), connect(privB)
	t.Logf("libvirtd of %s: pid %d at %s; of %s: pid %d at %s", w.a.Name, privA.PID, privA.URI, w.b.Name, privB.PID, privB.URI)

	tap := "tapm" + w.id
	for _, n := range []struct {
		node *fabric.Node
		priv *vmguest.PrivateLibvirtd
	}{{w.a, privA}, {w.b, privB}} {
		if err := n.node.Start("--vm-endpoints=true", "--vm-tap-prefix="+tap, "--libvirt-uri="+n.priv.URI, "--policy=true"); err != nil {
			t.Fatal(err)
		}
	}
	waitAgent(t, w.a)
	waitAgent(t, w.b)
	client, err := w.b.AddPodSpec(ctx, fabric.PodSpec{Namespace: w.ns, Name: "client", Labels: map[string]string{"app": "client"}})
	if err != nil {
		t.Fatal(err)
	}

	// The guest on node A: its daemon makes the tap in A's namespace.
	name := "tabby-vmm-" + w.id
	mac := fmt.Sprintf("52:54:00:%s:%s:%s", w.id[0:2], w.id[2:4], w.id[4:6])
	meta := fmt.Sprintf(`<tabby:endpoint xmlns:tabby="https://tabby.dev/xmlns/vm/1.0" namespace="%s"><tabby:label key="app" value="vm"/></tabby:endpoint>`, w.ns)
	d := vmguest.DefineT(t, connA, vmguest.Options{Name: name, MAC: mac, Tap: tap, Metadata: meta, Artifacts: w.art})
	if err := d.Start(ctx, nil); err != nil {
		t.Fatal(err)
	}
	wep := w.waitGuestOn(t, name, w.a)
	vmNet := netip.MustParsePrefix(wep.Spec.IPNetworks[0])
	vmIP := vmNet.Addr()
	if addr, _, err := d.WaitDHCP(ctx, 0, bootTimeout); err != nil || addr != vmNet.String() {
		t.Fatalf("guest's DHCP: %s, %v; want %s", addr, err, vmNet)
	}
	if _, err := d.Console.Wait(ctx, 0, vmguest.LineReady, cmdTimeout); err != nil {
		t.Fatal(err)
	}
	w.waitEnforced(t, wep.Name)
	block := netip.PrefixFrom(vmIP, 26).Masked()
	w.waitRoute(t, w.b, fmt.Sprintf("%s via %s dev %s", block, w.a.IP, "fab0"))
	waitFor(t, "ping from the client to the guest", 90*time.Second, func() error { return client.Ping(ctx, vmIP, 1) })
	t.Logf("guest %s on %s: endpoint %s %s (block %s)", name, w.a.Name, wep.Name, vmNet, block)

	// Policy on the guest's labels: TCP 80 from the client, not 8080; ICMP allowed.
	tcp, icmp := intstr.FromString("TCP"), intstr.FromString("ICMP")
	pol := netnode.Create(t, w.store, &v1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "vm-web", Namespace: w.ns},
		Spec: v1.NetworkPolicySpec{Selector: "app == 'vm'", Types: []v1.PolicyType{v1.PolicyTypeIngress},
			Ingress: []v1.Rule{
				{Action: v1.ActionAllow, Protocol: &tcp, Source: v1.EntityRule{Selector: "app == 'client'"},
					Destination: v1.EntityRule{Ports: []intstr.IntOrString{intstr.FromInt32(80)}}},
				{Action: v1.ActionDeny, Protocol: &tcp, Destination: v1.EntityRule{Ports: []intstr.IntOrString{intstr.FromInt32(8080)}}},
				{Action: v1.ActionAllow, Protocol: &icmp},
			}}})
	w.waitPolicyOn(t, w.a, pol.Name, pol.ResourceVersion)
	w.waitPolicyOn(t, w.b, pol.Name, pol.ResourceVersion)
	w.checkPolicy(t, client, vmIP, name, "before the migration")

	// Two continuous pings: from the client on B (the guest's new node) and from a
	// neighbour pod on A (its old node).
	neighbour, err := w.a.AddPodSpec(ctx, fabric.PodSpec{Namespace: w.ns, Name: "neighbour", Labels: map[string]string{"app": "neighbour"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "ping from the neighbour to the guest", waitTimeout, func() error { return neighbour.Ping(ctx, vmIP, 1) })
	pingers := []struct {
		from string
		p    *pinger
	}{{"client on " + w.b.Name, nil}, {"neighbour on " + w.a.Name, nil}}
	for i, netns := range []string{client.Netns, neighbour.Netns} {
		p, err := startPing(netns, vmIP)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(p.kill)
		pingers[i].p = p
	}
	waitFor(t, "the continuous pings answered", waitTimeout, func() error {
		for _, pg := range pingers {
			if n := pg.p.replies(); n < 25 {
				return fmt.Errorf("%d replies to the %s", n, pg.from)
			}
		}
		return nil
	})

	// The migration: QEMU's stream from A's namespace to B's fabric address.
	migURI := "tcp://" + w.b.IP.String()
	// When the endpoint and node A's route move, seen by polling every 20 ms during
	// the migration (the datastore and node A's routing table).
	var endpointAt, standbyAt, liveAt, goneAt, routedAt, localAt, pausedAt, runningAt, stoppedAt time.Duration
	pollCtx, stopPoll := context.WithCancel(ctx)
	polled := make(chan struct{})
	migAt := time.Now()
	go func() {
		defer close(polled)
		routeA := fmt.Sprintf("%s via %s dev fab0", vmIP, w.b.IP)
		for pollCtx.Err() == nil && (endpointAt == 0 || liveAt == 0 || goneAt == 0 || routedAt == 0 || localAt == 0 || pausedAt == 0 || runningAt == 0 || stoppedAt == 0) {
			if localAt == 0 {
				if out, err := w.b.Net.IP(pollCtx, "route", "get", vmIP.String()); err == nil && strings.Contains(out, "dev "+tap) {
					localAt = time.Since(migAt)
				}
			}
			if runningAt == 0 {
				if dom, err := connB.LookupDomainByName(name); err == nil {
					if st, _, err := dom.GetState(); err == nil && st == libvirt.DOMAIN_RUNNING {
						runningAt = time.Since(migAt)
					}
					_ = dom.Free()
				}
			}
			if pausedAt == 0 {
				if dom, err := connA.LookupDomainByName(name); err == nil {
					if st, reason, err := dom.GetState(); err == nil && st == libvirt.DOMAIN_PAUSED && reason == int(libvirt.DOMAIN_PAUSED_MIGRATION) {
						pausedAt = time.Since(migAt)
					}
					_ = dom.Free()
				}
			}
			if stoppedAt == 0 && privA.QEMUPid(name) == 0 {
				stoppedAt = time.Since(migAt)
			}
			if endpointAt == 0 || liveAt == 0 || goneAt == 0 {
				if weps, err := w.guestWEPs(pollCtx, name); err == nil {
					b, a := weps[w.b.Name], weps[w.a.Name]
					if endpointAt == 0 && b != nil {
						endpointAt = time.Since(migAt)
					}
					if standbyAt == 0 && b != nil && b.Spec.Standby {
						standbyAt = time.Since(migAt)
					}
					if liveAt == 0 && b != nil && !b.Spec.Standby {
						liveAt = time.Since(migAt)
					}
					if goneAt == 0 && (a == nil || a.Spec.Standby) {
						goneAt = time.Since(migAt)
					}
				}
			}
			if routedAt == 0 {
				if out, err := w.a.Net.IP(pollCtx, "route", "show", "proto", "117"); err == nil && strings.Contains(out, routeA) {
					routedAt = time.Since(migAt)
				}
			}
			select {
			case <-pollCtx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { stopPoll(); <-polled })
	if err := d.Migrate(ctx, connB, migURI); err != nil {
		t.Fatal(err)
	}
	migrated := time.Since(migAt)
	t.Logf("migrated %s to %s over %s in %v", name, w.b.Name, migURI, migrated.Round(time.Millisecond))
	if st, err := d.State(); err != nil || st != libvirt.DOMAIN_RUNNING {
		t.Fatalf("after the migration the guest is in state %d on %s, %v; want running", st, w.b.Name, err)
	}
	if pid := privA.QEMUPid(name); pid != 0 {
		t.Errorf("after the migration QEMU of %s still runs under %s's libvirtd (pid %d)", name, w.a.Name, pid)
	}

	// The endpoint is node B's, with the same address; node A's is gone.
	moved := w.waitGuestOn(t, name, w.b)
	if moved.Spec.IPNetworks[0] != vmNet.String() || moved.Spec.MAC != mac || moved.Spec.InterfaceName != tap {
		t.Errorf("after the migration the endpoint %s has %v, MAC %s, interface %s; want %s, %s, %s",
			moved.Name, moved.Spec.IPNetworks, moved.Spec.MAC, moved.Spec.InterfaceName, vmNet, mac, tap)
	}
	// The allocation is node B's: a borrowed address of node A's block.
	alloc := ipam.New(w.store, ipam.Options{CacheTTL: -1})
	waitFor(t, "the allocation of "+vmIP.String()+" moved to "+w.b.Name, waitTimeout, func() error {
		info, err := alloc.Lookup(ctx, vmIP)
		if err != nil {
			return err
		}
		if !info.Allocated || info.Attrs[ipam.AttrNode] != w.b.Name || !info.Borrowed || info.BlockNode != w.a.Name {
			return fmt.Errorf("allocated %v, node %q, borrowed %v from block %s of %s", info.Allocated, info.Attrs[ipam.AttrNode],
				info.Borrowed, info.Block, info.BlockNode)
		}
		return nil
	})
	// Node B advertises the /32 and node A takes it (more specific than its block).
	w.waitRoute(t, w.a, fmt.Sprintf("%s via %s dev %s", vmIP, w.b.IP, "fab0"))
	stopPoll()
	<-polled
	if out, err := w.a.Net.IP(ctx, "route", "get", vmIP.String()); err != nil || !strings.Contains(out, "via "+w.b.IP.String()) {
		t.Errorf("node A's route to %s: %q, %v; want via %s", vmIP, out, err, w.b.IP)
	}
	if out, err := w.b.Net.IP(ctx, "route", "get", vmIP.String()); err != nil || !strings.Contains(out, "dev "+tap) {
		t.Errorf("node B's route to %s: %q, %v; want dev %s", vmIP, out, err, tap)
	}
	w.waitEnforcedOn(t, w.b, moved.Name)
	// The guest kept its address.
	if out, code := guestRun(t, d, "ip -4 addr show dev eth0"); code != 0 || !strings.Contains(out, "inet "+vmNet.String()) {
		t.Errorf("guest after the migration: ip addr: status %d\n%s\nwant inet %s", code, out, vmNet)
	}
	if out, code := guestRun(t, d, "ping -c1 -W2 "+client.IP.String()); code != 0 {
		t.Errorf("guest after the migration: ping %s: status %d\n%s", client.IP, code, out)
	}

	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	t.Logf("TIMELINE from the migration call: endpoint on %s (standby at +%v) at +%v, guest paused on %s for the last pages at +%v, endpoint on %s live at +%v, %s routes to its tap at +%v, %s's live endpoint gone at +%v, /32 via %s on %s at +%v, guest running on %s at +%v, source QEMU gone at +%v, call returned at +%v",
		w.b.Name, ms(standbyAt), ms(endpointAt), w.a.Name, ms(pausedAt), w.b.Name, ms(liveAt), w.b.Name, ms(localAt),
		w.a.Name, ms(goneAt), w.b.Name, w.a.Name, ms(routedAt), w.b.Name, ms(runningAt), ms(stoppedAt), ms(migrated))
	// The handover happens when node A pauses the guest for the last pages: until then
	// node B's endpoint waits on standby and node B does not route the address to its
	// tap (polled every 20 ms, hence the slack).
	const pollSlack = 60 * time.Millisecond
	// Node B writes its standby endpoint once its libvirt answers for the incoming
	// domain, which may be only at the switch-over (a short pre-copy of a small guest):
	// then there was nothing to see on standby, and the handover follows at once.
	switch {
	case standbyAt != 0 && standbyAt <= liveAt:
		t.Logf("node B's endpoint waited on standby from +%v", ms(standbyAt))
	case endpointAt+pollSlack >= pausedAt:
		t.Logf("node B's endpoint appeared only at the switch-over (+%v, the pause at +%v): no standby to see", ms(endpointAt), ms(pausedAt))
	default:
		t.Errorf("node B's endpoint was live from +%v, before node A paused the guest (+%v), never on standby", ms(endpointAt), ms(pausedAt))
	}
	if pausedAt == 0 || localAt+pollSlack < pausedAt || liveAt+pollSlack < pausedAt {
		t.Errorf("node B took the guest over while it ran on node A: endpoint live at +%v, route to the tap at +%v, guest paused on node A at +%v",
			ms(liveAt), ms(localAt), ms(pausedAt))
	}
	// Fifty more replies after the move, then each ping's blackout: the longest gap
	// between replies from the migration's start to the end of the ping (gaps before
	// it are the TCG guest's own hiccups).
	for _, pg := range pingers {
		p := pg.p
		base := p.replies()
		waitFor(t, "pings from the "+pg.from+" answered after the migration", waitTimeout, func() error {
			if n := p.replies() - base; n < 50 {
				return fmt.Errorf("%d replies since", n)
			}
			return nil
		})
		sent, received, err := p.stop()
		if err != nil {
			t.Fatal(err)
		}
		var blackout replyGap
		var gapLog []string
		for _, g := range p.gaps(60 * time.Millisecond) {
			gapLog = append(gapLog, fmt.Sprintf("%v from +%v (seq %d)", g.Len().Round(time.Millisecond),
				g.From.Sub(migAt).Round(time.Millisecond), g.EndSeq))
			if g.To.After(migAt) && g.Len() > blackout.Len() {
				blackout = g
			}
		}
		t.Logf("BLACKOUT across the live migration, ping from the %s: %v, from +%v to +%v after the migration call; %d of %d pings lost (seqs %v); reply gaps over 60 ms: %s",
			pg.from, blackout.Len().Round(time.Millisecond), blackout.From.Sub(migAt).Round(time.Millisecond),
			blackout.To.Sub(migAt).Round(time.Millisecond), sent-received, sent, p.lostSeqs(), strings.Join(gapLog, ", "))
		if blackout.Len() > maxBlackout {
			t.Errorf("blackout %v for the ping from the %s across the migration, want under %v:\n%s", blackout.Len(), pg.from, maxBlackout, p.output())
		}
	}

	// Node B measured the blackout (the guest's last packet through node A's tap to its
	// first through node B's): in tabbyctl vm list and the metrics.
	var mig *localapi.VMMigration
	waitFor(t, "node B's report of the migration's blackout", waitTimeout, func() error {
		out, err := w.tabbyctl("vm", "list", "-n", w.ns, "--socket", w.b.Socket, "-o", "json")
		if err != nil {
			return err
		}
		var doc struct {
			Items []struct {
				Node      string                `json:"node"`
				Migration *localapi.VMMigration `json:"migration"`
			} `json:"items"`
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		for _, it := range doc.Items {
			if it.Node == w.b.Name && it.Migration != nil && it.Migration.BlackoutMillis != nil {
				mig = it.Migration
				return nil
			}
		}
		return fmt.Errorf("no measured migration in %s", out)
	})
	blackout := time.Duration(*mig.BlackoutMillis * float64(time.Millisecond))
	t.Logf("BLACKOUT measured by %s: %v (last packet through %s's tap at %s, first through %s's at %s)", w.b.Name, ms(blackout),
		mig.From, mig.LastSentThere.Format("15:04:05.000"), w.b.Name, mig.FirstSentHere.Format("15:04:05.000"))
	if mig.From != w.a.Name || blackout <= 0 || blackout > maxBlackout {
		t.Errorf("measured migration %+v: want from %s, a blackout in (0, %v]", mig, w.a.Name, maxBlackout)
	}
	metrics := scrape(t, w.b, "127.0.0.1:19091")
	for _, want := range []string{`tabby_vm_migrations_total{result="measured"} 1`, "tabby_vm_migration_blackout_seconds_count 1"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("%s's metrics lack %q", w.b.Name, want)
		}
	}

	// Policy follows the guest: enforced on node B.
	w.checkPolicy(t, client, vmIP, name, "after the migration")
	out, err := w.tabbyctl("policy", "explain", "--socket", w.b.Socket, "--from", w.ns+"/"+client.Name,
		"--to", w.ns+"/"+moved.Name+":8080/tcp")
	if err != nil {
		t.Fatal(err)
	}
	if first, _, _ := strings.Cut(out, "\n"); !strings.HasPrefix(first, "DENIED by NetworkPolicy "+w.ns+"/"+pol.Name) {
		t.Errorf("tabbyctl policy explain on %s to port 8080:\n%s\nwant DENIED by %s", w.b.Name, out, pol.Name)
	}
}

// waitGuestOn waits until the guest's only WorkloadEndpoint is node n's, with one
// address, and returns it.
func (w *world) waitGuestOn(t *testing.T, name string, n *fabric.Node) *v1.WorkloadEndpoint {
	t.Helper()
	var wep *v1.WorkloadEndpoint
	waitFor(t, "the WorkloadEndpoint of "+name+" on "+n.Name, waitTimeout, func() error {
		var err error
		if wep, err = w.guestWEP(name); err != nil {
			return err
		}
		if wep.Spec.Node != n.Name || len(wep.Spec.IPNetworks) != 1 {
			return fmt.Errorf("endpoint %s on %s with addresses %v", wep.Name, wep.Spec.Node, wep.Spec.IPNetworks)
		}
		return nil
	})
	return wep
}

// guestWEPs maps each node to its WorkloadEndpoint of the domain named workload in w.ns.
func (w *world) guestWEPs(ctx context.Context, workload string) (map[string]*v1.WorkloadEndpoint, error) {
	weps, err := datastore.List[*v1.WorkloadEndpoint](ctx, w.store, datastore.ListOptions{Namespace: w.ns})
	if err != nil {
		return nil, err
	}
	nodes := map[string]*v1.WorkloadEndpoint{}
	for _, e := range weps {
		if e.Spec.Orchestrator == v1.OrchestratorLibvirt && e.Spec.Workload == workload {
			nodes[e.Spec.Node] = e
		}
	}
	return nodes, nil
}

// scrape reads node n's /metrics at addr (inside its namespace: the socket is made
// there, the request and answer go over it from here).
func scrape(t *testing.T, n *fabric.Node, addr string) string {
	t.Helper()
	var conn net.Conn
	if err := n.Net.Do(func() error {
		var err error
		conn, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	}); err != nil {
		t.Fatalf("connect to %s's metrics at %s: %v", n.Name, addr, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(conn, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", addr); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read %s's metrics: %v", n.Name, err)
	}
	return string(b)
}

// waitRoute waits until node n has the protocol-117 (BGP) route want.
func (w *world) waitRoute(t *testing.T, n *fabric.Node, want string) {
	t.Helper()
	waitFor(t, n.Name+" learns "+want+" over BGP", 90*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, err := n.Net.IP(ctx, "route", "show", "proto", "117")
		if err != nil {
			return err
		}
		if !strings.Contains(out, want+" ") && !strings.HasSuffix(strings.TrimSpace(out), want) {
			return fmt.Errorf("protocol-117 routes on %s: %q, want %q", n.Name, out, want)
		}
		return nil
	})
}

// checkPolicy: from the client, the guest's port 80 answers and 8080 is dropped.
func (w *world) checkPolicy(t *testing.T, client *fabric.Pod, vmIP netip.Addr, name, when string) {
	t.Helper()
	if out, err := tcpAsk(client.Netns, vmIP, 80, 5*time.Second); err != nil || !strings.Contains(out, name) {
		t.Errorf("%s, %s:80 from the client: %q, %v; want the guest's name", when, vmIP, out, err)
	}
	if out, err := tcpAsk(client.Netns, vmIP, 8080, deniedTimeout); !isTimeout(err) {
		t.Errorf("%s, %s:8080 from the client: %q, %v; want no answer (dropped)", when, vmIP, out, err)
	}
}
