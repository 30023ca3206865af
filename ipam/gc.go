package ipam

import (
	"context"
	"errors"
	"fmt"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
)

// DefaultEmptyBlockGrace is how long a block stays empty and affine before it goes back
// to its pool, so a node that churns pods keeps its blocks (and routes) stable.
const DefaultEmptyBlockGrace = 5 * time.Minute

// ReleaseEmptyBlocks returns node's blocks that have been empty for longer than grace
// to their pools: the affinity is marked pendingDeletion, then the block is deleted on
// the condition that it has not changed (so a racing allocation wins and the block
// stays), then the affinity is deleted. A block found empty without a timestamp gets
// one now and is released on a later call. It returns how many blocks went back.
func (a *Allocator) ReleaseEmptyBlocks(ctx context.Context, node string, grace time.Duration) (int, error) {
	blocks, err := datastore.List[*v1.IPAMBlock](ctx, a.s, datastore.ListOptions{LabelSelector: LabelNode + "=" + node})
	if err != nil {
		return 0, fmt.Errorf("list blocks of node %s: %w", node, err)
	}
	released := 0
	now := a.now()
	for _, b := range blocks {
		if affineNode(b) != node || inUse(b) > 0 {
			continue
		}
		since, err := time.Parse(time.RFC3339Nano, b.Annotations[AnnotationEmptySince])
		if err != nil {
			if b.Annotations == nil {
				b.Annotations = map[string]string{}
			}
			b.Annotations[AnnotationEmptySince] = now.UTC().Format(time.RFC3339Nano)
			if _, err := datastore.Update(ctx, a.s, b); err != nil && !errors.Is(err, datastore.ErrConflict) {
				return released, fmt.Errorf("mark block %s empty: %w", b.Name, err)
			}
			continue
		}
		if now.Sub(since) < grace {
			continue
		}
		ok, err := a.releaseBlock(ctx, node, b)
		if err != nil {
			return released, err
		}
		if ok {
			released++
		}
	}
	return released, nil
}

func (a *Allocator) releaseBlock(ctx context.Context, node string, b *v1.IPAMBlock) (bool, error) {
	cidr, err := blockCIDR(b)
	if err != nil {
		return false, err
	}
	affName := AffinityName(node, cidr)
	aff, err := datastore.Get[*v1.BlockAffinity](ctx, a.s, "", affName)
	if err == nil && aff.Spec.State != v1.BlockAffinityPendingDeletion {
		aff.Spec.State = v1.BlockAffinityPendingDeletion
		if aff, err = datastore.Update(ctx, a.s, aff); err != nil {
			return false, fmt.Errorf("mark affinity %s for deletion: %w", affName, err)
		}
	} else if err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return false, fmt.Errorf("read affinity %s: %w", affName, err)
	}
	err = a.s.Delete(ctx, datastore.KindIPAMBlock, "", b.Name, datastore.DeleteOptions{ResourceVersion: b.ResourceVersion})
	if errors.Is(err, datastore.ErrConflict) {
		// Someone allocated meanwhile: keep the block and confirm the affinity again.
		if aff != nil {
			aff.Spec.State = v1.BlockAffinityConfirmed
			if _, uerr := datastore.Update(ctx, a.s, aff); uerr != nil {
				a.log.Sugar().Warnw("re-confirm affinity", "affinity", affName, "error", uerr)
			}
		}
		return false, nil
	}
	if err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return false, fmt.Errorf("delete block %s: %w", b.Name, err)
	}
	if err := a.s.Delete(ctx, datastore.KindBlockAffinity, "", affName, datastore.DeleteOptions{}); err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return true, fmt.Errorf("delete affinity %s: %w", affName, err)
	}
	a.mu.Lock()
	if a.hint[node] == b.Name {
		delete(a.hint, node)
	}
	a.mu.Unlock()
	a.log.Sugar().Infow("released empty block", "block", cidr.String(), "node", node)
	return true, nil
}
