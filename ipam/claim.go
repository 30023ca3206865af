package ipam

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var errNoFreeBlock = errors.New("no free block")

// claimFreeBlock claims the first unclaimed block of the candidate pools for node,
// walking each pool from the node's own offset. own names the node's blocks: they are
// skipped without asking. The first candidate found taken by someone else makes it
// list every block (from the watch cache) and skip those too, so a claim costs one
// list of the cluster's blocks only where nodes' ranges meet, not on every claim.
func (a *Allocator) claimFreeBlock(ctx context.Context, node string, pools []pool, cfg config, own map[string]bool) (*v1.IPAMBlock, pool, error) {
	taken := maps.Clone(own)
	if taken == nil {
		taken = map[string]bool{}
	}
	listed := false
	listAll := func() error {
		listed = true
		// A stale list only costs an AlreadyExists on create, which is atomic.
		blocks, err := datastore.List[*v1.IPAMBlock](ctx, a.s, datastore.ListOptions{AllowStale: true})
		if err != nil {
			return fmt.Errorf("list blocks: %w", err)
		}
		for _, b := range blocks {
			taken[b.Name] = true
		}
		return nil
	}
	for _, p := range pools {
		bits := p.obj.Spec.BlockSize - p.cidr.Bits()
		if bits > 20 {
			bits = 20 // never walk more than a million candidates
		}
		n := 1 << bits
		off := startOffset(node, n)
		for i := 0; i < n; i++ {
			cidr := nthBlock(p.cidr, p.obj.Spec.BlockSize, (off+i)%n)
			if taken[BlockName(cidr)] {
				continue
			}
			b, err := a.claim(ctx, node, cidr, cfg.strictAffinity)
			if errors.Is(err, datastore.ErrAlreadyExists) {
				taken[BlockName(cidr)] = true
				if !listed {
					if err := listAll(); err != nil {
						return nil, pool{}, err
					}
				}
				continue
			}
			if err != nil {
				return nil, pool{}, err
			}
			return b, p, nil
		}
	}
	return nil, pool{}, errNoFreeBlock
}

// nthBlock is the i-th block of size bits in a pool.
func nthBlock(poolCIDR netip.Prefix, bits, i int) netip.Prefix {
	size := 1 << (poolCIDR.Addr().BitLen() - bits)
	return netip.PrefixFrom(addrAt(poolCIDR, i*size), bits)
}

// claim makes node the block's affine node: a pending BlockAffinity, then the block
// itself (only one writer can create it), then the affinity confirmed. It returns
// ErrAlreadyExists when another node holds the block.
func (a *Allocator) claim(ctx context.Context, node string, cidr netip.Prefix, strict bool) (*v1.IPAMBlock, error) {
	aff := &v1.BlockAffinity{
		ObjectMeta: metav1.ObjectMeta{Name: AffinityName(node, cidr), Labels: map[string]string{LabelNode: node}},
		Spec:       v1.BlockAffinitySpec{State: v1.BlockAffinityPending, Node: node, CIDR: cidr.String()},
	}
	created, err := datastore.Create(ctx, a.s, aff)
	switch {
	case errors.Is(err, datastore.ErrAlreadyExists):
		// A claim of ours that did not finish, or one another allocator for this node
		// is making right now: take it up.
		created, err = datastore.Get[*v1.BlockAffinity](ctx, a.s, "", aff.Name)
		if errors.Is(err, datastore.ErrNotFound) {
			// That other claim was given up in between (its block went to another
			// node): so is this candidate.
			return nil, fmt.Errorf("claim %s: affinity dropped by a concurrent claim: %w", cidr, datastore.ErrAlreadyExists)
		}
		if err != nil {
			return nil, fmt.Errorf("read own affinity %s: %w", aff.Name, err)
		}
	case err != nil:
		return nil, fmt.Errorf("claim %s for %s: %w", cidr, node, err)
	}
	block, err := datastore.Create(ctx, a.s, newBlock(cidr, node, strict, a.now()))
	if errors.Is(err, datastore.ErrAlreadyExists) {
		existing, gerr := datastore.Get[*v1.IPAMBlock](ctx, a.s, "", BlockName(cidr))
		if gerr == nil && affineNode(existing) == node {
			block, err = existing, nil // our own earlier claim
		} else {
			a.dropAffinity(ctx, created)
			return nil, fmt.Errorf("claim %s: %w", cidr, datastore.ErrAlreadyExists)
		}
	}
	if err != nil {
		a.dropAffinity(ctx, created)
		return nil, fmt.Errorf("create block %s: %w", cidr, err)
	}
	if created.Spec.State != v1.BlockAffinityConfirmed {
		created.Spec.State = v1.BlockAffinityConfirmed
		if _, err := datastore.Update(ctx, a.s, created); err != nil {
			// The block is ours either way; a later check confirms the affinity.
			a.log.Sugar().Warnw("confirm block affinity", "affinity", created.Name, "error", err)
		}
	}
	a.log.Sugar().Infow("claimed block", "block", cidr.String(), "node", node)
	return block, nil
}

func (a *Allocator) dropAffinity(ctx context.Context, aff *v1.BlockAffinity) {
	err := a.s.Delete(context.WithoutCancel(ctx), datastore.KindBlockAffinity, "", aff.Name, datastore.DeleteOptions{})
	if err != nil && !errors.Is(err, datastore.ErrNotFound) {
		a.log.Sugar().Warnw("drop pending affinity", "affinity", aff.Name, "error", err)
	}
}
