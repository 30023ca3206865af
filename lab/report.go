package lab

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/router"
)

// Report is a lab's state as lab up and lab status print it (and -o json gives it):
// live answers of every node's agent and of the ToR, the pods, and the connectivity
// matrix.
type Report struct {
	Name       string    `json:"name"`
	StateDir   string    `json:"stateDir"`
	Phase      string    `json:"phase"`
	PID        int       `json:"pid"`
	Started    time.Time `json:"started"`
	ReadyAfter string    `json:"readyAfter,omitempty"`
	Options    Options   `json:"options"`
	// Existing is set by lab up when it found this lab running instead of making one.
	Existing bool `json:"existing,omitempty"`

	Kubeconfig string `json:"kubeconfig"`
	APIServer  string `json:"apiServer"`
	Kubectl    string `json:"kubectl,omitempty"`

	Nodes []NodeReport `json:"nodes"`
	Tor   *TorReport   `json:"tor,omitempty"`
	Pods  []PodState   `json:"pods"`
	// VM is the lab's libvirt guest (nil without one); VMNote says why there is none
	// when one was asked for.
	VM     *VMReport `json:"vm,omitempty"`
	VMNote string    `json:"vmNote,omitempty"`
	// Policies are the network policies in force: those in the API server and those
	// the nodes' agents programmed.
	Policies []PolicyReport `json:"policies"`
	// Matrix is nil when it was not asked for.
	Matrix *Matrix `json:"matrix,omitempty"`
	// Problems lists what is not as it should be: a node not ready, a BGP session not
	// Established, a cell of the matrix unreachable. Empty means healthy.
	Problems []string `json:"problems"`
}

// Healthy reports whether the report has no problem: in the matrix, if any, every cell
// without an answer is one a policy in force denies.
func (r *Report) Healthy() bool { return len(r.Problems) == 0 }

// NodeReport is one node as its agent's local API reports it.
type NodeReport struct {
	Name       string               `json:"name"`
	Netns      string               `json:"netns"`
	IP         string               `json:"ip"`
	Ready      bool                 `json:"ready"`
	NotReady   []string             `json:"notReady,omitempty"`
	Registered bool                 `json:"registered"`
	Endpoints  int                  `json:"endpoints"`
	Routes     localapi.RouteCounts `json:"routes"`
	Sessions   []localapi.BGPPeer   `json:"sessions"`
	// Expected is how many BGP sessions the node should have.
	Expected int      `json:"expectedSessions"`
	BGP      []string `json:"bgpProblems,omitempty"`
	// Policy is what the agent's policy maps hold (nil from an agent without policy).
	Policy *localapi.PolicyStatus `json:"policy,omitempty"`
	// Error is set when the local API did not answer.
	Error string `json:"error,omitempty"`
}

// TorReport is the top-of-rack router as its own CLI reports it.
type TorReport struct {
	Kind  string    `json:"kind"`
	Netns string    `json:"netns"`
	IP    string    `json:"ip"`
	AS    uint32    `json:"as"`
	CLI   []string  `json:"cli"`
	Peers []TorPeer `json:"peers"`
	Error string    `json:"error,omitempty"`
}

// TorPeer is one of the router's sessions.
type TorPeer struct {
	Addr     string `json:"addr"`
	Node     string `json:"node"`
	AS       uint32 `json:"as"`
	State    string `json:"state"`
	Prefixes int    `json:"prefixes"`
	Info     string `json:"info,omitempty"`
}

// Matrix is the connectivity matrix: a TCP probe from every workload to every other
// (see ProbePort).
type Matrix struct {
	// Probe is what each cell tried: "tcp/8080".
	Probe string `json:"probe"`
	// Workloads name the rows (sources) and columns (destinations).
	Workloads []string `json:"workloads"`
	IPs       []string `json:"ips"`
	// Cells[i][j] is CellOK, CellDenied, CellFail or CellSelf for workload i probing
	// workload j.
	Cells     [][]string `json:"cells"`
	Reachable int        `json:"reachable"`
	// Denied counts the cells without an answer whose destination a policy in force
	// isolates: what the policy is there to do, not a problem.
	Denied int    `json:"denied"`
	Total  int    `json:"total"`
	Took   string `json:"took"`
}

// Values of a Matrix cell.
const (
	CellOK = "ok"
	// CellDenied: no answer, and a NetworkPolicy in force isolates the destination.
	CellDenied = "denied"
	CellFail   = "fail"
	CellSelf   = "self"
)

// Full reports whether every pair reaches each other.
func (m *Matrix) Full() bool { return m.Reachable == m.Total }

// Failed counts the cells without an answer that no policy explains.
func (m *Matrix) Failed() int { return m.Total - m.Reachable - m.Denied }

// Timeouts of the collection.
const (
	agentTimeout = 5 * time.Second
	torTimeout   = 10 * time.Second
)

// expectedSessions is how many BGP sessions node i of n should have.
func expectedSessions(o Options, i, n int) int {
	want := n - 1
	if o.RouteReflector && i != 0 {
		want = 1
	}
	if _, ok := o.torKind(); ok {
		want++
	}
	return want
}

// collect asks every node's agent, the router and the API server (the policies, when
// store is set), and with matrix probes every pair.
func collect(ctx context.Context, st *State, b *built, matrix bool) *Report {
	var tor *router.Router
	var store datastore.Store
	var vm *labVM
	if b != nil {
		tor, store, vm = b.tor, b.store, b.vm
	}
	r := &Report{Name: st.Name, StateDir: st.StateDir, Phase: st.Phase, PID: st.PID, Started: st.Started,
		ReadyAfter: st.ReadyAfter, Options: st.Options, Kubeconfig: st.Kubeconfig, APIServer: st.APIServer,
		Pods: slices.Clone(st.Pods), VMNote: st.VMNote, Policies: []PolicyReport{}, Problems: []string{}}
	if st.K8sBinDir != "" {
		r.Kubectl = st.K8sBinDir + "/kubectl"
	}
	r.Nodes = make([]NodeReport, len(st.Nodes))
	var wg sync.WaitGroup
	for i, n := range st.Nodes {
		wg.Go(func() { r.Nodes[i] = askNode(ctx, n, expectedSessions(st.Options, i, len(st.Nodes))) })
	}
	if st.Tor != nil {
		wg.Go(func() { r.Tor = askTor(ctx, st, tor) })
	}
	var pols []k8sPolicy
	var polErr error
	if store != nil {
		wg.Go(func() { pols, polErr = listPolicies(ctx, store) })
	}
	if vm != nil && st.VM != nil {
		wg.Go(func() { r.VM = vm.report(ctx, store) })
	}
	ws, vmIdx := matrixWorkloads(st)
	if matrix {
		wg.Go(func() { r.Matrix = probeAll(ctx, ws, vmIdx, vm) })
	}
	wg.Wait()
	r.Policies = policyReports(r, pols)
	if r.Matrix != nil {
		markDenied(r.Matrix, ws, pols)
	}
	r.Problems = problems(r)
	if polErr != nil {
		r.Problems = append(r.Problems, "list the network policies: "+polErr.Error())
	}
	return r
}

// askNode reads a node's status over its local API.
func askNode(ctx context.Context, n NodeState, expected int) NodeReport {
	nr := NodeReport{Name: n.Name, Netns: n.Netns, IP: n.IP, Expected: expected, Sessions: []localapi.BGPPeer{}}
	c := localapi.NewClient(n.Socket, agentTimeout)
	st, err := c.Status(ctx)
	if err != nil {
		nr.Error = err.Error()
		return nr
	}
	nr.Ready, nr.NotReady, nr.Registered = st.Ready, st.NotReady, st.Registered
	nr.Endpoints, nr.Routes = len(st.Felix.Endpoints), st.Felix.Routes
	if st.BGP != nil {
		nr.Sessions = append(nr.Sessions, st.BGP.Peers...)
		nr.BGP = st.BGP.Problems
	}
	nr.Policy = st.Policy
	return nr
}

// askTor reads the router's sessions with its own CLI (through test/router).
func askTor(ctx context.Context, st *State, tor *router.Router) *TorReport {
	t := st.Tor
	tr := &TorReport{Kind: t.Kind, Netns: t.Netns, IP: t.IP, AS: t.AS, CLI: t.CLI, Peers: []TorPeer{}}
	if tor == nil {
		tr.Error = "the router is not running"
		return tr
	}
	ctx, cancel := context.WithTimeout(ctx, torTimeout)
	defer cancel()
	ps, err := tor.Peers(ctx)
	if err != nil {
		tr.Error = err.Error()
		return tr
	}
	byIP := map[string]string{}
	for _, n := range st.Nodes {
		byIP[n.IP] = n.Name
	}
	for _, p := range ps {
		tr.Peers = append(tr.Peers, TorPeer{Addr: p.Addr.String(), Node: byIP[p.Addr.String()], AS: p.AS,
			State: p.State, Prefixes: p.PrefixesReceived, Info: p.Info})
	}
	return tr
}

// problems lists what is wrong in r.
func problems(r *Report) []string {
	out := []string{}
	for _, n := range r.Nodes {
		switch {
		case n.Error != "":
			out = append(out, fmt.Sprintf("node %s: the agent does not answer: %s", n.Name, n.Error))
			continue
		case !n.Registered:
			out = append(out, fmt.Sprintf("node %s: not registered", n.Name))
		case !n.Ready:
			out = append(out, fmt.Sprintf("node %s: not ready: %v", n.Name, n.NotReady))
		}
		for _, s := range n.Sessions {
			if s.State != "Established" {
				msg := fmt.Sprintf("node %s: BGP session with %s (%s) is %s", n.Name, s.Address, s.Type, s.State)
				if s.LastError != "" {
					msg += ": " + s.LastError
				}
				out = append(out, msg)
			}
		}
		if len(n.Sessions) < n.Expected {
			out = append(out, fmt.Sprintf("node %s: %d of %d BGP sessions", n.Name, len(n.Sessions), n.Expected))
		}
		for _, p := range n.BGP {
			out = append(out, fmt.Sprintf("node %s: BGP: %s", n.Name, p))
		}
		switch p := n.Policy; {
		case p == nil || !p.Enabled:
			out = append(out, fmt.Sprintf("node %s: network policy is not enforced (tabby-node runs without --policy)", n.Name))
		case !p.Programmed:
			out = append(out, fmt.Sprintf("node %s: policy not programmed: %s", n.Name, p.Error))
		}
	}
	if t := r.Tor; t != nil {
		if t.Error != "" {
			out = append(out, fmt.Sprintf("ToR %s: %s", t.Kind, t.Error))
		}
		for _, p := range t.Peers {
			if p.State != "Established" {
				msg := fmt.Sprintf("ToR %s: session with %s (%s) is %s", t.Kind, p.Addr, p.Node, p.State)
				if p.Info != "" {
					msg += ": " + p.Info
				}
				out = append(out, msg)
			}
		}
		if t.Error == "" && len(t.Peers) < len(r.Nodes) {
			out = append(out, fmt.Sprintf("ToR %s: sessions with %d of %d nodes", t.Kind, len(t.Peers), len(r.Nodes)))
		}
	}
	if v := r.VM; v != nil {
		if v.State != "running" {
			out = append(out, fmt.Sprintf("vm %s: domain %s is %s", v.Name, v.Domain, v.State))
		}
		if v.Error != "" {
			out = append(out, fmt.Sprintf("vm %s: %s", v.Name, v.Error))
		}
	}
	out = append(out, policyProblems(r.Policies)...)
	if m := r.Matrix; m != nil && m.Failed() > 0 {
		for i := range m.Cells {
			for j, c := range m.Cells[i] {
				if c == CellFail {
					out = append(out, fmt.Sprintf("%s (%s) cannot reach %s (%s)", m.Workloads[i], m.IPs[i], m.Workloads[j], m.IPs[j]))
				}
			}
		}
	}
	return out
}
