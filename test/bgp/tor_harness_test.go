package bgp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/ctl"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/router"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The ToR suites' AS numbers: the router's, and the nodes' (Tabby's default).
const (
	torAS  = 65000
	nodeAS = 64512
)

// torSpec is a ToR scenario: a router of kind with config adjusted by routerCfg,
// nodes nodes (with a pod each when pods), and a global BGPPeer towards the router
// (peerIP the router, asNumber torAS). setup, when set, runs before the agents start:
// it may create objects and change the BGPPeer's spec.
type torSpec struct {
	kind      router.Kind
	nodes     int
	pods      bool
	routerCfg func(*router.Config)
	setup     func(tc *torCluster, peer *v1.BGPPeerSpec)
}

// torCluster is a cluster whose nodes peer with a top-of-rack router on the fabric.
type torCluster struct {
	*cluster
	ns    string // the Kubernetes namespace of the pods and the Secrets
	nodes []*tnode
	pods  []*fabric.Pod
	// blocks[i] is the /26 of node i's pod.
	blocks []netip.Prefix
	tor    *router.Router
	torIP  netip.Addr
	peer   string // the BGPPeer's name
}

// requireRouter skips (fails under CI=true) unless kind's programs are installed.
func requireRouter(t *testing.T, kind router.Kind) {
	t.Helper()
	netnode.RequireNetns(t, suite, "ip", "ping")
	netnode.Require(t, suite, string(kind)+" (the ToR router)", router.Available(kind))
}

// newToR makes the cluster of spec: nodes, the router in a namespace on the fabric with
// every node as an eBGP neighbor (AS nodeAS), the BGPPeer, the agents (with the
// Kubernetes namespace as --bgp-secret-namespace) registered, and the pods. Everything
// goes when t ends: the agents stop before the cluster-wide objects are deleted, the
// router before its namespace.
func newToR(t *testing.T, spec torSpec) *torCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: root, a kube-apiserver, cnitool, network namespaces and a BGP router")
	}
	requireRouter(t, spec.kind)
	tc := &torCluster{cluster: newCluster(t, env)}
	tc.ns = "tabbyb-" + tc.id
	tc.createNamespace(t, tc.ns)
	tc.createPool(t, "tabbyb-"+tc.id+"-pool", poolCIDR)
	for i := range spec.nodes {
		tc.nodes = append(tc.nodes, tc.addNode(t, i))
	}

	rns, err := tc.f.AddRouter(netnode.Context(t, time.Minute), "tor")
	if err != nil {
		t.Fatal(err)
	}
	tc.torIP = rns.Addr
	cfg := router.Config{Kind: spec.kind, Netns: rns.Netns, Dir: rns.Dir, AS: torAS, RouterID: rns.Addr}
	for _, n := range tc.nodes {
		cfg.Neighbors = append(cfg.Neighbors, router.Neighbor{Addr: n.IP, AS: nodeAS})
	}
	if spec.routerCfg != nil {
		spec.routerCfg(&cfg)
	}
	tc.tor = startRouter(t, cfg)

	tc.peer = "tabbyb-" + tc.id + "-tor"
	ps := v1.BGPPeerSpec{PeerIP: tc.torIP.String(), ASNumber: torAS}
	if spec.setup != nil {
		spec.setup(tc, &ps)
	}
	tc.createObject(t, &v1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: tc.peer}, Spec: ps})
	// Registered after the objects, so it runs before they are deleted.
	t.Cleanup(func() {
		for _, n := range tc.nodes {
			if err := n.Stop(); err != nil {
				t.Logf("teardown: %v", err)
			}
		}
	})
	for _, n := range tc.nodes {
		n.start(t, "--bgp-secret-namespace", tc.ns)
	}
	for _, n := range tc.nodes {
		waitRegistered(t, n)
	}
	if spec.pods {
		for i, n := range tc.nodes {
			p := n.addPod(t, tc.ns, fmt.Sprintf("pod-%c", 'a'+i))
			tc.pods = append(tc.pods, p)
			tc.blocks = append(tc.blocks, netip.PrefixFrom(p.IP, 26).Masked())
			t.Logf("pod on %s: %s (block %s)", n.Name, p.IP, tc.blocks[i])
			for j := range i {
				if tc.blocks[j] == tc.blocks[i] {
					t.Fatalf("pods on %s and %s both in block %s: blocks are affine to one node", tc.nodes[j].Name, n.Name, tc.blocks[i])
				}
			}
		}
	}
	return tc
}

// startRouter starts the router; it is stopped when t ends (before the namespaces go),
// its logs printed if t failed.
func startRouter(t *testing.T, cfg router.Config) *router.Router {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := router.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s router in %s:\n%s", r.Kind, r.Netns, r.Logs())
		}
		if err := r.Stop(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	return r
}

// bgpPeer is n's session with addr as its local API reports it.
func bgpPeer(n *tnode, addr netip.Addr) (localapi.BGPPeer, error) {
	st, err := localapi.NewClient(n.Socket, 5*time.Second).BGPPeers(context.Background())
	if err != nil {
		return localapi.BGPPeer{}, fmt.Errorf("%s: %w", n.Name, err)
	}
	for _, p := range st.Peers {
		if p.Address == addr.String() {
			return p, nil
		}
	}
	return localapi.BGPPeer{}, fmt.Errorf("%s has no session with %s: %+v (problems %v)", n.Name, addr, st.Peers, st.Problems)
}

// established checks that n's session with addr is Established and of type typ.
func established(n *tnode, addr netip.Addr, typ string) error {
	p, err := bgpPeer(n, addr)
	if err != nil {
		return err
	}
	if p.State != "Established" || p.Type != typ {
		return fmt.Errorf("%s -> %s: %s %s (%s); want %s Established", n.Name, addr, p.Type, p.State, p.LastError, typ)
	}
	return nil
}

// torEstablished checks the router's side: every node's session Established.
func (tc *torCluster) torEstablished() error {
	for _, n := range tc.nodes {
		p, err := tc.tor.Peer(context.Background(), n.IP)
		if err != nil {
			return err
		}
		if !p.Established() {
			return fmt.Errorf("%s -> %s: %s (%s)", tc.tor.Kind, n.IP, p.State, p.Info)
		}
	}
	return nil
}

// torRoute is the router's route to p, read with its own CLI.
func (tc *torCluster) torRoute(p netip.Prefix) (router.Route, error) {
	rs, err := tc.tor.Routes(context.Background())
	if err != nil {
		return router.Route{}, err
	}
	for _, r := range rs {
		if r.Prefix == p {
			return r, nil
		}
	}
	return router.Route{}, fmt.Errorf("%s has no route to %s: %v", tc.tor.Kind, p, rs)
}

// learnedExactly checks that node i's protocol-117 routes are exactly, for every other
// node j, blocks[j] via j's fabric address.
func (tc *torCluster) learnedExactly(i int) error {
	out, err := tc.nodes[i].Net.IP(context.Background(), "route", "show", "proto", "117")
	if err != nil {
		return err
	}
	var want []string
	for j := range tc.nodes {
		if j != i {
			want = append(want, fmt.Sprintf("%s via %s dev fab0", tc.blocks[j], tc.nodes[j].IP))
		}
	}
	got := strings.Split(strings.TrimSpace(out), "\n")
	for k := range got {
		got[k] = strings.TrimSpace(got[k])
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		return fmt.Errorf("protocol-117 routes on %s:\n%s\nwant exactly:\n%s", tc.nodes[i].Name, out, strings.Join(want, "\n"))
	}
	return nil
}

// ctlPeer is n's session with addr as tabbyctl bgp peers -o json shows it (from the
// NodeStatus the agent writes).
func (tc *torCluster) ctlPeer(n *tnode, addr netip.Addr) (ctl.BGPPeerRow, error) {
	out, err := tc.tabbyctl("bgp", "peers", "-o", "json")
	if err != nil {
		return ctl.BGPPeerRow{}, err
	}
	var l ctl.BGPPeerList
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		return ctl.BGPPeerRow{}, fmt.Errorf("decode tabbyctl bgp peers: %w\n%s", err, out)
	}
	for _, p := range l.Peers {
		if p.Node == n.Name && p.PeerIP == addr.String() {
			return p, nil
		}
	}
	return ctl.BGPPeerRow{}, fmt.Errorf("tabbyctl bgp peers shows no session %s -> %s:\n%s", n.Name, addr, out)
}

// pinger is a ping running in the background in a network namespace; it counts loss
// by sequence number, so that the packet in flight when it is stopped is no loss.
type pinger struct {
	cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
}

// startPing pings addr from namespace ns every interval until stop; it is killed when
// t ends if still running.
func startPing(t *testing.T, ns string, addr netip.Addr, interval time.Duration) *pinger {
	t.Helper()
	p := &pinger{done: make(chan struct{})}
	p.cmd = exec.Command("ip", "netns", "exec", ns, "ping", "-n", "-i", strconv.FormatFloat(interval.Seconds(), 'f', 3, 64), addr.String())
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start ping in %s: %v", ns, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

var icmpSeqRe = regexp.MustCompile(`icmp_seq=(\d+) `)

// replies are the sequence numbers answered so far (each once).
func (p *pinger) replies() []int {
	var seqs []int
	for _, m := range icmpSeqRe.FindAllStringSubmatch(p.out.String(), -1) {
		if n, err := strconv.Atoi(m[1]); err == nil {
			seqs = append(seqs, n)
		}
	}
	slices.Sort(seqs)
	return slices.Compact(seqs)
}

// lastReply is the highest sequence number answered, 0 for none.
func (p *pinger) lastReply() int {
	seqs := p.replies()
	if len(seqs) == 0 {
		return 0
	}
	return seqs[len(seqs)-1]
}

// stop ends the ping and returns the requests up to the last one answered, and the
// sequence numbers among them that got no answer.
func (p *pinger) stop() (sent int, lost []int, err error) {
	if err := p.cmd.Process.Signal(syscall.SIGINT); err != nil {
		return 0, nil, fmt.Errorf("stop ping: %w", err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	seqs := p.replies()
	if len(seqs) == 0 {
		return 0, nil, fmt.Errorf("no ping answered:\n%s", p.output())
	}
	sent = seqs[len(seqs)-1]
	for n := 1; n <= sent; n++ {
		if _, found := slices.BinarySearch(seqs, n); !found {
			lost = append(lost, n)
		}
	}
	return sent, lost, nil
}

// output is the tail of what ping printed.
func (p *pinger) output() string {
	s := p.out.String()
	if len(s) > 2000 {
		s = "..." + s[len(s)-2000:]
	}
	return s
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
