package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
)

// assignStatic allocates exactly req.IP.
func (a *Allocator) assignStatic(ctx context.Context, req Request, set *settings) (Allocation, error) {
	ip := req.IP
	all := set.pools
	p, ok := poolContaining(all, ip)
	if !ok {
		return Allocation{}, fmt.Errorf("%w: %s is outside every IPPool", ErrNotInPool, ip)
	}
	if p.obj.Spec.Disabled {
		return Allocation{}, fmt.Errorf("%w: %s is in IPPool %q, which is disabled", ErrNotInPool, ip, p.name())
	}
	if len(req.Pools) > 0 && !contains(req.Pools, p.name()) && !contains(req.Pools, p.cidr.String()) {
		return Allocation{}, fmt.Errorf("%w: %s is in IPPool %q, not in the requested pools %v", ErrNotInPool, ip, p.name(), req.Pools)
	}
	if set.reserved != nil && set.reserved(ip) {
		return Allocation{}, fmt.Errorf("%w: %s is reserved (IPReservations %v)", ErrNotInPool, ip, set.resNames)
	}
	cfg := set.cfg
	cidr := p.blockOf(ip)
	ord := ordinalOf(cidr, ip)
	for attempt := 0; attempt < a.retries; attempt++ {
		b, err := datastore.Get[*v1.IPAMBlock](ctx, a.s, "", BlockName(cidr))
		if errors.Is(err, datastore.ErrNotFound) {
			b, err = a.claim(ctx, req.Node, cidr, cfg.strictAffinity)
			if errors.Is(err, datastore.ErrAlreadyExists) {
				continue
			}
		}
		if err != nil {
			return Allocation{}, err
		}
		if !isFree(b, ord) {
			h, attrs := handleAt(b, ord)
			if h == req.HandleID {
				return Allocation{IP: ip, Block: cidr, Pool: p.name(), Borrowed: affineNode(b) != req.Node}, nil
			}
			return Allocation{}, fmt.Errorf("%w: %s is held by %s", ErrAddressInUse, ip, describeOwner(h, attrs))
		}
		alloc, err := a.commit(ctx, req, p, b, cidr, ord, affineNode(b) != req.Node)
		if errors.Is(err, datastore.ErrConflict) {
			continue
		}
		return alloc, err
	}
	return Allocation{}, fmt.Errorf("assign %s: gave up after %d lost races", ip, a.retries)
}

// describeOwner says who holds an allocation, for error messages.
func describeOwner(handle string, attrs map[string]string) string {
	switch {
	case attrs[AttrPod] != "":
		return fmt.Sprintf("pod %s/%s (handle %s)", attrs[AttrNamespace], attrs[AttrPod], handle)
	case attrs[AttrDomain] != "":
		return fmt.Sprintf("VM %s (handle %s)", attrs[AttrDomain], handle)
	case handle != "":
		return "handle " + handle
	}
	return "an allocation without a handle"
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// ReleaseIP frees one address, whoever holds it.
func (a *Allocator) ReleaseIP(ctx context.Context, ip netip.Addr) error {
	return a.releaseIP(ctx, ip, nil)
}

// ReleaseIPHeldBy frees ip only while handleID still holds it (and, when since is
// not empty, only the allocation made at that time): a tool acting on an old report
// never frees an address that has since gone to someone else.
func (a *Allocator) ReleaseIPHeldBy(ctx context.Context, ip netip.Addr, handleID, since string) error {
	return a.releaseIP(ctx, ip, func(h string, attrs map[string]string) bool {
		return h == handleID && (since == "" || attrs[AttrTimestamp] == since)
	})
}

func (a *Allocator) releaseIP(ctx context.Context, ip netip.Addr, holds func(string, map[string]string) bool) error {
	all, err := a.allPools(ctx, false)
	if err != nil {
		return err
	}
	cidr, b, err := a.blockOf(ctx, all, ip)
	if err != nil {
		return err
	}
	ord := ordinalOf(cidr, ip)
	if b == nil || isFree(b, ord) {
		return fmt.Errorf("%w: %s", ErrNotAllocated, ip)
	}
	handle, attrs := handleAt(b, ord)
	if holds != nil && !holds(handle, attrs) {
		return fmt.Errorf("%w: %s is now held by %s", ErrNotAllocated, ip, describeOwner(handle, attrs))
	}
	stamp := attrs[AttrTimestamp]
	got, err := a.releaseInBlock(ctx, cidr, func(nb *v1.IPAMBlock) []int {
		h, at := handleAt(nb, ord)
		if isFree(nb, ord) || h != handle || at[AttrTimestamp] != stamp {
			return nil // changed under us: the compare-and-swap loop re-reads and decides again
		}
		return []int{ord}
	})
	if err != nil {
		return err
	}
	if len(got) == 0 {
		return fmt.Errorf("%w: %s (released or reallocated meanwhile)", ErrNotAllocated, ip)
	}
	if handle != "" {
		return a.adjustHandle(ctx, handle, cidr, -1)
	}
	return nil
}

// blockOf finds the block that holds ip: the block of the pool that contains it, or
// any existing block that contains it (pools can be deleted under allocations).
func (a *Allocator) blockOf(ctx context.Context, all []pool, ip netip.Addr) (netip.Prefix, *v1.IPAMBlock, error) {
	if p, ok := poolContaining(all, ip); ok {
		cidr := p.blockOf(ip)
		b, err := datastore.Get[*v1.IPAMBlock](ctx, a.s, "", BlockName(cidr))
		if err == nil {
			return cidr, b, nil
		}
		if !errors.Is(err, datastore.ErrNotFound) {
			return netip.Prefix{}, nil, fmt.Errorf("read block %s: %w", cidr, err)
		}
	}
	blocks, err := datastore.List[*v1.IPAMBlock](ctx, a.s, datastore.ListOptions{})
	if err != nil {
		return netip.Prefix{}, nil, fmt.Errorf("list blocks: %w", err)
	}
	for _, b := range blocks {
		if cidr, err := blockCIDR(b); err == nil && cidr.Contains(ip) {
			return cidr, b, nil
		}
	}
	return netip.Prefix{}, nil, fmt.Errorf("%w: %s is in no block", ErrNotAllocated, ip)
}
