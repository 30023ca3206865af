package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/tabbynet/tabby/test/fabric"
	"github.com/vishvananda/netlink"
)

// namePrefix starts every name the benchmark gives a namespace, file or directory.
const namePrefix = "tbench-"

// learnedProto is the route protocol of the routes felix writes for BGP-learned prefixes.
const learnedProto = netlink.RouteProtocol(117)

// arrivals records, for one node, when each prefix first showed up in its kernel as a
// protocol-117 route: a netlink route subscription inside the node namespace, stamped
// by a goroutine that does nothing else.
type arrivals struct {
	node string

	mu     sync.Mutex
	at     map[netip.Prefix]time.Time
	notify chan struct{} // signalled (non-blocking) on every new prefix
	lost   error         // the subscription failed: events may be missing
}

// subscribe starts recording the new protocol-117 routes in n's namespace (existing
// ones are not listed) until ctx ends.
func subscribe(ctx context.Context, n *fabric.Node) (*arrivals, error) {
	a := &arrivals{node: n.Name, at: map[netip.Prefix]time.Time{}, notify: make(chan struct{}, 1)}
	ch := make(chan netlink.RouteUpdate, 4096)
	done := make(chan struct{})
	go func() { <-ctx.Done(); close(done) }()
	err := netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
		Namespace:         &n.Net.NS,
		ListExisting:      false,
		ReceiveBufferSize: 4 << 20,
		ErrorCallback: func(err error) {
			if ctx.Err() != nil { // closing the subscription at the end reports an error too
				return
			}
			a.mu.Lock()
			a.lost = fmt.Errorf("route subscription in %s: %w", n.Name, err)
			a.mu.Unlock()
			a.signal()
		},
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe to routes in %s: %w", n.Name, err)
	}
	go func() {
		for u := range ch {
			now := time.Now()
			if u.Type != syscall.RTM_NEWROUTE || u.Protocol != learnedProto || u.Dst == nil {
				continue
			}
			addr, ok := netip.AddrFromSlice(u.Dst.IP)
			if !ok {
				continue
			}
			bits, _ := u.Dst.Mask.Size()
			pfx := netip.PrefixFrom(addr.Unmap(), bits)
			a.mu.Lock()
			_, seen := a.at[pfx]
			if !seen {
				a.at[pfx] = now
			}
			a.mu.Unlock()
			if !seen {
				a.signal()
			}
		}
	}()
	return a, nil
}

func (a *arrivals) signal() {
	select {
	case a.notify <- struct{}{}:
	default:
	}
}

// wait returns when pfx arrived, or fails after timeout.
func (a *arrivals) wait(ctx context.Context, pfx netip.Prefix, timeout time.Duration) (time.Time, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		a.mu.Lock()
		at, ok := a.at[pfx]
		lost := a.lost
		a.mu.Unlock()
		switch {
		case ok:
			return at, nil
		case lost != nil:
			return time.Time{}, lost
		}
		select {
		case <-a.notify:
		case <-deadline.C:
			return time.Time{}, fmt.Errorf("no protocol-117 route to %s in %s within %v", pfx, a.node, timeout)
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		}
	}
}

// keepLogs copies each node's tabby-node and tabby-cni logs into dir as
// <node>-tabby-node.log and <node>-cni.log.
func keepLogs(dir string, nodes []*fabric.Node) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	var errs []error
	for _, n := range nodes {
		for src, dst := range map[string]string{n.Log: n.Name + "-tabby-node.log",
			filepath.Join(n.Dir, "cni.log"): n.Name + "-cni.log"} {
			if err := copyFile(src, filepath.Join(dir, dst)); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}
