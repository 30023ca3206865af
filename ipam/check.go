package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	corev1 "k8s.io/api/core/v1"
)

// Kinds of problem Check reports.
const (
	// ProblemLeaked: an allocation whose owner (pod, VM endpoint) no longer exists.
	ProblemLeaked = "leaked-allocation"
	// ProblemOutsidePool: an allocation in a block no IPPool contains.
	ProblemOutsidePool = "outside-pool"
	// ProblemMissingNode: a block or affinity naming a node that does not exist.
	ProblemMissingNode = "missing-node"
	// ProblemMissingHandle: an allocation whose IPAMHandle does not exist.
	ProblemMissingHandle = "missing-handle"
	// ProblemHandleCount: an IPAMHandle whose counts differ from the blocks.
	ProblemHandleCount = "handle-count"
	// ProblemStaleAffinity: a BlockAffinity whose block is gone or belongs to another node.
	ProblemStaleAffinity = "stale-affinity"
)

// Problem is one inconsistency.
type Problem struct {
	Kind   string `json:"kind"`
	IP     string `json:"ip,omitempty"`
	Block  string `json:"block,omitempty"`
	Node   string `json:"node,omitempty"`
	Handle string `json:"handle,omitempty"`
	// Object names the affinity or handle object concerned, when there is one.
	Object string `json:"object,omitempty"`
	Detail string `json:"detail"`
	// Since is when the allocation was made (from its attributes).
	Since string `json:"since,omitempty"`
}

// id identifies a problem across observations: the same problem about the same
// allocation (handle and time included, so a reused address is a new problem).
func (p Problem) id() string {
	return p.Kind + "|" + p.IP + "|" + p.Block + "|" + p.Node + "|" + p.Handle + "|" + p.Object + "|" + p.Since
}

// Report is what Check found: problems seen in two observations Interval apart.
type Report struct {
	Time     time.Time `json:"time"`
	Interval string    `json:"interval"`
	Blocks   int       `json:"blocks"`
	InUse    int       `json:"inUse"`
	Handles  int       `json:"handles"`
	Problems []Problem `json:"problems"`
}

// CheckOptions tune Check.
type CheckOptions struct {
	// Interval between the two observations (default 5s). Only what both see is reported,
	// so an allocation caught half-way through a CNI ADD is not called leaked.
	Interval time.Duration
}

// Check looks for leaked allocations, allocations outside pools, blocks and affinities
// naming missing nodes, and handle inconsistencies. It observes twice, Interval apart,
// and reports what it saw both times.
func (a *Allocator) Check(ctx context.Context, opts CheckOptions) (Report, error) {
	if opts.Interval == 0 {
		opts.Interval = 5 * time.Second
	}
	first, _, err := a.observe(ctx)
	if err != nil {
		return Report{}, err
	}
	if len(first) > 0 {
		t := time.NewTimer(opts.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return Report{}, ctx.Err()
		case <-t.C:
		}
	}
	second, rep, err := a.observe(ctx)
	if err != nil {
		return Report{}, err
	}
	seen := map[string]bool{}
	for _, p := range first {
		seen[p.id()] = true
	}
	rep.Problems = []Problem{}
	for _, p := range second {
		if seen[p.id()] {
			rep.Problems = append(rep.Problems, p)
		}
	}
	rep.Time = a.now().UTC()
	rep.Interval = opts.Interval.String()
	return rep, nil
}

// world is one consistent-enough read of everything Check compares.
type world struct {
	pools    []pool
	blocks   []*v1.IPAMBlock
	handles  map[string]*v1.IPAMHandle // by handle ID
	affs     []*v1.BlockAffinity
	nodes    map[string]bool
	pods     map[string]bool // namespace/name
	weps     map[netip.Addr]bool
	wepsRead bool
}

func (a *Allocator) read(ctx context.Context) (*world, error) {
	w := &world{handles: map[string]*v1.IPAMHandle{}, nodes: map[string]bool{}, pods: map[string]bool{}, weps: map[netip.Addr]bool{}}
	var err error
	if w.pools, err = a.allPools(ctx, false); err != nil {
		return nil, err
	}
	if w.blocks, err = datastore.List[*v1.IPAMBlock](ctx, a.s, datastore.ListOptions{}); err != nil {
		return nil, fmt.Errorf("list blocks: %w", err)
	}
	hs, err := datastore.List[*v1.IPAMHandle](ctx, a.s, datastore.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list handles: %w", err)
	}
	for _, h := range hs {
		w.handles[h.Spec.HandleID] = h
	}
	if w.affs, err = datastore.List[*v1.BlockAffinity](ctx, a.s, datastore.ListOptions{}); err != nil {
		return nil, fmt.Errorf("list affinities: %w", err)
	}
	tn, err := datastore.List[*v1.Node](ctx, a.s, datastore.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	for _, n := range tn {
		w.nodes[n.Name] = true
	}
	kn, err := datastore.List[*corev1.Node](ctx, a.s, datastore.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list kubernetes nodes: %w", err)
	}
	for _, n := range kn {
		w.nodes[n.Name] = true
	}
	pods, err := datastore.List[*corev1.Pod](ctx, a.s, datastore.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	for _, p := range pods {
		w.pods[p.Namespace+"/"+p.Name] = true
	}
	weps, err := datastore.List[*v1.WorkloadEndpoint](ctx, a.s, datastore.ListOptions{})
	if err != nil && !errors.Is(err, datastore.ErrNotFound) {
		return nil, fmt.Errorf("list workload endpoints: %w", err)
	}
	for _, e := range weps {
		for _, n := range e.Spec.IPNetworks {
			if p, err := netip.ParsePrefix(n); err == nil {
				w.weps[p.Addr()] = true
			} else if ad, err := netip.ParseAddr(n); err == nil {
				w.weps[ad] = true
			}
		}
	}
	return w, nil
}

// observe returns every problem visible now, and the counts for the report.
func (a *Allocator) observe(ctx context.Context) ([]Problem, Report, error) {
	w, err := a.read(ctx)
	if err != nil {
		return nil, Report{}, err
	}
	var out []Problem
	rep := Report{Blocks: len(w.blocks), Handles: len(w.handles)}
	counted := map[string]map[string]int{} // handle -> block -> count
	blockNames := map[string]string{}      // block name -> affine node
	for _, b := range w.blocks {
		cidr, err := blockCIDR(b)
		if err != nil {
			continue
		}
		node := affineNode(b)
		blockNames[b.Name] = node
		if node != "" && !w.nodes[node] {
			out = append(out, Problem{Kind: ProblemMissingNode, Block: cidr.String(), Node: node,
				Detail: fmt.Sprintf("block %s is affine to node %s, which does not exist", cidr, node)})
		}
		_, inPool := poolContaining(w.pools, cidr.Addr())
		for ord := range b.Spec.Allocations {
			if isFree(b, ord) {
				continue
			}
			rep.InUse++
			ip := addrAt(cidr, ord)
			h, attrs := handleAt(b, ord)
			base := Problem{IP: ip.String(), Block: cidr.String(), Node: attrs[AttrNode], Handle: h, Since: attrs[AttrTimestamp]}
			if counted[h] == nil {
				counted[h] = map[string]int{}
			}
			counted[h][cidr.String()]++
			if !inPool {
				p := base
				p.Kind, p.Detail = ProblemOutsidePool, fmt.Sprintf("%s is allocated in block %s, which no IPPool contains", ip, cidr)
				out = append(out, p)
			}
			if _, ok := w.handles[h]; !ok {
				p := base
				p.Kind, p.Detail = ProblemMissingHandle, fmt.Sprintf("%s is held by handle %q, which has no IPAMHandle", ip, h)
				out = append(out, p)
			}
			if live, why := w.owned(ip, attrs); !live {
				p := base
				p.Kind, p.Detail = ProblemLeaked, fmt.Sprintf("%s is held by %s: %s", ip, describeOwner(h, attrs), why)
				out = append(out, p)
			}
		}
	}
	for id, h := range w.handles {
		for blk, n := range h.Spec.Block {
			if counted[id][blk] != n {
				out = append(out, Problem{Kind: ProblemHandleCount, Handle: id, Block: blk, Object: h.Name,
					Detail: fmt.Sprintf("handle %q counts %d addresses in %s, the block has %d", id, n, blk, counted[id][blk])})
			}
		}
	}
	for _, af := range w.affs {
		cidr, err := netip.ParsePrefix(af.Spec.CIDR)
		if err != nil {
			continue
		}
		owner, exists := blockNames[BlockName(cidr)]
		switch {
		case !w.nodes[af.Spec.Node]:
			out = append(out, Problem{Kind: ProblemMissingNode, Block: cidr.String(), Node: af.Spec.Node, Object: af.Name,
				Detail: fmt.Sprintf("affinity %s names node %s, which does not exist", af.Name, af.Spec.Node)})
		case !exists || owner != af.Spec.Node:
			out = append(out, Problem{Kind: ProblemStaleAffinity, Block: cidr.String(), Node: af.Spec.Node, Object: af.Name,
				Detail: fmt.Sprintf("affinity %s (%s) has no block of node %s", af.Name, af.Spec.State, af.Spec.Node)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id() < out[j].id() })
	return out, rep, nil
}

// owned says whether an allocation's owner still exists.
func (w *world) owned(ip netip.Addr, attrs map[string]string) (bool, string) {
	if w.weps[ip] {
		return true, ""
	}
	if attrs[AttrPod] != "" {
		if w.pods[attrs[AttrNamespace]+"/"+attrs[AttrPod]] {
			return true, ""
		}
		return false, "the pod and its workload endpoint are gone"
	}
	return false, "no workload endpoint has this address"
}

// ReleaseProblems releases what a report found leaked or stale, after checking each
// is still exactly as reported: leaked and outside-pool allocations (only while the
// same handle holds them), and stale or node-less affinities. It returns what it
// released, one line each.
func (a *Allocator) ReleaseProblems(ctx context.Context, probs []Problem) ([]string, error) {
	var done []string
	for _, p := range probs {
		switch p.Kind {
		case ProblemLeaked, ProblemOutsidePool, ProblemMissingHandle:
			ip, err := netip.ParseAddr(p.IP)
			if err != nil {
				continue
			}
			err = a.ReleaseIPHeldBy(ctx, ip, p.Handle, p.Since)
			if errors.Is(err, ErrNotAllocated) {
				continue // changed since the report: not ours to touch
			}
			if err != nil {
				return done, err
			}
			done = append(done, fmt.Sprintf("released %s (%s)", ip, p.Handle))
		case ProblemStaleAffinity, ProblemMissingNode:
			if p.Object == "" {
				continue
			}
			still, err := a.affinityStillBad(ctx, p)
			if err != nil {
				return done, err
			}
			if !still {
				continue
			}
			err = a.s.Delete(ctx, datastore.KindBlockAffinity, "", p.Object, datastore.DeleteOptions{})
			if err != nil && !errors.Is(err, datastore.ErrNotFound) {
				return done, fmt.Errorf("delete affinity %s: %w", p.Object, err)
			}
			done = append(done, "deleted affinity "+p.Object)
		}
	}
	return done, nil
}

// affinityStillBad re-checks an affinity problem right before acting on it: the node is
// still missing, or the block still does not belong to the affinity's node.
func (a *Allocator) affinityStillBad(ctx context.Context, p Problem) (bool, error) {
	af, err := datastore.Get[*v1.BlockAffinity](ctx, a.s, "", p.Object)
	if errors.Is(err, datastore.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read affinity %s: %w", p.Object, err)
	}
	if p.Kind == ProblemMissingNode {
		labels, err := a.nodeExists(ctx, af.Spec.Node)
		return !labels, err
	}
	cidr, err := netip.ParsePrefix(af.Spec.CIDR)
	if err != nil {
		return true, nil
	}
	b, err := datastore.Get[*v1.IPAMBlock](ctx, a.s, "", BlockName(cidr))
	if errors.Is(err, datastore.ErrNotFound) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("read block %s: %w", cidr, err)
	}
	return affineNode(b) != af.Spec.Node, nil
}

// nodeExists says whether a Tabby or Kubernetes Node of that name exists.
func (a *Allocator) nodeExists(ctx context.Context, node string) (bool, error) {
	for _, k := range []datastore.Kind{datastore.KindNode, datastore.KindK8sNode} {
		_, err := a.s.Get(ctx, k, "", node)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, datastore.ErrNotFound) {
			return false, fmt.Errorf("read node %s: %w", node, err)
		}
	}
	return false, nil
}
