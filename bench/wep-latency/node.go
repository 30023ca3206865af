package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// namePrefix starts every network namespace this benchmark creates.
const namePrefix = "tbwep-"

// cleanup runs teardown steps once, in reverse order.
type cleanup struct {
	mu   sync.Mutex
	fns  []func()
	done bool
}

func (c *cleanup) add(what string, fn func() error) {
	f := func() {
		if err := fn(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: teardown: %s: %v\n", what, err)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		f()
		return
	}
	c.fns = append(c.fns, f)
}

func (c *cleanup) run() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return
	}
	c.done = true
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
}

// newID is the prefix of every name of this run: tbwep-<pid>-<random>. The pid lets a
// later run recognise what a killed run left behind.
func newID() (string, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s%d-%s", namePrefix, os.Getpid(), hex.EncodeToString(b)), nil
}

var staleName = regexp.MustCompile(`^` + namePrefix + `([0-9]+)-[0-9a-f]{6}-`)

// sweepStale removes the network namespaces of earlier runs whose process is gone.
func sweepStale() error {
	entries, err := os.ReadDir("/run/netns")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, e := range entries {
		m := staleName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() || !errors.Is(syscall.Kill(pid, 0), syscall.ESRCH) {
			continue
		}
		step("removing network namespace %s left by a killed run", e.Name())
		if err := runCmd("ip", "netns", "del", e.Name()); err != nil {
			return err
		}
	}
	return nil
}

func runCmd(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// node is the benchmark's node: a network namespace with forwarding on, and a second
// namespace holding the workload ends of the veths.
type node struct {
	name, workloads string
	ns              netns.NsHandle
	h               *netlink.Handle // in the node namespace
	wl              netns.NsHandle
	wlH             *netlink.Handle
}

func nsPath(name string) string { return "/run/netns/" + name }

// newNode creates the namespaces and their handles; cl removes them.
func newNode(id string, cl *cleanup) (*node, error) {
	n := &node{name: id + "-node", workloads: id + "-wl"}
	for _, name := range []string{n.name, n.workloads} {
		if err := runCmd("ip", "netns", "add", name); err != nil {
			return nil, err
		}
		cl.add("delete network namespace "+name, func() error { return runCmd("ip", "netns", "del", name) })
	}
	if err := runCmd("ip", "netns", "exec", n.name, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"); err != nil {
		return nil, err
	}
	var err error
	if n.ns, err = netns.GetFromPath(nsPath(n.name)); err != nil {
		return nil, err
	}
	cl.add("close the node namespace", n.ns.Close)
	if n.h, err = netlink.NewHandleAt(n.ns); err != nil {
		return nil, err
	}
	cl.add("close the node's netlink handle", func() error { n.h.Close(); return nil })
	if n.wl, err = netns.GetFromPath(nsPath(n.workloads)); err != nil {
		return nil, err
	}
	cl.add("close the workload namespace", n.wl.Close)
	if n.wlH, err = netlink.NewHandleAt(n.wl); err != nil {
		return nil, err
	}
	cl.add("close the workload netlink handle", func() error { n.wlH.Close(); return nil })
	for _, h := range []*netlink.Handle{n.h, n.wlH} {
		lo, err := h.LinkByName("lo")
		if err != nil {
			return nil, err
		}
		if err := h.LinkSetUp(lo); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// addVeth makes a veth pair: host in the node namespace (up), peer in the workload
// namespace (up), as the CNI plugin leaves a pod's.
func (n *node) addVeth(host, peer string) error {
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MTU: 1500}, PeerName: peer,
		PeerNamespace: netlink.NsFd(int(n.wl))}
	if err := n.h.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s: %w", host, err)
	}
	l, err := n.h.LinkByName(host)
	if err != nil {
		return err
	}
	if err := n.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", host, err)
	}
	p, err := n.wlH.LinkByName(peer)
	if err != nil {
		return err
	}
	if err := n.wlH.LinkSetUp(p); err != nil {
		return fmt.Errorf("set %s up: %w", peer, err)
	}
	return nil
}

// subscribeRoutes delivers, with the time it was read, every new route with protocol
// proto in the node namespace.
func (n *node) subscribeRoutes(ctx context.Context, proto netlink.RouteProtocol) (<-chan routeEvent, error) {
	ch := make(chan netlink.RouteUpdate, 4096)
	done := make(chan struct{})
	go func() { <-ctx.Done(); close(done) }()
	err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
		Namespace:         &n.ns,
		ReceiveBufferSize: 4 << 20,
		ErrorCallback: func(err error) {
			if ctx.Err() == nil { // closing the subscription at the end reports an error too
				fmt.Fprintf(os.Stderr, "bench: route subscription: %v\n", err)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to routes in %s: %w", n.name, err)
	}
	out := make(chan routeEvent, 4096)
	go func() {
		defer close(out)
		for u := range ch {
			if u.Type != syscall.RTM_NEWROUTE || u.Protocol != proto || u.Dst == nil {
				continue
			}
			out <- routeEvent{dst: u.Dst.String(), at: nowFunc()}
		}
	}()
	return out, nil
}
