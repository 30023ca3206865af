package ipam

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"
	"sync"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"
)

// Allocator hands out and releases addresses. It is safe for concurrent use, also by
// many Allocators on many nodes against one datastore.
type Allocator struct {
	s       datastore.Store
	log     *zap.Logger
	now     func() time.Time
	retries int

	ttl   time.Duration
	cache settingsCache

	mu   sync.Mutex
	hint map[string]string // node -> name of the affine block that last had room
}

// New returns an Allocator over s.
func New(s datastore.Store, opts Options) *Allocator {
	a := &Allocator{s: s, log: opts.Logger, now: opts.Now, retries: opts.MaxRetries, hint: map[string]string{}}
	if a.log == nil {
		a.log = zap.NewNop()
	}
	if a.now == nil {
		a.now = time.Now
	}
	if a.retries <= 0 {
		a.retries = 100
	}
	a.ttl = opts.CacheTTL
	if a.ttl == 0 {
		a.ttl = DefaultCacheTTL
	}
	return a
}

// Assign allocates one address for req: the static req.IP if set, else the first free
// address of the node's affine blocks, a newly claimed block, or (without strict
// affinity) a borrowed address from another node's block.
func (a *Allocator) Assign(ctx context.Context, req Request) (Allocation, error) {
	if req.HandleID == "" || req.Node == "" {
		return Allocation{}, fmt.Errorf("assign: a request needs a handle and a node")
	}
	attrs := map[string]string{}
	for k, v := range req.Attrs {
		attrs[k] = v
	}
	attrs[AttrNode] = req.Node
	attrs[AttrTimestamp] = a.now().UTC().Format(time.RFC3339)
	req.Attrs = attrs

	// Settings and the node's labels are independent reads: fetch them together.
	var set *settings
	var err error
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() (err error) { set, err = a.settings(gctx); return err })
	g.Go(func() error { _, err := a.cachedNodeLabels(gctx, req.Node); return err })
	if err = g.Wait(); err != nil {
		return Allocation{}, err
	}
	if req.IP.IsValid() {
		if _, ok := poolContaining(set.pools, req.IP); !ok {
			if set, err = a.refresh(ctx); err != nil { // a pool created a moment ago?
				return Allocation{}, err
			}
		}
		return a.assignStatic(ctx, req, set)
	}
	pools, err := a.candidatePools(ctx, req, set.pools)
	if errors.Is(err, ErrNoPool) {
		// The cached view may predate a pool created a moment ago: look once more,
		// consistently, before failing.
		if set, err = a.refresh(ctx); err != nil {
			return Allocation{}, err
		}
		pools, err = a.candidatePools(ctx, req, set.pools)
	}
	if err != nil {
		return Allocation{}, err
	}
	for attempt := 0; attempt < a.retries; attempt++ {
		if alloc, ok, err := a.tryHint(ctx, req, pools, set.reserved); ok || (err != nil && !isRace(err)) {
			return alloc, err
		}
		alloc, err := a.tryAssign(ctx, req, pools, set.cfg, set.reserved)
		if isRace(err) {
			continue // lost a race: look again
		}
		return alloc, err
	}
	return Allocation{}, fmt.Errorf("assign for %s: gave up after %d lost races", req.HandleID, a.retries)
}

func isRace(err error) bool {
	return errors.Is(err, datastore.ErrConflict) || errors.Is(err, datastore.ErrAlreadyExists)
}

// tryHint is the fast path: the node's block that last had room, read by name. ok is
// false when there is no hint or the block is full (the caller then looks further).
func (a *Allocator) tryHint(ctx context.Context, req Request, pools []pool, reserved func(netip.Addr) bool) (Allocation, bool, error) {
	a.mu.Lock()
	name := a.hint[req.Node]
	a.mu.Unlock()
	if name == "" {
		return Allocation{}, false, nil
	}
	b, err := datastore.Get[*v1.IPAMBlock](ctx, a.s, "", name)
	if err != nil {
		return Allocation{}, false, nil
	}
	cidr, err := blockCIDR(b)
	if err != nil || affineNode(b) != req.Node {
		return Allocation{}, false, nil
	}
	p, ok := poolOfBlock(pools, cidr)
	if !ok {
		return Allocation{}, false, nil
	}
	ord := freeOrdinal(b, cidr, reserved)
	if ord < 0 {
		a.mu.Lock()
		if a.hint[req.Node] == name {
			delete(a.hint, req.Node)
		}
		a.mu.Unlock()
		return Allocation{}, false, nil
	}
	alloc, err := a.commit(ctx, req, p, b, cidr, ord, false)
	return alloc, err == nil, err
}

func (a *Allocator) tryAssign(ctx context.Context, req Request, pools []pool, cfg config, reserved func(netip.Addr) bool) (Allocation, error) {
	// 1. The node's own blocks.
	affine, own, err := a.affineBlocks(ctx, req.Node, pools)
	if err != nil {
		return Allocation{}, err
	}
	for _, b := range affine {
		cidr, err := blockCIDR(b.block)
		if err != nil {
			continue
		}
		if ord := freeOrdinal(b.block, cidr, reserved); ord >= 0 {
			return a.commit(ctx, req, b.pool, b.block, cidr, ord, false)
		}
	}
	// 2. A new block.
	if cfg.autoAllocate && (cfg.maxBlocksPerHost == 0 || len(affine) < cfg.maxBlocksPerHost) {
		b, p, err := a.claimFreeBlock(ctx, req.Node, pools, cfg, own)
		if err == nil {
			cidr, _ := blockCIDR(b)
			if ord := freeOrdinal(b, cidr, reserved); ord >= 0 {
				return a.commit(ctx, req, p, b, cidr, ord, false)
			}
			// Entirely reserved: the next attempt sees it as affine and full.
			return Allocation{}, datastore.ErrConflict
		}
		if !errors.Is(err, errNoFreeBlock) {
			return Allocation{}, err
		}
	}
	// 3. Borrow.
	if cfg.strictAffinity {
		return Allocation{}, fmt.Errorf("%w: node %s: its %d blocks are full, no free block is left in pools %s, and strictAffinity forbids borrowing",
			ErrNoFreeAddress, req.Node, len(affine), poolNames(pools))
	}
	// Stale reads are safe here: every write is CAS on the block, so a stale view costs
	// a retry, never a duplicate.
	blocks, err := datastore.List[*v1.IPAMBlock](ctx, a.s, datastore.ListOptions{AllowStale: true})
	if err != nil {
		return Allocation{}, fmt.Errorf("list blocks to borrow from: %w", err)
	}
	for _, b := range blocks {
		if affineNode(b) == req.Node {
			continue
		}
		cidr, err := blockCIDR(b)
		if err != nil {
			continue
		}
		p, ok := poolOfBlock(pools, cidr)
		if !ok {
			continue
		}
		if ord := freeOrdinal(b, cidr, reserved); ord >= 0 {
			return a.commit(ctx, req, p, b, cidr, ord, true)
		}
	}
	why := "no free block is left"
	if !cfg.autoAllocate {
		why = "autoAllocateBlocks is off"
	} else if cfg.maxBlocksPerHost > 0 && len(affine) >= cfg.maxBlocksPerHost {
		why = fmt.Sprintf("maxBlocksPerHost %d is reached", cfg.maxBlocksPerHost)
	}
	return Allocation{}, fmt.Errorf("%w: node %s: pools %s are full (%s, and no block has an address to borrow)",
		ErrNoFreeAddress, req.Node, poolNames(pools), why)
}

// commit records the allocation of ordinal ord: handle first, then the block (CAS); a
// lost block race undoes the handle count and returns ErrConflict.
func (a *Allocator) commit(ctx context.Context, req Request, p pool, b *v1.IPAMBlock, cidr netip.Prefix, ord int, borrowed bool) (Allocation, error) {
	if err := a.adjustHandle(ctx, req.HandleID, cidr, +1); err != nil {
		return Allocation{}, err
	}
	b = b.DeepCopy()
	takeOrdinal(b, ord, req.HandleID, req.Attrs)
	if _, err := datastore.Update(ctx, a.s, b); err != nil {
		if uerr := a.adjustHandle(context.WithoutCancel(ctx), req.HandleID, cidr, -1); uerr != nil {
			a.log.Warn("undo handle count after a lost block race", zap.String("handle", req.HandleID), zap.Error(uerr))
		}
		return Allocation{}, err
	}
	if !borrowed {
		a.mu.Lock()
		a.hint[req.Node] = b.Name
		a.mu.Unlock()
	}
	ip := addrAt(cidr, ord)
	a.log.Debug("assigned", zap.String("ip", ip.String()), zap.String("handle", req.HandleID), zap.String("node", req.Node), zap.Bool("borrowed", borrowed))
	return Allocation{IP: ip, Block: cidr, Pool: p.name(), Borrowed: borrowed}, nil
}

type affineBlock struct {
	block *v1.IPAMBlock
	pool  pool
}

// affineBlocks lists the node's confirmed blocks in the candidate pools, the one that
// last had room first, and the names of every block labelled with the node.
func (a *Allocator) affineBlocks(ctx context.Context, node string, pools []pool) ([]affineBlock, map[string]bool, error) {
	blocks, err := datastore.List[*v1.IPAMBlock](ctx, a.s, datastore.ListOptions{LabelSelector: LabelNode + "=" + node, AllowStale: true})
	if err != nil {
		return nil, nil, fmt.Errorf("list blocks of node %s: %w", node, err)
	}
	names := make(map[string]bool, len(blocks))
	for _, b := range blocks {
		names[b.Name] = true
	}
	a.mu.Lock()
	hint := a.hint[node]
	a.mu.Unlock()
	var out []affineBlock
	for _, b := range blocks {
		if affineNode(b) != node || b.Spec.Deleted {
			continue
		}
		cidr, err := blockCIDR(b)
		if err != nil {
			continue
		}
		p, ok := poolOfBlock(pools, cidr)
		if !ok {
			continue
		}
		ab := affineBlock{block: b, pool: p}
		if b.Name == hint {
			out = append([]affineBlock{ab}, out...)
		} else {
			out = append(out, ab)
		}
	}
	return out, names, nil
}

func poolOfBlock(pools []pool, cidr netip.Prefix) (pool, bool) {
	for _, p := range pools {
		if p.cidr.Contains(cidr.Addr()) && p.obj.Spec.BlockSize == cidr.Bits() {
			return p, true
		}
	}
	return pool{}, false
}

func poolNames(pools []pool) string {
	names := make([]string, len(pools))
	for i, p := range pools {
		names[i] = fmt.Sprintf("%s (%s)", p.name(), p.cidr)
	}
	return "[" + strings.Join(names, ", ") + "]"
}

// startOffset spreads nodes over a pool so they rarely race for the same block.
func startOffset(node string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New32a()
	h.Write([]byte(node))
	return int(h.Sum32() % uint32(n))
}
