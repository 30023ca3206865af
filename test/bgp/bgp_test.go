package bgp_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/ctl"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/k8senv"
)

var env *k8senv.Env

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() { // make unit: no control plane
		os.Exit(m.Run())
	}
	k8senv.Main(m, k8senv.Options{CRDDir: "../../charts/tabby/crds"}, &env)
}

// TestBGPMesh: two nodes on a fabric mesh over BGP; each kernel learns the other's
// block via the other's fabric address, the pods ping across, and the session shows
// Established in tabbyctl bgp peers and tabbyctl node status on both nodes.
func TestBGPMesh(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: root, a kube-apiserver, cnitool and network namespaces")
	}
	c := newCluster(t, env)
	ns := "tabbyb-" + c.id
	c.createNamespace(t, ns)
	c.createPool(t, "tabbyb-"+c.id+"-pool", poolCIDR)
	nodes := []*tnode{c.addNode(t, 0), c.addNode(t, 1)}
	for _, n := range nodes {
		n.start(t)
	}
	for _, n := range nodes {
		waitFor(t, "tabby-node on "+n.Name+" registered", 60*time.Second, func() error {
			st, err := localapi.NewClient(n.Socket, 5*time.Second).Status(context.Background())
			if err != nil {
				return err
			}
			if !st.Registered {
				return fmt.Errorf("not registered: %+v", st)
			}
			return nil
		})
	}

	type podInfo struct {
		*fabric.Pod
		block netip.Prefix
	}
	var pods []podInfo
	for i, n := range nodes {
		p := n.addPod(t, ns, fmt.Sprintf("pod-%c", 'a'+i))
		pods = append(pods, podInfo{Pod: p, block: netip.PrefixFrom(p.IP, 26).Masked()})
		t.Logf("pod on %s: %s (block %s)", n.Name, p.IP, pods[i].block)
	}
	if pods[0].block == pods[1].block {
		t.Fatalf("both pods in block %s: blocks are affine to one node", pods[0].block)
	}

	// learned checks that node i's kernel has the other node's block over BGP, via the
	// other's fabric address.
	learned := func(i int) error {
		other := 1 - i
		// "ip route show proto 117" lists only protocol-117 routes, without the "proto".
		want := fmt.Sprintf("%s via %s dev fab0", pods[other].block, nodes[other].IP)
		out, err := nodes[i].Net.IP(context.Background(), "route", "show", "proto", "117")
		if err != nil {
			return err
		}
		if !strings.Contains(out, want) {
			return fmt.Errorf("protocol-117 routes on %s %q, want %q", nodes[i].Name, out, want)
		}
		return nil
	}
	ping := func(i int) error {
		other := 1 - i
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return pods[i].Ping(ctx, pods[other].IP, 2)
	}
	for i, n := range nodes {
		waitFor(t, n.Name+" learns "+pods[1-i].block.String(), 90*time.Second, func() error { return learned(i) })
	}
	// The pods reach each other across the fabric.
	for i := range pods {
		waitFor(t, fmt.Sprintf("ping %s -> %s", pods[i].IP, pods[1-i].IP), 30*time.Second, func() error { return ping(i) })
	}

	// tabbyctl bgp peers: the mesh session Established on both nodes.
	var last string
	waitFor(t, "tabbyctl bgp peers shows the mesh Established on both nodes", 60*time.Second, func() error {
		out, err := c.tabbyctl("bgp", "peers", "-o", "json")
		if err != nil {
			return err
		}
		last = out
		var l ctl.BGPPeerList
		if err := json.Unmarshal([]byte(out), &l); err != nil {
			return fmt.Errorf("decode: %w\n%s", err, out)
		}
		for i, n := range nodes {
			other := nodes[1-i].IP.String()
			found := false
			for _, p := range l.Peers {
				if p.Node == n.Name && p.PeerIP == other {
					found = true
					if p.Type != "mesh" || p.State != "Established" {
						return fmt.Errorf("%s -> %s: %s %s (%s)", n.Name, other, p.Type, p.State, p.Message)
					}
				}
			}
			if !found {
				return fmt.Errorf("no session %s -> %s in %s", n.Name, other, out)
			}
		}
		return nil
	})
	table, err := c.tabbyctl("bgp", "peers")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tabbyctl bgp peers -o json:\n%s\ntabbyctl bgp peers:\n%s", last, table)
	for i, n := range nodes {
		if !strings.Contains(table, n.Name) || !strings.Contains(table, nodes[1-i].IP.String()) {
			t.Errorf("table lacks %s -> %s:\n%s", n.Name, nodes[1-i].IP, table)
		}
	}

	// tabbyctl node status on each node: the BGP lines from the local socket.
	for i, n := range nodes {
		out, err := c.tabbyctl("node", "status", "--socket", n.Socket)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, "BGP:         1 peer (1 established)") ||
			!strings.Contains(out, nodes[1-i].IP.String()+"   mesh   64512   Established") {
			t.Errorf("tabbyctl node status on %s:\n%s", n.Name, out)
		}
	}

	// Graceful restart: node A stops with SIGTERM (no NOTIFICATION), node B keeps the
	// route to A's block and A keeps its kernel routes, so the pods still reach each
	// other; A comes back as restarting (it finds its learned routes) and the session
	// is Established again.
	nodes[0].stop(t)
	for i := range nodes {
		if err := learned(i); err != nil {
			t.Fatalf("with %s stopped: %v", nodes[0].Name, err)
		}
		if err := ping(i); err != nil {
			t.Fatalf("with %s stopped: %v", nodes[0].Name, err)
		}
	}
	nodes[0].start(t)
	waitFor(t, nodes[0].Name+" restarts gracefully", 30*time.Second, func() error {
		b, err := os.ReadFile(nodes[0].Log)
		if err != nil {
			return err
		}
		if !strings.Contains(string(b), "found learned routes of an earlier run") {
			return fmt.Errorf("no restart in the log of %s", nodes[0].Name)
		}
		return nil
	})
	waitFor(t, "the mesh Established again on "+nodes[0].Name, 60*time.Second, func() error {
		st, err := localapi.NewClient(nodes[0].Socket, 5*time.Second).BGPPeers(context.Background())
		if err != nil {
			return err
		}
		if len(st.Peers) != 1 || st.Peers[0].State != "Established" || st.Peers[0].PrefixesReceived != 1 {
			return fmt.Errorf("peers %+v", st.Peers)
		}
		return nil
	})
	for i := range nodes {
		waitFor(t, nodes[i].Name+" learns after the restart", 30*time.Second, func() error { return learned(i) })
		waitFor(t, "ping after the restart", 30*time.Second, func() error { return ping(i) })
	}
}
