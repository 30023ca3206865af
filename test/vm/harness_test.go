package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ebpf/ebpftest"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/k8senv"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/vmguest"
	"golang.org/x/sys/unix"
	"libvirt.org/go/libvirt"
)

const suite = "test/vm" // in skip messages

// Address ranges only this suite uses, inside its own namespaces.
var (
	fabricNet  = netip.MustParsePrefix("10.76.0.0/24")   // nodes .1, .2
	uplinksNet = netip.MustParsePrefix("10.76.255.0/24") // nodes' /30s to their stubs
	poolNet    = netip.MustParsePrefix("10.77.0.0/16")   // pods and the guest
	// forgedAddr is in the pool but never handed out (blocks are taken from the start).
	forgedAddr = netip.MustParseAddr("10.77.200.9")
)

// Deadlines: guests run under TCG, the agents share two cores with QEMU.
const (
	bootTimeout   = 2 * time.Minute
	agentTimeout  = 90 * time.Second // tabby-node registered, policy programmed
	waitTimeout   = 30 * time.Second // a WorkloadEndpoint, a route, a policy version
	cmdTimeout    = 30 * time.Second // a console command
	deniedTimeout = 2 * time.Second  // how long a probe that must not be answered waits
)

// world is the cluster, the guest and what the checks need.
type world struct {
	id     string
	ns     string // the Kubernetes namespace of the pods and the guest
	env    *k8senv.Env
	store  datastore.Store
	binDir string
	f      *fabric.Cluster
	a, b   *fabric.Node // the guest's node and the pod's
	apiA   *localapi.Client
	vmArgs []string // node A's extra tabby-node flags
	conn   *libvirt.Connect
	art    *vmguest.Artifacts
	// priv is the test's own libvirtd (newPrivateWorld), nil on the shared one; uri
	// is the libvirt URI the guests are on.
	priv *vmguest.PrivateLibvirtd
	uri  string
}

// newWorld checks the components, builds the binaries and the guest's artifacts,
// starts the shared libvirtd, creates the namespace and the pool, and makes the
// fabric with two nodes (tabby-node not started). Everything goes when t ends.
func newWorld(t *testing.T) *world {
	t.Helper()
	return newWorldOn(t, sharedLibvirtd)
}

// Which libvirtd newWorldOn starts.
type libvirtdKind int

const (
	sharedLibvirtd  libvirtdKind = iota // the machine's system libvirtd
	privateLibvirtd                     // a PrivateLibvirtd in the host's namespace
	noLibvirtd                          // none: the test starts its own (per node)
)

// newPrivateWorld is newWorld with a libvirtd of the test's own (vmguest's
// PrivateLibvirtd) instead of the shared one, for a test that stops it; w.conn is a
// connection to it, closed when t ends (after the domains' cleanups) whatever
// connection it is then.
func newPrivateWorld(t *testing.T) *world {
	t.Helper()
	return newWorldOn(t, privateLibvirtd)
}

func newWorldOn(t *testing.T, kind libvirtdKind) *world {
	t.Helper()
	vmguest.Require(t, suite)
	k8senv.Require(t, env)
	netnode.RequireNetns(t, suite, "ip", "ping")
	ebpftest.Require(t)
	ctx := netnode.Context(t, 10*time.Minute)
	cnitool, err := netnode.FindCnitool(ctx, "")
	netnode.Require(t, suite, "cnitool (hack/cnitool.sh)", err)
	id, err := netnode.RandomID()
	if err != nil {
		t.Fatal(err)
	}
	w := &world{id: id, ns: "tvm-" + id, env: env, binDir: t.TempDir()}

	// The binaries build while the guest's artifacts and libvirtd come up.
	start := time.Now()
	built := make(chan error, 1)
	go func() { built <- fabric.BuildBinaries(ctx, w.binDir) }()
	w.art = vmguest.BuildT(t, suite)
	switch kind {
	case privateLibvirtd:
		w.priv = vmguest.PrivateLibvirtdT(t, suite)
		w.uri = w.priv.URI
		if w.conn, err = libvirt.NewConnect(w.uri); err != nil {
			t.Fatalf("connect to the private libvirtd: %v", err)
		}
		t.Cleanup(func() { _, _ = w.conn.Close() }) // after a restart the old one is dead: nothing to report
	case sharedLibvirtd:
		_, w.conn = vmguest.LibvirtdT(t, suite, "")
		w.uri = vmguest.URI
	}
	if err := <-built; err != nil {
		t.Fatalf("build the binaries: %v", err)
	}
	t.Logf("binaries, guest artifacts and libvirtd ready in %v", time.Since(start).Round(time.Millisecond))

	if w.store, err = datastore.NewKube(env.Config); err != nil {
		t.Fatal(err)
	}
	// Made before the cluster, so removed after it (and its pods).
	netnode.CreateNamespace(t, w.store, w.ns)
	netnode.CreatePool(t, w.store, "tvm-"+id, poolNet.String(), 26)
	w.f, err = fabric.New(ctx, fabric.Options{Prefix: "tvm-" + id, Subnet: fabricNet, Uplinks: uplinksNet,
		Kubeconfig: env.Kubeconfig, APIServer: env.Config.Host, Store: w.store, BinDir: w.binDir,
		Cnitool: cnitool, Dir: t.TempDir(), Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := w.f.Close(); err != nil {
			t.Errorf("teardown: %v", err)
		}
	})
	for i, p := range []**fabric.Node{&w.a, &w.b} {
		n, err := w.f.AddNode(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		*p = n
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("tabby-node log of %s (last 100 lines):\n%s", n.Name, n.LogTail(100))
			}
		})
	}
	w.apiA = localapi.NewClient(w.a.Socket, 5*time.Second)
	return w
}

// waitAgent waits until the node's tabby-node is registered with policy programmed.
func waitAgent(t *testing.T, n *fabric.Node) {
	t.Helper()
	api := localapi.NewClient(n.Socket, 5*time.Second)
	waitFor(t, "tabby-node on "+n.Name+" registered with policy programmed", agentTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := api.Status(ctx)
		if err != nil {
			return err
		}
		ps, err := api.Policy(ctx)
		if err != nil {
			return err
		}
		if !st.Registered || !ps.Enabled || !ps.Programmed {
			return fmt.Errorf("registered %v, policy enabled %v, programmed %v (%s)", st.Registered, ps.Enabled, ps.Programmed, ps.Error)
		}
		return nil
	})
}

// guestWEP is the WorkloadEndpoint of the domain named workload in w.ns.
func (w *world) guestWEP(workload string) (*v1.WorkloadEndpoint, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	weps, err := datastore.List[*v1.WorkloadEndpoint](ctx, w.store, datastore.ListOptions{Namespace: w.ns})
	if err != nil {
		return nil, err
	}
	var found *v1.WorkloadEndpoint
	for _, e := range weps {
		if e.Spec.Orchestrator == v1.OrchestratorLibvirt && e.Spec.Workload == workload {
			if found != nil {
				return nil, fmt.Errorf("two endpoints of %s: %s and %s", workload, found.Name, e.Name)
			}
			found = e
		}
	}
	if found == nil {
		return nil, fmt.Errorf("no WorkloadEndpoint of domain %s in %s yet", workload, w.ns)
	}
	return found, nil
}

// waitEnforced waits until node A's agent reports the endpoint named name programmed
// and its policy enforced.
func (w *world) waitEnforced(t *testing.T, name string) {
	t.Helper()
	w.waitEnforcedOn(t, w.a, name)
}

// waitEnforcedOn is waitEnforced on node n.
func (w *world) waitEnforcedOn(t *testing.T, n *fabric.Node, name string) {
	t.Helper()
	api := localapi.NewClient(n.Socket, 5*time.Second)
	waitFor(t, "endpoint "+name+" programmed and policed on "+n.Name, waitTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		eps, err := api.Endpoints(ctx)
		if err != nil {
			return err
		}
		for _, e := range eps {
			if e.Namespace == w.ns && e.Name == name {
				if !e.Programmed || !e.PolicyEnforced {
					return fmt.Errorf("programmed %v (%s), policy enforced %v (%s)", e.Programmed, e.Message, e.PolicyEnforced, e.PolicyMessage)
				}
				return nil
			}
		}
		return fmt.Errorf("agent lists no endpoint %s/%s", w.ns, name)
	})
}

// waitPolicy waits until node A's GET /policy is programmed from exactly version rv of
// the Tabby NetworkPolicy name in w.ns.
func (w *world) waitPolicy(t *testing.T, name, rv string) {
	t.Helper()
	w.waitPolicyOn(t, w.a, name, rv)
}

// waitPolicyOn is waitPolicy on node n.
func (w *world) waitPolicyOn(t *testing.T, n *fabric.Node, name, rv string) {
	t.Helper()
	api := localapi.NewClient(n.Socket, 5*time.Second)
	waitFor(t, fmt.Sprintf("policy %s/%s at version %s programmed on %s", w.ns, name, rv, n.Name), waitTimeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ps, err := api.Policy(ctx)
		if err != nil {
			return err
		}
		if !ps.Programmed || !ps.Programs("NetworkPolicy", w.ns, name, rv) {
			return fmt.Errorf("programmed %v, sources %+v (%s)", ps.Programmed, ps.Sources, ps.Error)
		}
		return nil
	})
}

// tabbyctl runs the built tabbyctl and returns its stdout.
func (w *world) tabbyctl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(w.binDir, "tabbyctl"), append([]string{"--kubeconfig", w.env.Kubeconfig}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("tabbyctl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() error) {
	t.Helper()
	netnode.WaitFor(t, what, timeout, 50*time.Millisecond, cond)
}

// guestRun runs cmd in the guest's console shell; t fails when it cannot.
func guestRun(t *testing.T, d *vmguest.Domain, cmd string) (string, int) {
	t.Helper()
	out, code, err := d.Console.Run(context.Background(), cmd, cmdTimeout)
	if err != nil {
		t.Fatal(err)
	}
	return out, code
}

func nsPath(netns string) string {
	if strings.HasPrefix(netns, "/") {
		return netns
	}
	return filepath.Join("/run/netns", netns)
}

// tcpAsk connects from the network namespace netns to addr:port, sends an HTTP GET and
// returns everything the server sent before closing. A connection that is not made
// within timeout is an error for which isTimeout holds.
func tcpAsk(netns string, addr netip.Addr, port uint16, timeout time.Duration) (string, error) {
	var conn net.Conn
	err := ns.WithNetNSPath(nsPath(netns), func(ns.NetNS) error {
		var err error
		conn, err = net.DialTimeout("tcp", netip.AddrPortFrom(addr, port).String(), timeout)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("connect %s:%d from %s: %w", addr, port, netns, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = conn.Write([]byte("GET / HTTP/1.0\r\n\r\n")) // a bare server may have closed already
	b, err := io.ReadAll(conn)
	if err != nil && len(b) == 0 {
		return "", fmt.Errorf("read from %s:%d: %w", addr, port, err)
	}
	return string(b), nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// icmpSniffer sees every ICMP packet that reaches a network namespace (a raw socket
// there: the kernel hands it a copy of each, and still answers echo requests).
type icmpSniffer struct {
	f *os.File
}

func sniffICMP(netns string) (*icmpSniffer, error) {
	fd := -1
	err := ns.WithNetNSPath(nsPath(netns), func(ns.NetNS) error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raw icmp socket in %s: %w", netns, err)
	}
	return &icmpSniffer{f: os.NewFile(uintptr(fd), "icmp-"+netns)}, nil
}

func (s *icmpSniffer) Close() error { return s.f.Close() }

// echoRequestsUntil reads echo requests until one from until arrives (or timeout),
// and returns the sources of all it read.
func (s *icmpSniffer) echoRequestsUntil(until netip.Addr, timeout time.Duration) ([]netip.Addr, error) {
	if err := s.f.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("sniffer deadline: %w", err)
	}
	var srcs []netip.Addr
	b := make([]byte, 2048)
	for {
		n, err := s.f.Read(b)
		if err != nil {
			return srcs, fmt.Errorf("no echo request from %s within %v: %w", until, timeout, err)
		}
		if n < 20 {
			continue
		}
		ihl := int(b[0]&0x0f) * 4
		if n < ihl+8 || b[ihl] != 8 { // echo request
			continue
		}
		src := netip.AddrFrom4([4]byte(b[12:16]))
		srcs = append(srcs, src)
		if src == until {
			return srcs, nil
		}
	}
}

// pinger is a continuous ping from a network namespace, one every 20 ms.
type pinger struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *pinger) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *pinger) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

var replyLine = regexp.MustCompile(`bytes from .* icmp_seq=(\d+)`)

// replies is how many echo replies ping printed so far.
func (p *pinger) replies() int { return len(replyLine.FindAllString(p.output(), -1)) }

func startPing(netns string, to netip.Addr) (*pinger, error) {
	p := &pinger{done: make(chan struct{})}
	// `ip netns exec` execs ping: SIGINT reaches ping itself, which prints its summary.
	p.cmd = exec.Command("ip", "netns", "exec", netns, "ping", "-D", "-n", "-i", "0.02", "-W", "1", to.String())
	p.cmd.Stdout, p.cmd.Stderr = p, p
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start ping: %w", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	return p, nil
}

var pingSummary = regexp.MustCompile(`(\d+) packets transmitted, (\d+) (?:packets )?received`)

// stop interrupts ping and returns how many it sent and how many were answered.
func (p *pinger) stop() (sent, received int, err error) {
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		return 0, 0, fmt.Errorf("interrupt ping: %w", err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
		return 0, 0, errors.New("ping did not exit on SIGINT")
	}
	m := pingSummary.FindStringSubmatch(p.output())
	if m == nil {
		return 0, 0, fmt.Errorf("no summary in ping's output:\n%s", p.output())
	}
	sent, _ = strconv.Atoi(m[1])
	received, _ = strconv.Atoi(m[2])
	return sent, received, nil
}

// kill ends ping if it still runs (cleanup).
func (p *pinger) kill() {
	select {
	case <-p.done:
	default:
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// lostSeqs lists the icmp_seq numbers below the last answered one that got no reply.
func (p *pinger) lostSeqs() []int {
	seen := map[int]bool{}
	last := 0
	for _, m := range replyLine.FindAllStringSubmatch(p.output(), -1) {
		n, _ := strconv.Atoi(m[1])
		seen[n] = true
		last = max(last, n)
	}
	var lost []int
	for i := 1; i < last; i++ {
		if !seen[i] {
			lost = append(lost, i)
		}
	}
	return lost
}

var stampedReply = regexp.MustCompile(`(?m)^\[(\d+)\.(\d+)\] \d+ bytes from .* icmp_seq=(\d+)`)

// replyGap is a time between two consecutive echo replies (ping's -D timestamps).
type replyGap struct {
	From, To time.Time // the replies before and after it
	EndSeq   int       // the icmp_seq of the reply that ended it
}

func (g replyGap) Len() time.Duration { return g.To.Sub(g.From) }

// gaps lists the gaps between consecutive echo replies longer than min, in order.
func (p *pinger) gaps(min time.Duration) []replyGap {
	var prev time.Time
	var out []replyGap
	for _, m := range stampedReply.FindAllStringSubmatch(p.output(), -1) {
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		nsec, _ := strconv.ParseInt((m[2] + "000000000")[:9], 10, 64)
		at := time.Unix(sec, nsec)
		if !prev.IsZero() && at.Sub(prev) > min {
			seq, _ := strconv.Atoi(m[3])
			out = append(out, replyGap{From: prev, To: at, EndSeq: seq})
		}
		prev = at
	}
	return out
}

// macOf parses a MAC for comparison.
func macOf(s string) net.HardwareAddr {
	m, _ := net.ParseMAC(s)
	return m
}

// startOnNodeA starts d with its tap moved into node A's namespace while the guest is
// paused (moving a link takes it down; libvirt had brought it up), then waits for the
// guest's WorkloadEndpoint with one address and returns it and that /32.
func (w *world) startOnNodeA(t *testing.T, ctx context.Context, d *vmguest.Domain, name, tap string) (*v1.WorkloadEndpoint, netip.Prefix) {
	t.Helper()
	hook := func() error {
		if _, err := netnode.Run(ctx, "ip", "link", "set", tap, "netns", w.a.Name); err != nil {
			return err
		}
		_, err := w.a.Net.IP(ctx, "link", "set", tap, "up")
		return err
	}
	if err := d.Start(ctx, hook); err != nil {
		t.Fatal(err)
	}
	var wep *v1.WorkloadEndpoint
	waitFor(t, "the guest's WorkloadEndpoint", waitTimeout, func() error {
		var err error
		if wep, err = w.guestWEP(name); err != nil {
			return err
		}
		if len(wep.Spec.IPNetworks) != 1 {
			return fmt.Errorf("endpoint %s has addresses %v", wep.Name, wep.Spec.IPNetworks)
		}
		return nil
	})
	vmNet, err := netip.ParsePrefix(wep.Spec.IPNetworks[0])
	if err != nil {
		t.Fatal(err)
	}
	return wep, vmNet
}
