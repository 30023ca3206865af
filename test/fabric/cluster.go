package fabric

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/netnode"
	"golang.org/x/sys/unix"
)

// teardownTimeout bounds each teardown command (never the caller's context, which may
// be cancelled by then).
const teardownTimeout = 30 * time.Second

// Options configures New.
type Options struct {
	// Prefix starts every namespace name (make it unique: netnode.RandomID/RunID).
	Prefix string
	// Subnet is the fabric (e.g. 10.73.0.0/24): node i is host i+1, routers are taken
	// from the top.
	Subnet netip.Prefix
	// Uplinks holds the nodes' /30s to their stub namespaces (e.g. 10.73.255.0/24).
	Uplinks netip.Prefix
	// Kubeconfig and APIServer (its host URL) are the kube-apiserver the nodes use; each
	// node gets a loopback port forwarded to it.
	Kubeconfig, APIServer string
	// Store is the datastore the cluster writes Pods through and cleans Nodes from.
	Store datastore.Store
	// BinDir holds tabby-node, tabby-cni and tabby-ipam (see BuildBinaries); Cnitool is
	// cnitool's path (netnode.FindCnitool).
	BinDir, Cnitool string
	// Dir is where node directories (sockets, logs, conflists) go; the caller owns it.
	Dir string
	// NodeArgs are extra tabby-node flags for every node.
	NodeArgs []string
	// Wrap, when set, is a command that runs tabby-node (its path and flags follow
	// Wrap's own arguments) inside the node namespace: a confinement, e.g. the
	// capabilities and mounts a container gives it.
	Wrap []string
	// Logf, when set, hears teardown failures.
	Logf func(format string, args ...any)
}

// Cluster is the fabric and what was made on it. Close removes it all.
type Cluster struct {
	Opts   Options
	Fabric string // the fabric namespace, with bridge br0
	// PinRoot is the cluster's own bpffs (under Dir): each node pins under
	// PinRoot/<node>.
	PinRoot string

	cl      netnode.Cleanup
	mu      sync.Mutex
	routers int
}

// BuildBinaries builds tabby-node, tabby-cni and tabbyctl into dir.
func BuildBinaries(ctx context.Context, dir string) error {
	return netnode.Build(ctx, dir, "github.com/tabbynet/tabby/cmd/tabby-cni",
		"github.com/tabbynet/tabby/cmd/tabby-node", "github.com/tabbynet/tabby/cmd/tabbyctl")
}

// New makes the fabric namespace with its bridge. On failure what was made is removed.
func New(ctx context.Context, opts Options) (*Cluster, error) {
	switch {
	case opts.Prefix == "":
		return nil, errors.New("fabric: no Prefix")
	case !opts.Subnet.Addr().Is4() || opts.Subnet.Bits() > 29 || opts.Subnet != opts.Subnet.Masked():
		return nil, fmt.Errorf("fabric: Subnet %s: want a masked IPv4 prefix of /29 or wider", opts.Subnet)
	case !opts.Uplinks.Addr().Is4() || opts.Uplinks.Bits() > 30 || opts.Uplinks != opts.Uplinks.Masked():
		return nil, fmt.Errorf("fabric: Uplinks %s: want a masked IPv4 prefix of /30 or wider", opts.Uplinks)
	case opts.Store == nil || opts.Kubeconfig == "" || opts.APIServer == "":
		return nil, errors.New("fabric: Store, Kubeconfig and APIServer are required")
	case opts.BinDir == "" || opts.Cnitool == "" || opts.Dir == "":
		return nil, errors.New("fabric: BinDir, Cnitool and Dir are required")
	}
	c := &Cluster{Opts: opts, Fabric: opts.Prefix + "-fabric", PinRoot: filepath.Join(opts.Dir, "bpffs")}
	c.cl.Logf = opts.Logf
	// The nodes' BPF pins go on a bpffs of the cluster's own, mounted in this mount
	// namespace: /sys/fs/bpf may have none, and `ip netns exec` (how tabby-node starts)
	// remounts /sys privately, so pins there would die with the process.
	if err := os.MkdirAll(c.PinRoot, 0o700); err != nil {
		return nil, fmt.Errorf("fabric: %w", err)
	}
	if err := unix.Mount("bpf", c.PinRoot, "bpf", 0, "mode=0700"); err != nil {
		return nil, fmt.Errorf("fabric: mount a bpffs on %s: %w", c.PinRoot, err)
	}
	c.cl.Add("unmount the bpffs "+c.PinRoot, func() error {
		if err := unix.Unmount(c.PinRoot, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("unmount %s: %w", c.PinRoot, err)
		}
		return os.Remove(c.PinRoot)
	})
	if _, err := netnode.Run(ctx, "ip", "netns", "add", c.Fabric); err != nil {
		return nil, fmt.Errorf("fabric: %w", err)
	}
	c.cl.Add("delete the fabric namespace "+c.Fabric, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
		defer cancel()
		_, err := netnode.Run(ctx, "ip", "netns", "del", c.Fabric)
		return err
	})
	for _, args := range [][]string{
		{"-n", c.Fabric, "link", "set", "lo", "up"},
		{"-n", c.Fabric, "link", "add", "br0", "type", "bridge"},
		{"-n", c.Fabric, "link", "set", "br0", "up"},
	} {
		if _, err := netnode.Run(ctx, "ip", args...); err != nil {
			return nil, errors.Join(fmt.Errorf("fabric: %w", err), c.Close())
		}
	}
	return c, nil
}

// Close stops every tabby-node, deletes the pods, the Node objects and every namespace,
// last made first; only the first call does.
func (c *Cluster) Close() error { return c.cl.Run() }

// NodeAddr is node i's address on the fabric.
func (c *Cluster) NodeAddr(i int) netip.Addr { return nthHost(c.Opts.Subnet, i+1) }

// uplink is node i's /30 to its stub: the node's address with its length, and the stub's.
func (c *Cluster) uplink(i int) (string, string, error) {
	base := c.Opts.Uplinks.Addr().As4()
	off := uint32(4 * i)
	if n := 1 << (32 - c.Opts.Uplinks.Bits()); int(off)+4 > n {
		return "", "", fmt.Errorf("fabric: no /30 left in %s for node %d", c.Opts.Uplinks, i)
	}
	a := netip.AddrFrom4(addU32(base, off+1))
	return a.String() + "/30", netip.AddrFrom4(addU32(base, off+2)).String(), nil
}

// Router is a namespace on the fabric for a top-of-rack router.
type Router struct {
	Netns string     // the namespace; the daemon runs in it
	Addr  netip.Addr // its address on the fabric (eth0... named fab0)
	Dir   string     // a directory for the daemon's files (mode 0755, so daemons that drop privileges can use it)
}

// AddRouter makes a namespace <Prefix>-<name> joined to the fabric as fab0 with the next
// address from the top of the subnet, lo up and forwarding on.
func (c *Cluster) AddRouter(ctx context.Context, name string) (*Router, error) {
	c.mu.Lock()
	c.routers++
	k := c.routers
	c.mu.Unlock()
	size := 1 << (32 - c.Opts.Subnet.Bits())
	r := &Router{Netns: c.Opts.Prefix + "-" + name, Addr: nthHost(c.Opts.Subnet, size-1-k),
		Dir: filepath.Join(c.Opts.Dir, name)}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("fabric: router %s: %w", name, err)
	}
	if _, err := netnode.Run(ctx, "ip", "netns", "add", r.Netns); err != nil {
		return nil, fmt.Errorf("fabric: router %s: %w", name, err)
	}
	c.cl.Add("delete the router namespace "+r.Netns, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
		defer cancel()
		_, err := netnode.Run(ctx, "ip", "netns", "del", r.Netns)
		return err
	})
	if err := c.join(ctx, r.Netns, "r"+name, r.Addr); err != nil {
		return nil, fmt.Errorf("fabric: router %s: %w", name, err)
	}
	if _, err := netnode.Run(ctx, "ip", "netns", "exec", r.Netns, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"); err != nil {
		return nil, fmt.Errorf("fabric: router %s: %w", name, err)
	}
	return r, nil
}

// join adds a veth fab0 in ns with addr on the fabric, its other end port in br0.
func (c *Cluster) join(ctx context.Context, ns, port string, addr netip.Addr) error {
	if len(port) > 15 {
		port = port[:15]
	}
	for _, args := range [][]string{
		{"-n", ns, "link", "set", "lo", "up"},
		{"-n", ns, "link", "add", "fab0", "type", "veth", "peer", "name", port, "netns", c.Fabric},
		{"-n", c.Fabric, "link", "set", port, "master", "br0"},
		{"-n", c.Fabric, "link", "set", port, "up"},
		{"-n", ns, "addr", "add", fmt.Sprintf("%s/%d", addr, c.Opts.Subnet.Bits()), "dev", "fab0"},
		{"-n", ns, "link", "set", "fab0", "up"},
	} {
		if _, err := netnode.Run(ctx, "ip", args...); err != nil {
			return err
		}
	}
	return nil
}

func nthHost(p netip.Prefix, n int) netip.Addr {
	return netip.AddrFrom4(addU32(p.Addr().As4(), uint32(n)))
}

func addU32(b [4]byte, n uint32) [4]byte {
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v += n
	return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}
