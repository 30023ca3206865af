package netnode

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// teardownTimeout bounds each command of a teardown step (never the caller's context,
// which may be cancelled by then).
const teardownTimeout = 30 * time.Second

// Options configures New.
type Options struct {
	// Prefix starts every name: the node namespace is <Prefix>-node, the stub namespace
	// <Prefix>-stub, a pod namespace <Prefix>-<tag>. Make it unique (RandomID, RunID).
	Prefix string
	// UplinkCIDR is the node's address on uplink0, the veth to the stub namespace
	// (e.g. "10.66.255.1/30"); Gateway is the stub's end, uplink1, with the same prefix
	// length (e.g. "10.66.255.2"), and the node's default route. With both empty there
	// is no stub namespace and no default route.
	UplinkCIDR, Gateway string
	// Cleanup, when set, gets the node's Close before anything is made, so that running
	// it at any time (on a signal, say) removes whatever exists by then.
	Cleanup *Cleanup
}

// Node is a node network namespace and what was made for it. Close removes it all.
type Node struct {
	Name   string          // the node namespace, <Prefix>-node; also the node's name
	Stub   string          // the stub namespace behind the default route ("" without one)
	NS     netns.NsHandle  // the node namespace
	Handle *netlink.Handle // netlink inside the node namespace

	prefix string
	cl     Cleanup
	mu     sync.Mutex
	netns  map[string]bool // namespaces made and not yet deleted
}

// NSPath is the path of the named network namespace.
func NSPath(name string) string { return "/run/netns/" + name }

// New makes the node namespace: lo up, forwarding on and, with an uplink, the stub
// namespace behind its default route. On failure what was made is removed again.
func New(ctx context.Context, opts Options) (*Node, error) {
	if opts.Prefix == "" {
		return nil, errors.New("netnode: no Prefix")
	}
	var stubCIDR string
	if opts.UplinkCIDR != "" || opts.Gateway != "" {
		p, err := netip.ParsePrefix(opts.UplinkCIDR)
		if err != nil {
			return nil, fmt.Errorf("netnode: UplinkCIDR: %w", err)
		}
		gw, err := netip.ParseAddr(opts.Gateway)
		if err != nil || !p.Masked().Contains(gw) {
			return nil, fmt.Errorf("netnode: Gateway %q is not in %s", opts.Gateway, opts.UplinkCIDR)
		}
		stubCIDR = gw.String() + "/" + strconv.Itoa(p.Bits())
	}
	n := &Node{Name: opts.Prefix + "-node", prefix: opts.Prefix, netns: map[string]bool{}, NS: -1}
	if stubCIDR != "" {
		n.Stub = opts.Prefix + "-stub"
	}
	if opts.Cleanup != nil {
		opts.Cleanup.Add("remove node "+n.Name, n.Close)
	}
	if err := n.setup(ctx, opts, stubCIDR); err != nil {
		return nil, errors.Join(err, n.Close())
	}
	return n, nil
}

func (n *Node) setup(ctx context.Context, opts Options, stubCIDR string) error {
	if err := n.addNetns(ctx, n.Name); err != nil {
		return err
	}
	if n.Stub != "" {
		if err := n.addNetns(ctx, n.Stub); err != nil {
			return err
		}
		for _, args := range [][]string{
			{"-n", n.Name, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink1", "netns", n.Stub},
			{"-n", n.Name, "addr", "add", opts.UplinkCIDR, "dev", "uplink0"},
			{"-n", n.Name, "link", "set", "uplink0", "up"},
			{"-n", n.Stub, "addr", "add", stubCIDR, "dev", "uplink1"},
			{"-n", n.Stub, "link", "set", "uplink1", "up"},
			{"-n", n.Name, "route", "add", "default", "via", opts.Gateway},
		} {
			if _, err := Run(ctx, "ip", args...); err != nil {
				return err
			}
		}
	}
	if _, err := n.Exec(ctx, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"); err != nil {
		return err
	}
	var err error
	n.NS, n.Handle, err = n.Open(n.Name)
	return err
}

// Close removes everything the node made (pod namespaces, the forwarder, handles, the
// namespaces), last made first, and returns what failed. Only the first call does.
func (n *Node) Close() error { return n.cl.Run() }

// NewPodNS makes the network namespace <Prefix>-<tag> with lo up and returns its name.
// DeletePodNS deletes it; Close does if it is still there.
func (n *Node) NewPodNS(ctx context.Context, tag string) (string, error) {
	name := n.prefix + "-" + tag
	return name, n.addNetns(ctx, name)
}

// DeletePodNS deletes a network namespace NewPodNS made, ahead of Close. Deleting one
// already deleted does nothing.
func (n *Node) DeletePodNS(name string) error {
	n.mu.Lock()
	live := n.netns[name]
	delete(n.netns, name)
	n.mu.Unlock()
	if !live {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), teardownTimeout)
	defer cancel()
	_, err := Run(ctx, "ip", "netns", "del", name)
	return err
}

// addNetns makes a network namespace with lo up, deleted by Close.
func (n *Node) addNetns(ctx context.Context, name string) error {
	if _, err := Run(ctx, "ip", "netns", "add", name); err != nil {
		return err
	}
	n.mu.Lock()
	n.netns[name] = true
	n.mu.Unlock()
	n.cl.Add("delete network namespace "+name, func() error { return n.DeletePodNS(name) })
	_, err := Run(ctx, "ip", "-n", name, "link", "set", "lo", "up")
	return err
}

// Open returns a handle of the named network namespace and a netlink handle inside it;
// Close closes both.
func (n *Node) Open(name string) (netns.NsHandle, *netlink.Handle, error) {
	nsh, err := netns.GetFromPath(NSPath(name))
	if err != nil {
		return -1, nil, err
	}
	n.cl.Add("close the handle of "+name, nsh.Close)
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return -1, nil, err
	}
	n.cl.Add("close the netlink handle in "+name, func() error { h.Close(); return nil })
	return nsh, h, nil
}

// Command is name run inside the node namespace with `ip netns exec`.
func (n *Node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Exec runs name inside the node namespace and returns its combined output; an error
// carries the output.
func (n *Node) Exec(ctx context.Context, name string, args ...string) (string, error) {
	return Run(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// IP runs `ip -n <node> args...`.
func (n *Node) IP(ctx context.Context, args ...string) (string, error) {
	return Run(ctx, "ip", append([]string{"-n", n.Name}, args...)...)
}

// Do runs fn on a thread inside the node namespace (for sockets made there).
func (n *Node) Do(fn func() error) error {
	return ns.WithNetNSPath(NSPath(n.Name), func(ns.NetNS) error { return fn() })
}
