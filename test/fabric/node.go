package fabric

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/netnode"
)

// stopTimeout is how long a tabby-node gets to exit after SIGTERM.
const stopTimeout = 20 * time.Second

// Node is one node: its namespaces, its CNI runtime and its tabby-node process.
type Node struct {
	C          *Cluster
	Net        *netnode.Node
	Name       string     // the node's name (and its namespace)
	IP         netip.Addr // on the fabric
	Kubeconfig string     // reaches the apiserver from inside the node namespace
	Runtime    *netnode.Runtime
	Network    string // the CNI network (conflist) name
	Dir        string // socket, nodename file, logs, conflists
	Socket     string // tabby-node's local API socket
	Log        string // tabby-node's log (appended across restarts)
	// PinDir is the node's own BPF pin directory (agents sharing a kernel must not
	// share one); removed with the cluster.
	PinDir string

	mu   sync.Mutex
	proc *exec.Cmd
	done chan struct{}
}

// AddNode makes node i: its namespace with a stub default route, a veth fab0 into the
// fabric with NodeAddr(i), a kubeconfig reaching the apiserver from inside, and a CNI
// network for tabby-cni. tabby-node is not started (see Start).
func (c *Cluster) AddNode(ctx context.Context, i int) (*Node, error) {
	cidr, gw, err := c.uplink(i)
	if err != nil {
		return nil, err
	}
	n, err := netnode.New(ctx, netnode.Options{Prefix: fmt.Sprintf("%s-%c", c.Opts.Prefix, 'a'+i),
		UplinkCIDR: cidr, Gateway: gw, Cleanup: &c.cl})
	if err != nil {
		return nil, fmt.Errorf("fabric: node %d: %w", i, err)
	}
	tn := &Node{C: c, Net: n, Name: n.Name, IP: c.NodeAddr(i), Dir: filepath.Join(c.Opts.Dir, n.Name), Network: n.Name}
	fail := func(err error) (*Node, error) { return nil, fmt.Errorf("fabric: node %s: %w", tn.Name, err) }
	if err := os.MkdirAll(tn.Dir, 0o755); err != nil {
		return fail(err)
	}
	c.cl.Add("delete the Node objects of "+tn.Name, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
		defer cancel()
		var errs []error
		for _, k := range []datastore.Kind{datastore.KindNode, datastore.KindNodeStatus} {
			if err := c.Opts.Store.Delete(ctx, k, "", tn.Name, datastore.DeleteOptions{}); err != nil && !errors.Is(err, datastore.ErrNotFound) {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
	if err := c.join(ctx, n.Name, fmt.Sprintf("fab%c", 'a'+i), tn.IP); err != nil {
		return fail(err)
	}
	tn.Kubeconfig = filepath.Join(tn.Dir, "kubeconfig")
	if err := n.ForwardKubeconfig(c.Opts.Kubeconfig, c.Opts.APIServer, tn.Kubeconfig); err != nil {
		return fail(err)
	}
	confDir := filepath.Join(tn.Dir, "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return fail(err)
	}
	tn.Runtime = &netnode.Runtime{Node: n, Cnitool: c.Opts.Cnitool, ConfDir: confDir, BinDir: c.Opts.BinDir}
	if err := netnode.WriteConflist(confDir, tn.Network, "1.1.0", map[string]any{
		"type": "tabby-cni", "kubeconfig": tn.Kubeconfig, "nodename": tn.Name, "mtu": 1500,
		"log_level": "debug", "log_file": filepath.Join(tn.Dir, "cni.log"), "datastore_timeout": "10s",
		"ipam": map[string]any{"type": "tabby-ipam"}, "agent_socket": filepath.Join(tn.Dir, "run", "tabby-node.sock"),
	}); err != nil {
		return fail(err)
	}
	c.cl.Add("remove cnitool's results of "+tn.Network, func() error { return netnode.RemoveCNIResults(tn.Network) })
	tn.Socket = filepath.Join(tn.Dir, "run", "tabby-node.sock")
	tn.Log = filepath.Join(tn.Dir, "tabby-node.log")
	tn.PinDir = filepath.Join(c.PinRoot, tn.Name)
	c.cl.Add("remove the BPF pins of "+tn.Name, func() error { return os.RemoveAll(tn.PinDir) })
	c.cl.Add("stop tabby-node on "+tn.Name, func() error { return tn.Stop() })
	return tn, nil
}

// Start runs tabby-node inside the node namespace with --ip on the fabric, the
// cluster's NodeArgs and args; its output is appended to Log. It dies with the caller.
func (n *Node) Start(args ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc != nil {
		select {
		case <-n.done:
		default:
			return fmt.Errorf("fabric: tabby-node on %s is running", n.Name)
		}
	}
	logf, err := os.OpenFile(n.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("fabric: %w", err)
	}
	defer logf.Close()
	argv := append([]string{"--node-name", n.Name, "--kubeconfig", n.Kubeconfig, "--socket", n.Socket,
		"--ip", fmt.Sprintf("%s/%d", n.IP, n.C.Opts.Subnet.Bits()), "--health-addr", "127.0.0.1:19099",
		"--metrics-addr", "127.0.0.1:19091", "--nodename-file", filepath.Join(n.Dir, "nodename"),
		"--log-level", "debug", "--resync-interval", "5s", "--bpf-pin-dir", n.PinDir,
		// The machine's one libvirtd is shared by every test: a node follows it only
		// when its test asks (--vm-endpoints=true in NodeArgs or Start's args).
		"--vm-endpoints=false"}, n.C.Opts.NodeArgs...)
	argv = append(argv, args...)
	bin := filepath.Join(n.C.Opts.BinDir, "tabby-node")
	if w := n.C.Opts.Wrap; len(w) > 0 {
		argv = append(append(append([]string{}, w[1:]...), bin), argv...)
		bin = w[0]
	}
	cmd := n.Net.Command(context.Background(), bin, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("fabric: start tabby-node on %s: %w", n.Name, err)
	}
	done := make(chan struct{})
	n.proc, n.done = cmd, done
	go func() { _ = cmd.Wait(); close(done) }()
	return nil
}

// PID is tabby-node's process id (0 when it never started). `ip netns exec` and a
// Wrap that execs keep the pid.
func (n *Node) PID() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil || n.proc.Process == nil {
		return 0
	}
	return n.proc.Process.Pid
}

// Running reports whether tabby-node runs.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.proc == nil {
		return false
	}
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// Stop sends tabby-node SIGTERM and waits for it to exit (killing it after 20 s); an
// exit status other than 0 is an error. Stopping a stopped node does nothing.
func (n *Node) Stop() error {
	return n.signal(syscall.SIGTERM)
}

// Kill sends tabby-node SIGKILL (no graceful anything) and waits for it to exit.
func (n *Node) Kill() error {
	return n.signal(syscall.SIGKILL)
}

func (n *Node) signal(sig syscall.Signal) error {
	n.mu.Lock()
	proc, done := n.proc, n.done
	n.mu.Unlock()
	if proc == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	if err := proc.Process.Signal(sig); err != nil {
		return fmt.Errorf("fabric: signal tabby-node on %s: %w", n.Name, err)
	}
	select {
	case <-done:
	case <-time.After(stopTimeout):
		_ = proc.Process.Kill()
		<-done
		return fmt.Errorf("fabric: tabby-node on %s did not exit within %v of %v", n.Name, stopTimeout, sig)
	}
	if code := proc.ProcessState.ExitCode(); sig == syscall.SIGTERM && code != 0 {
		return fmt.Errorf("fabric: tabby-node on %s exited %d after SIGTERM", n.Name, code)
	}
	return nil
}

// LogTail is the last lines of tabby-node's log.
func (n *Node) LogTail(lines int) string {
	b, err := os.ReadFile(n.Log)
	if err != nil {
		return err.Error()
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}
