package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/tabbynet/tabby/test/netnode"
)

// The connectivity matrix is a TCP probe, not a ping: a NetworkPolicy is about
// connections to ports, and a probe says which pod answered. Every pod serves HTTP on
// ProbePort (the supervisor holds the listening socket, made inside the pod's network
// namespace: no process runs in a pod); a probe opens a connection from inside the
// source pod's namespace, sends GET / and wants the destination pod's name back. An
// answer comes back in about a millisecond, so probeTimeout is only what a connection
// dropped by policy costs: the probes run in parallel, so a matrix with denied cells
// takes about probeTimeout, one without them a few milliseconds.
const (
	ProbePort     = 8080
	probeTimeout  = time.Second
	probeParallel = 32
)

// podServer is the HTTP server of one pod.
type podServer struct {
	ln  net.Listener
	srv *http.Server
}

// servePod listens on ProbePort inside the pod's network namespace and answers GET /
// with "<pod> on <node>\n" until stopped.
func servePod(pod PodState) (*podServer, error) {
	var ln net.Listener
	err := ns.WithNetNSPath(netnode.NSPath(pod.Netns), func(ns.NetNS) error {
		var err error
		ln, err = net.Listen("tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(ProbePort)))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("serve tcp/%d in pod %s: %w", ProbePort, pod.Name, err)
	}
	body := pod.Name + " on " + pod.Node + "\n"
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte(body))
	})
	ps := &podServer{ln: ln, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}}
	go func() { _ = ps.srv.Serve(ln) }()
	return ps, nil
}

// stop closes the listener and every connection.
func (ps *podServer) stop() error {
	if err := ps.srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// probe connects from network namespace srcNetns to dst's ProbePort and reports
// whether dst answered with its name within probeTimeout. A pod answers HTTP; bare
// (the guest) is sent nothing and answers its name on a line of its own.
func probe(ctx context.Context, srcNetns string, dst PodState, bare bool) bool {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	addr, err := netip.ParseAddr(dst.IP)
	if err != nil {
		return false
	}
	var conn net.Conn
	// The socket belongs to the namespace it is made in: dial from a thread inside the
	// source pod's.
	err = ns.WithNetNSPath(netnode.NSPath(srcNetns), func(ns.NetNS) error {
		var d net.Dialer
		var err error
		conn, err = d.DialContext(ctx, "tcp4", netip.AddrPortFrom(addr, ProbePort).String())
		return err
	})
	if err != nil {
		return false
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if bare {
		// Nothing is sent: the guest's server (busybox nc) answers and closes at once,
		// and data it did not read would make its end reset the connection.
		line, _ := bufio.NewReader(conn).ReadString('\n')
		return answersAs(line, dst.Name)
	}
	if _, err := fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", dst.IP); err != nil {
		return false
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	line, _ := bufio.NewReader(resp.Body).ReadString('\n')
	return resp.StatusCode == http.StatusOK && strings.HasPrefix(line, dst.Name+" ")
}

// matrixWorkloads are the matrix's rows and columns: the pods, then the lab's guest
// once it has an address; vmIdx is the guest's index (-1 without one).
func matrixWorkloads(st *State) (ws []PodState, vmIdx int) {
	ws = slices.Clone(st.Pods)
	vmIdx = -1
	if vm := st.VM; vm != nil && vm.IP != "" {
		ws = append(ws, PodState{Namespace: vm.Namespace, Name: vm.Name, Node: vm.Node, Netns: vm.Netns, IP: vm.IP})
		vmIdx = len(ws) - 1
	}
	return ws, vmIdx
}

// probeAll probes every workload from every other: the pods, and the guest (vm, at
// vmIdx of ws) as a destination and, over its console, as a source.
func probeAll(ctx context.Context, ws []PodState, vmIdx int, vm *labVM) *Matrix {
	t0 := time.Now()
	m := newMatrix(ws)
	pairs := allPairs(len(ws))
	ok := probePairs(ctx, ws, vmIdx, vm, pairs)
	for k, p := range pairs {
		if ok[k] {
			m.Cells[p[0]][p[1]] = CellOK
			m.Reachable++
		}
	}
	m.Took = time.Since(t0).Round(time.Millisecond).String()
	return m
}

// allPairs is every pair (i, j) of n workloads with i != j.
func allPairs(n int) [][2]int {
	var pairs [][2]int
	for i := range n {
		for j := range n {
			if i != j {
				pairs = append(pairs, [2]int{i, j})
			}
		}
	}
	return pairs
}

// newMatrix is the matrix of pods with every pair failed.
func newMatrix(pods []PodState) *Matrix {
	m := &Matrix{Cells: make([][]string, len(pods)), Probe: fmt.Sprintf("tcp/%d", ProbePort)}
	for i, p := range pods {
		m.Workloads = append(m.Workloads, p.Name)
		m.IPs = append(m.IPs, p.IP)
		m.Cells[i] = make([]string, len(pods))
		for j := range pods {
			m.Cells[i][j] = CellFail
			if i == j {
				m.Cells[i][j] = CellSelf
			}
		}
	}
	m.Total = len(pods) * (len(pods) - 1)
	return m
}

// probePairs probes ws[p[1]] from ws[p[0]] for each pair, many at once, and says
// which answered. Probes to the guest (vmIdx) go one after another; pairs from it go
// in one command on its console (none without vm), once the probes to it are done
// (its one slow CPU would not answer them in time while it probes), alongside the
// rest.
func probePairs(ctx context.Context, ws []PodState, vmIdx int, vm *labVM, pairs [][2]int) []bool {
	ok := make([]bool, len(pairs))
	sem := make(chan struct{}, probeParallel)
	var wg, toVM sync.WaitGroup
	// One at a time to the guest: its server (busybox nc -ll) listens with a backlog
	// of one and drops the SYNs of connections that come together.
	var vmMu sync.Mutex
	var fromVM []int // indexes into pairs
	for k, p := range pairs {
		if p[0] == vmIdx {
			fromVM = append(fromVM, k)
			continue
		}
		if p[1] == vmIdx {
			toVM.Go(func() {
				vmMu.Lock()
				defer vmMu.Unlock()
				ok[k] = probe(ctx, ws[p[0]].Netns, ws[p[1]], true)
			})
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ok[k] = probe(ctx, ws[p[0]].Netns, ws[p[1]], false)
		})
	}
	if len(fromVM) > 0 && vm != nil {
		wg.Go(func() {
			toVM.Wait()
			dsts := make([]PodState, len(fromVM))
			for i, k := range fromVM {
				dsts[i] = ws[pairs[k][1]]
			}
			for i, res := range vm.probeFrom(ctx, dsts) {
				ok[fromVM[i]] = res
			}
		})
	}
	toVM.Wait()
	wg.Wait()
	return ok
}
