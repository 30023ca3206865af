package ipam

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
)

// Adopt records node as the holder of every address handleID holds (the allocation's
// node attribute), and returns the addresses it changed. A workload that moved to
// another node with its address (a migrated VM) is then that node's: its BGP speaker
// advertises the /32 (a borrowed address when the block is affine elsewhere), the
// block's node takes the /32 from it, and IPAM's checks and releases follow the new
// node. Allocations already held by node are left alone; each block is updated with
// compare-and-swap, retried.
func (a *Allocator) Adopt(ctx context.Context, handleID, node string) ([]netip.Addr, error) {
	blocks, err := a.blocksOf(ctx, handleID)
	if err != nil {
		return nil, err
	}
	var moved []netip.Addr
	for _, cidr := range blocks {
		ips, err := a.adoptInBlock(ctx, cidr, handleID, node)
		if err != nil {
			return moved, err
		}
		moved = append(moved, ips...)
	}
	sortAddrs(moved)
	return moved, nil
}

func (a *Allocator) adoptInBlock(ctx context.Context, cidr netip.Prefix, handleID, node string) ([]netip.Addr, error) {
	for attempt := 0; attempt < a.retries; attempt++ {
		b, err := datastore.Get[*v1.IPAMBlock](ctx, a.s, "", BlockName(cidr))
		if errors.Is(err, datastore.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read block %s: %w", cidr, err)
		}
		var out []netip.Addr
		for _, o := range ordinalsOfHandle(b, handleID) {
			i := b.Spec.Allocations[o]
			attr := &b.Spec.Attributes[i]
			if attr.Secondary[AttrNode] == node {
				continue
			}
			// Each allocation has its own attributes entry (see releaseOrdinals).
			attr.Secondary = maps.Clone(attr.Secondary)
			if attr.Secondary == nil {
				attr.Secondary = map[string]string{}
			}
			attr.Secondary[AttrNode] = node
			out = append(out, addrAt(cidr, o))
		}
		if len(out) == 0 {
			return nil, nil
		}
		b.Spec.SequenceNumber++
		if _, err := datastore.Update(ctx, a.s, b); errors.Is(err, datastore.ErrConflict) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("update block %s: %w", cidr, err)
		}
		a.log.Sugar().Infow("addresses adopted", "handle", handleID, "node", node, "addresses", len(out))
		return out, nil
	}
	return nil, fmt.Errorf("adopt in block %s: gave up after %d lost races", cidr, a.retries)
}
