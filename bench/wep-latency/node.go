package main

import (
	"context"
	"fmt"
	"os"
	"syscall"

	"github.com/tabbynet/tabby/test/netnode"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// namePrefix starts every network namespace this benchmark creates.
const namePrefix = "tbwep-"

// node is the benchmark's node: a network namespace with forwarding on (no uplink),
// and a second namespace holding the workload ends of the veths.
type node struct {
	*netnode.Node
	workloads string
	wl        netns.NsHandle
	wlH       *netlink.Handle
}

// newNode creates the namespaces and their handles; cl removes them.
func newNode(ctx context.Context, id string, cl *netnode.Cleanup) (*node, error) {
	nn, err := netnode.New(ctx, netnode.Options{Prefix: id, Cleanup: cl})
	if err != nil {
		return nil, err
	}
	n := &node{Node: nn}
	if n.workloads, err = nn.NewPodNS(ctx, "wl"); err != nil {
		return nil, err
	}
	if n.wl, n.wlH, err = nn.Open(n.workloads); err != nil {
		return nil, err
	}
	return n, nil
}

// addVeth makes a veth pair: host in the node namespace (up), peer in the workload
// namespace (up), as the CNI plugin leaves a pod's.
func (n *node) addVeth(host, peer string) error {
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: host, MTU: 1500}, PeerName: peer,
		PeerNamespace: netlink.NsFd(int(n.wl))}
	if err := n.Handle.LinkAdd(v); err != nil {
		return fmt.Errorf("add veth %s: %w", host, err)
	}
	l, err := n.Handle.LinkByName(host)
	if err != nil {
		return err
	}
	if err := n.Handle.LinkSetUp(l); err != nil {
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
		Namespace:         &n.NS,
		ReceiveBufferSize: 4 << 20,
		ErrorCallback: func(err error) {
			if ctx.Err() == nil { // closing the subscription at the end reports an error too
				fmt.Fprintf(os.Stderr, "bench: route subscription: %v\n", err)
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to routes in %s: %w", n.Name, err)
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
