package bgp_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/fabric"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The route reflector's cluster ID and the label that selects it, as in Calico's docs.
const (
	rrClusterID = "224.0.0.1"
	rrLabel     = "route-reflector"
)

// TestRouteReflector: four nodes with the node-to-node mesh off; node a is made a route
// reflector once registered (spec.bgp.routeReflectorClusterID and a label, written
// compare-and-swap as an operator would), and a BGPPeer (nodeSelector all(),
// peerSelector route-reflector == 'true') peers every node with it. Each node's kernel
// learns every other node's block with the owner's fabric address as next hop (the
// reflector passes next hops on unchanged), the clients have one session each, to the
// reflector, and none with each other, and a pod on one client pings a pod on another.
func TestRouteReflector(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: root, a kube-apiserver, cnitool and network namespaces")
	}
	c := newCluster(t, env)
	ns := "tabbyb-" + c.id
	c.createNamespace(t, ns)
	c.createPool(t, "tabbyb-"+c.id+"-pool", poolCIDR)
	nodes := []*tnode{c.addNode(t, 0), c.addNode(t, 1), c.addNode(t, 2), c.addNode(t, 3)}
	rr, clients := nodes[0], nodes[1:]

	// The cluster-wide objects go after the nodes have stopped (the cleanup registered
	// last runs first), so that no agent sees the mesh come back during the teardown.
	c.createObject(t, &v1.BGPConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1.BGPConfigurationSpec{NodeToNodeMeshEnabled: new(false)}})
	c.createObject(t, &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tabbyb-" + c.id + "-rr"},
		Spec: v1.BGPPeerSpec{NodeSelector: "all()", PeerSelector: rrLabel + " == 'true'"}})
	t.Cleanup(func() {
		for _, n := range nodes {
			if err := n.Stop(); err != nil {
				t.Logf("teardown: %v", err)
			}
		}
	})

	for _, n := range nodes {
		n.start(t)
	}
	for _, n := range nodes {
		waitRegistered(t, n)
	}
	c.makeReflector(t, rr, rrClusterID)

	type podInfo struct {
		*fabric.Pod
		block netip.Prefix
	}
	pods := make([]podInfo, len(nodes))
	for i, n := range nodes {
		p := n.addPod(t, ns, fmt.Sprintf("pod-%c", 'a'+i))
		pods[i] = podInfo{Pod: p, block: netip.PrefixFrom(p.IP, 26).Masked()}
		t.Logf("pod on %s: %s (block %s)", n.Name, p.IP, pods[i].block)
		for j := range i {
			if pods[j].block == pods[i].block {
				t.Fatalf("pods on %s and %s both in block %s: blocks are affine to one node", nodes[j].Name, n.Name, pods[i].block)
			}
		}
	}

	// Every node's kernel: exactly the other nodes' blocks over BGP (protocol 117), each
	// via its owner's fabric address, never via the reflector for a client's block.
	learnedAll := func(i int) error {
		out, err := nodes[i].Net.IP(context.Background(), "route", "show", "proto", "117")
		if err != nil {
			return err
		}
		var want []string
		for j := range nodes {
			if j != i {
				want = append(want, fmt.Sprintf("%s via %s dev fab0", pods[j].block, nodes[j].IP))
			}
		}
		got := strings.Split(strings.TrimSpace(out), "\n")
		for k := range got {
			got[k] = strings.TrimSpace(got[k])
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			return fmt.Errorf("protocol-117 routes on %s:\n%s\nwant exactly:\n%s", nodes[i].Name, out, strings.Join(want, "\n"))
		}
		return nil
	}
	for i, n := range nodes {
		waitFor(t, n.Name+" learns every other node's block via its owner", 90*time.Second, func() error { return learnedAll(i) })
	}

	// Sessions, from each speaker (the local API): the reflector has one per client,
	// receives the client's block and sends it the three others (its own and two
	// reflected); a client has one, to the reflector, and none with another client.
	waitFor(t, "sessions only between the reflector and each client", 60*time.Second, func() error {
		for _, n := range nodes {
			want := map[string]prefixCounts{rr.IP.String(): {received: len(nodes) - 1, advertised: 1}}
			if n == rr {
				want = map[string]prefixCounts{}
				for _, cl := range clients {
					want[cl.IP.String()] = prefixCounts{received: 1, advertised: len(nodes) - 1}
				}
			}
			if err := checkSessions(n, want); err != nil {
				return err
			}
		}
		return nil
	})
	if table, err := c.tabbyctl("bgp", "peers"); err == nil {
		t.Logf("tabbyctl bgp peers:\n%s", table)
	}

	// Two clients' pods reach each other (both ways) over the reflected routes; the
	// packets go straight between the clients, by the next hops checked above.
	a, b := pods[1], pods[2]
	waitFor(t, fmt.Sprintf("ping %s -> %s", a.IP, b.IP), 30*time.Second, func() error {
		return pingWithin(a.Pod, b.IP)
	})
	waitFor(t, fmt.Sprintf("ping %s -> %s", b.IP, a.IP), 30*time.Second, func() error {
		return pingWithin(b.Pod, a.IP)
	})
}

// createObject writes obj; it is deleted when t ends (if it still exists).
func (c *cluster) createObject(t *testing.T, obj datastore.Object) {
	t.Helper()
	k, err := datastore.KindOf(obj)
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.store.Create(ctxT(t), obj)
	if err != nil {
		t.Fatalf("create %s %s: %v", k, obj.GetName(), err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := c.store.Delete(ctx, k, got.GetNamespace(), got.GetName(), datastore.DeleteOptions{})
		if err != nil && !errors.Is(err, datastore.ErrNotFound) {
			t.Logf("teardown: delete %s %s: %v", k, got.GetName(), err)
		}
	})
}

// makeReflector gives the registered Node of n the route reflector cluster ID and the
// label rrLabel=true, keeping what the agent wrote: read, change, compare-and-swap
// update, again on a conflict.
func (c *cluster) makeReflector(t *testing.T, n *tnode, clusterID string) {
	t.Helper()
	waitFor(t, "make "+n.Name+" a route reflector", 30*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cur, err := datastore.Get[*v1.Node](ctx, c.store, "", n.Name)
		if err != nil {
			return err
		}
		if cur.Spec.BGP == nil || cur.Spec.BGP.IPv4Address == "" {
			return fmt.Errorf("node %s has no spec.bgp.ipv4Address yet", n.Name)
		}
		if cur.Labels == nil {
			cur.Labels = map[string]string{}
		}
		cur.Labels[rrLabel] = "true"
		cur.Spec.BGP.RouteReflectorClusterID = clusterID
		if _, err := datastore.Update(ctx, c.store, cur); err != nil {
			return fmt.Errorf("update node %s: %w", n.Name, err)
		}
		return nil
	})
}

// waitRegistered waits until tabby-node on n says it registered its Node.
func waitRegistered(t *testing.T, n *tnode) {
	t.Helper()
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

// prefixCounts are the prefixes a session received and advertised.
type prefixCounts struct{ received, advertised int }

// checkSessions asks n's speaker for its sessions: exactly the addresses of want, each
// of type reflector, Established, with the prefix counts of want[address].
func checkSessions(n *tnode, want map[string]prefixCounts) error {
	st, err := localapi.NewClient(n.Socket, 5*time.Second).BGPPeers(context.Background())
	if err != nil {
		return fmt.Errorf("%s: %w", n.Name, err)
	}
	if len(st.Peers) != len(want) {
		return fmt.Errorf("%s has %d sessions, want %d (to %v): %+v", n.Name, len(st.Peers), len(want), want, st.Peers)
	}
	for _, p := range st.Peers {
		w, ok := want[p.Address]
		switch {
		case !ok:
			return fmt.Errorf("%s has a session with %s, want only %v: %+v", n.Name, p.Address, want, st.Peers)
		case p.Type != "reflector" || p.State != "Established" || p.PrefixesReceived != w.received || p.PrefixesAdvertised != w.advertised:
			return fmt.Errorf("%s -> %s: type %s, %s, %d prefixes received, %d advertised; want reflector, Established, %d and %d",
				n.Name, p.Address, p.Type, p.State, p.PrefixesReceived, p.PrefixesAdvertised, w.received, w.advertised)
		}
	}
	return nil
}

func pingWithin(p *fabric.Pod, addr netip.Addr) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return p.Ping(ctx, addr, 2)
}
