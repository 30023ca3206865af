package agent

import (
	"context"
	"time"

	"github.com/tabbynet/tabby/ipam"
	"go.uber.org/zap"
)

// Block GC cadence: how often the agent looks for its empty blocks, and how long one
// must stay empty before it goes back to its pool.
const (
	blockGCEvery = time.Minute
	blockGCGrace = ipam.DefaultEmptyBlockGrace
)

// blockReleaser is what the block GC needs of the allocator.
type blockReleaser interface {
	ReleaseEmptyBlocks(ctx context.Context, node string, grace time.Duration) (int, error)
}

// releaseEmptyBlocks returns this node's blocks that stayed empty for grace to their
// pools, every period, until ctx ends. A pass that fails is logged and tried again at
// the next period: IPAM writes are compare-and-swap, so a pass is safe to repeat.
func releaseEmptyBlocks(ctx context.Context, r blockReleaser, node string, every, grace time.Duration, log *zap.Logger) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, every)
		n, err := r.ReleaseEmptyBlocks(cctx, node, grace)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("release empty blocks", zap.Error(err))
		case n > 0:
			log.Info("released empty blocks to their pools", zap.Int("blocks", n))
		}
	}
}
