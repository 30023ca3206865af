package dataplane

import (
	"context"
	"fmt"
	"time"

	"github.com/tabbynet/tabby/felix/routes"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// eventBuffer is the socket receive buffer asked for each subscription: a burst of our
// own route writes must not overflow it.
const eventBuffer = 4 << 20

// Handlers receive the events of a subscription. They are called from the
// subscription's goroutines and must be quick (queue the event and return).
type Handlers struct {
	// Link gets every link event.
	Link func(netlink.LinkUpdate)
	// Route gets the events of Tabby's routes (main table, Tabby's protocols) only.
	Route func(netlink.RouteUpdate)
	// Lost is called when a subscription broke (events were lost: resync) and again
	// when it was made anew.
	Lost func(error)
}

// Subscribe delivers the link and route events of the network namespace at nsPath ("":
// the caller's) to hs until ctx ends, re-subscribing (and calling Lost) whenever the
// kernel drops a subscription. The error is for a subscription that cannot start.
func Subscribe(ctx context.Context, nsPath string, hs Handlers) error {
	var nsp *netns.NsHandle
	if nsPath != "" {
		ns, err := netns.GetFromPath(nsPath)
		if err != nil {
			return fmt.Errorf("open network namespace %s: %w", nsPath, err)
		}
		nsp = &ns
		go func() { <-ctx.Done(); ns.Close() }()
	}
	link := func(done chan struct{}, errf func(error)) (<-chan netlink.LinkUpdate, error) {
		ch := make(chan netlink.LinkUpdate, 1024)
		o := netlink.LinkSubscribeOptions{Namespace: nsp, ErrorCallback: errf, ReceiveBufferSize: eventBuffer,
			ReceiveBufferForceSize: true}
		if err := netlink.LinkSubscribeWithOptions(ch, done, o); err != nil {
			return nil, fmt.Errorf("subscribe to link events: %w", err)
		}
		return ch, nil
	}
	route := func(done chan struct{}, errf func(error)) (<-chan netlink.RouteUpdate, error) {
		ch := make(chan netlink.RouteUpdate, 4096)
		if err := subscribeRoutes(nsp, ch, done, errf); err != nil {
			return nil, fmt.Errorf("subscribe to route events: %w", err)
		}
		return ch, nil
	}
	if err := follow(ctx, link, func(u netlink.LinkUpdate) {
		if hs.Link != nil {
			hs.Link(u)
		}
	}, hs.Lost); err != nil {
		return err
	}
	return follow(ctx, route, func(u netlink.RouteUpdate) {
		if hs.Route != nil && routes.IsTabbys(u.Route) {
			hs.Route(u)
		}
	}, hs.Lost)
}

// follow subscribes once (an error is returned) and then keeps the subscription alive in
// a goroutine until ctx ends.
func follow[T any](ctx context.Context, sub func(chan struct{}, func(error)) (<-chan T, error), on func(T), lost func(error)) error {
	errs := make(chan error, 1)
	errf := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	done := make(chan struct{})
	ch, err := sub(done, errf)
	if err != nil {
		return err
	}
	go func() {
		backoff := 50 * time.Millisecond
		for {
			ok := pump(ctx, ch, on)
			close(done)
			go drain(ch)
			if !ok {
				return
			}
			var cause error
			select {
			case cause = <-errs:
			default:
				cause = fmt.Errorf("subscription closed")
			}
			if lost != nil {
				lost(cause)
			}
			for {
				done = make(chan struct{})
				if ch, err = sub(done, errf); err == nil {
					break
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(backoff*2, 5*time.Second)
			}
			if lost != nil {
				lost(nil) // subscribed again: the caller resyncs
			}
		}
	}()
	return nil
}

// pump forwards events until the channel closes (true) or ctx ends (false).
func pump[T any](ctx context.Context, ch <-chan T, on func(T)) bool {
	for {
		select {
		case <-ctx.Done():
			return false
		case u, ok := <-ch:
			if !ok {
				return true
			}
			on(u)
		}
	}
}

func drain[T any](ch <-chan T) {
	for range ch {
	}
}
