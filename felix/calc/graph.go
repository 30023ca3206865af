package calc

import (
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"go.uber.org/zap"
)

// RouteKind says what a desired route is for.
type RouteKind uint8

// Route kinds, in order of precedence when two want the same prefix.
const (
	KindLocal     RouteKind = iota + 1 // a local workload's address, out of its interface
	KindBlackhole                      // one of this node's blocks
	KindLearned                        // learned from a BGP peer, via next hops
)

// String is local, blackhole or learned.
func (k RouteKind) String() string {
	switch k {
	case KindLocal:
		return "local"
	case KindBlackhole:
		return "blackhole"
	case KindLearned:
		return "learned"
	}
	return "unknown"
}

// Route is one desired route. Interface is set for KindLocal, NextHops (sorted, no
// duplicates, at least one) for KindLearned.
type Route struct {
	Kind      RouteKind
	Interface string
	NextHops  []netip.Addr
}

// Equal reports whether two routes are the same.
func (r Route) Equal(o Route) bool {
	return r.Kind == o.Kind && r.Interface == o.Interface && slices.Equal(r.NextHops, o.NextHops)
}

// LearnedRoute is a prefix the BGP speaker learned and the next hops to reach it.
type LearnedRoute struct {
	Prefix   netip.Prefix
	NextHops []netip.Addr
}

// Endpoint is what the graph kept of one local WorkloadEndpoint.
type Endpoint struct {
	Namespace, Name, Workload string
	// Created is the object's creation time: of two endpoints claiming one address, the
	// newer gets the route (the other is most likely left over from an earlier sandbox).
	Created time.Time
	// Interface is the host-side interface as the object names it; InterfaceOK is false
	// when that name could not be an interface (then the endpoint gets no routes).
	Interface   string
	InterfaceOK bool
	// IPs are the endpoint's valid addresses, in the object's order, without duplicates.
	IPs []netip.Addr
	// Standby: the interface gets its sysctls (and policy) but none of the routes; a
	// migrating guest's endpoint on the destination node until the guest resumes.
	Standby bool
	// Problems are the parts of the object that were skipped, and why.
	Problems []string
}

// Key is namespace/name.
func (e *Endpoint) Key() string { return e.Namespace + "/" + e.Name }

func (e *Endpoint) equal(o *Endpoint) bool {
	return e.Namespace == o.Namespace && e.Name == o.Name && e.Workload == o.Workload && e.Created.Equal(o.Created) &&
		e.Interface == o.Interface && e.InterfaceOK == o.InterfaceOK && e.Standby == o.Standby &&
		slices.Equal(e.IPs, o.IPs) && slices.Equal(e.Problems, o.Problems)
}

// Changes is what changed since the last TakeChanges.
type Changes struct {
	// Routes maps each prefix whose desired route may have changed to its route now, or
	// to nil when no route is wanted any more.
	Routes map[netip.Prefix]*Route
	// Interfaces maps each workload interface that appeared or went to whether it is
	// wanted now.
	Interfaces map[string]bool
	// Endpoints are the keys (namespace/name) of endpoints that changed, appeared or went.
	Endpoints map[string]bool
}

// Graph holds the inputs and the desired state derived from them.
type Graph struct {
	node string
	log  *zap.Logger

	endpoints map[string]*Endpoint
	blocks    map[string]netip.Prefix // block name -> CIDR, only usable affine blocks
	learned   map[netip.Prefix][]netip.Addr

	owners    map[netip.Prefix][]string // host prefix -> keys of endpoints claiming it, winner first
	blockRefs map[netip.Prefix]int
	ifaceRefs map[string]int

	dirtyRoutes    map[netip.Prefix]struct{}
	dirtyIfaces    map[string]struct{}
	dirtyEndpoints map[string]struct{}
}

// NewGraph returns an empty graph for the node called node.
func NewGraph(node string, log *zap.Logger) *Graph {
	if log == nil {
		log = zap.NewNop()
	}
	return &Graph{
		node: node, log: log,
		endpoints: map[string]*Endpoint{}, blocks: map[string]netip.Prefix{},
		learned: map[netip.Prefix][]netip.Addr{}, owners: map[netip.Prefix][]string{},
		blockRefs: map[netip.Prefix]int{}, ifaceRefs: map[string]int{},
		dirtyRoutes: map[netip.Prefix]struct{}{}, dirtyIfaces: map[string]struct{}{},
		dirtyEndpoints: map[string]struct{}{},
	}
}

// UpsertEndpoint adds or updates a WorkloadEndpoint. One of another node is ignored (and
// forgotten if it was this node's before).
func (g *Graph) UpsertEndpoint(w *v1.WorkloadEndpoint) {
	if w == nil {
		return
	}
	key := w.Namespace + "/" + w.Name
	if w.Spec.Node != g.node {
		g.RemoveEndpoint(w.Namespace, w.Name)
		return
	}
	ep := parseEndpoint(w)
	if len(ep.Problems) > 0 {
		g.log.Warn("workload endpoint has bad fields; skipping them", zap.String("endpoint", key),
			zap.Strings("problems", ep.Problems))
	}
	old := g.endpoints[key]
	if old != nil && old.equal(ep) {
		return
	}
	g.unclaim(old)
	g.endpoints[key] = ep
	g.claim(ep)
	g.dirtyEndpoints[key] = struct{}{}
}

// RemoveEndpoint forgets the endpoint namespace/name.
func (g *Graph) RemoveEndpoint(namespace, name string) {
	key := namespace + "/" + name
	old, ok := g.endpoints[key]
	if !ok {
		return
	}
	g.unclaim(old)
	delete(g.endpoints, key)
	g.dirtyEndpoints[key] = struct{}{}
}

// ReplaceEndpoints sets the whole set of endpoints (after a datastore relist): the
// ones not in ws are removed.
func (g *Graph) ReplaceEndpoints(ws []*v1.WorkloadEndpoint) {
	keep := make(map[string]bool, len(ws))
	for _, w := range ws {
		if w != nil && w.Spec.Node == g.node {
			keep[w.Namespace+"/"+w.Name] = true
		}
	}
	for key, ep := range g.endpoints {
		if !keep[key] {
			g.RemoveEndpoint(ep.Namespace, ep.Name)
		}
	}
	for _, w := range ws {
		g.UpsertEndpoint(w)
	}
}

func (g *Graph) claim(ep *Endpoint) {
	if ep == nil || !ep.InterfaceOK {
		return
	}
	if g.ifaceRefs[ep.Interface]++; g.ifaceRefs[ep.Interface] == 1 {
		g.dirtyIfaces[ep.Interface] = struct{}{}
	}
	if ep.Standby {
		return
	}
	key := ep.Key()
	for _, ip := range ep.IPs {
		p := netip.PrefixFrom(ip, ip.BitLen())
		ks := g.owners[p]
		i := sort.Search(len(ks), func(i int) bool { return g.before(ep, g.endpoints[ks[i]]) })
		g.owners[p] = slices.Insert(ks, i, key)
		g.touchRoute(p)
	}
}

// before orders the claimants of an address: newest first, then by namespace/name.
func (g *Graph) before(a, b *Endpoint) bool {
	if !a.Created.Equal(b.Created) {
		return a.Created.After(b.Created)
	}
	return a.Key() < b.Key()
}

func (g *Graph) unclaim(ep *Endpoint) {
	if ep == nil || !ep.InterfaceOK {
		return
	}
	if g.ifaceRefs[ep.Interface]--; g.ifaceRefs[ep.Interface] <= 0 {
		delete(g.ifaceRefs, ep.Interface)
		g.dirtyIfaces[ep.Interface] = struct{}{}
	}
	if ep.Standby {
		return
	}
	key := ep.Key()
	for _, ip := range ep.IPs {
		p := netip.PrefixFrom(ip, ip.BitLen())
		g.touchRoute(p)
		ks := g.owners[p]
		if i := slices.Index(ks, key); i >= 0 {
			ks = slices.Delete(slices.Clone(ks), i, i+1)
		}
		if len(ks) == 0 {
			delete(g.owners, p)
		} else {
			g.owners[p] = ks
		}
	}
}

// touchRoute marks p's route dirty, and every endpoint claiming p (its owner may change).
func (g *Graph) touchRoute(p netip.Prefix) {
	g.dirtyRoutes[p] = struct{}{}
	for _, k := range g.owners[p] {
		g.dirtyEndpoints[k] = struct{}{}
	}
}

// UpsertBlock adds or updates an IPAMBlock. A block that is not affine to this node
// ("host:<node>"), is being deleted, or has a bad CIDR gets no blackhole.
func (g *Graph) UpsertBlock(b *v1.IPAMBlock) {
	if b == nil {
		return
	}
	cidr, ok := g.usableBlock(b)
	old, had := g.blocks[b.Name]
	if had && ok && old == cidr {
		return
	}
	if had {
		g.dropBlock(b.Name, old)
	}
	if ok {
		g.blocks[b.Name] = cidr
		g.blockRefs[cidr]++
		g.dirtyRoutes[cidr] = struct{}{}
	}
}

// RemoveBlock forgets the block called name.
func (g *Graph) RemoveBlock(name string) {
	if old, had := g.blocks[name]; had {
		g.dropBlock(name, old)
	}
}

// ReplaceBlocks sets the whole set of blocks (after a datastore relist).
func (g *Graph) ReplaceBlocks(bs []*v1.IPAMBlock) {
	keep := make(map[string]bool, len(bs))
	for _, b := range bs {
		if b != nil {
			keep[b.Name] = true
		}
	}
	for name := range g.blocks {
		if !keep[name] {
			g.RemoveBlock(name)
		}
	}
	for _, b := range bs {
		g.UpsertBlock(b)
	}
}

func (g *Graph) dropBlock(name string, cidr netip.Prefix) {
	delete(g.blocks, name)
	if g.blockRefs[cidr]--; g.blockRefs[cidr] <= 0 {
		delete(g.blockRefs, cidr)
	}
	g.dirtyRoutes[cidr] = struct{}{}
}

func (g *Graph) usableBlock(b *v1.IPAMBlock) (netip.Prefix, bool) {
	if b.Spec.Affinity == nil || *b.Spec.Affinity != "host:"+g.node || b.Spec.Deleted {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(b.Spec.CIDR))
	if err != nil {
		g.log.Warn("ipam block has a bad cidr; no blackhole for it", zap.String("block", b.Name),
			zap.String("cidr", b.Spec.CIDR), zap.Error(err))
		return netip.Prefix{}, false
	}
	return unmapPrefix(p).Masked(), true
}

// SetLearned replaces the whole set of learned routes. Bad entries (no valid prefix, no
// usable next hop) are logged and skipped; next hops of another family than the prefix
// are dropped; entries for the same prefix are merged.
func (g *Graph) SetLearned(routes []LearnedRoute) {
	next := make(map[netip.Prefix][]netip.Addr, len(routes))
	skipped, example := 0, ""
	for _, r := range routes {
		p, nhs, why := normaliseLearned(r)
		if why != "" {
			if skipped++; skipped == 1 {
				example = r.Prefix.String() + ": " + why
			}
			continue
		}
		if have, dup := next[p]; dup {
			nhs = sortedUnique(append(slices.Clone(have), nhs...))
		}
		next[p] = nhs
	}
	if skipped > 0 {
		g.log.Warn("skipped bad learned routes", zap.Int("count", skipped), zap.String("first", example))
	}
	for p, old := range g.learned {
		if nhs, ok := next[p]; !ok || !slices.Equal(old, nhs) {
			g.dirtyRoutes[p] = struct{}{}
		}
	}
	for p := range next {
		if _, ok := g.learned[p]; !ok {
			g.dirtyRoutes[p] = struct{}{}
		}
	}
	g.learned = next
}

// UpdateLearned changes the learned routes by delta: prefix -> next hops, nil (or
// none) for a withdrawal. Bad routes are skipped as in SetLearned.
func (g *Graph) UpdateLearned(delta map[netip.Prefix][]netip.Addr) {
	skipped, example := 0, ""
	if g.learned == nil {
		g.learned = map[netip.Prefix][]netip.Addr{}
	}
	drop := func(p netip.Prefix) {
		if !p.IsValid() {
			return
		}
		p = unmapPrefix(p).Masked()
		if _, ok := g.learned[p]; ok {
			delete(g.learned, p)
			g.dirtyRoutes[p] = struct{}{}
		}
	}
	for p, nhs := range delta {
		if len(nhs) == 0 {
			drop(p)
			continue
		}
		np, nnhs, why := normaliseLearned(LearnedRoute{Prefix: p, NextHops: nhs})
		if why != "" { // as in SetLearned: a bad route replaces none
			if skipped++; skipped == 1 {
				example = p.String() + ": " + why
			}
			drop(p)
			continue
		}
		if old, ok := g.learned[np]; ok && slices.Equal(old, nnhs) {
			continue
		}
		g.learned[np] = nnhs
		g.dirtyRoutes[np] = struct{}{}
	}
	if skipped > 0 {
		g.log.Warn("skipped bad learned routes", zap.Int("count", skipped), zap.String("first", example))
	}
}

// Route is the route desired for p, if any.
func (g *Graph) Route(p netip.Prefix) (Route, bool) {
	if ks := g.owners[p]; len(ks) > 0 {
		return Route{Kind: KindLocal, Interface: g.endpoints[ks[0]].Interface}, true
	}
	if g.blockRefs[p] > 0 {
		return Route{Kind: KindBlackhole}, true
	}
	if nhs, ok := g.learned[p]; ok {
		return Route{Kind: KindLearned, NextHops: nhs}, true
	}
	return Route{}, false
}

// Owner is the key of the endpoint whose interface the route to host prefix p goes
// out of, or "".
func (g *Graph) Owner(p netip.Prefix) string {
	if ks := g.owners[p]; len(ks) > 0 {
		return ks[0]
	}
	return ""
}

// Endpoint returns the endpoint namespace/name, if it is this node's.
func (g *Graph) Endpoint(key string) (*Endpoint, bool) {
	ep, ok := g.endpoints[key]
	return ep, ok
}

// Endpoints returns this node's endpoints sorted by namespace/name. The values are the
// graph's own: do not modify them.
func (g *Graph) Endpoints() []*Endpoint {
	out := make([]*Endpoint, 0, len(g.endpoints))
	for _, ep := range g.endpoints {
		out = append(out, ep)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out
}

// TakeChanges returns what changed since the last call and forgets it.
func (g *Graph) TakeChanges() Changes {
	c := Changes{
		Routes:     make(map[netip.Prefix]*Route, len(g.dirtyRoutes)),
		Interfaces: make(map[string]bool, len(g.dirtyIfaces)),
		Endpoints:  make(map[string]bool, len(g.dirtyEndpoints)),
	}
	// One allocation for every route of the batch (a 100k-route BGP table comes in
	// batches of thousands), not one each; capacity is fixed, so the pointers hold.
	slab := make([]Route, 0, len(g.dirtyRoutes))
	for p := range g.dirtyRoutes {
		if r, ok := g.Route(p); ok {
			slab = append(slab, r)
			c.Routes[p] = &slab[len(slab)-1]
		} else {
			c.Routes[p] = nil
		}
	}
	for name := range g.dirtyIfaces {
		c.Interfaces[name] = g.ifaceRefs[name] > 0
	}
	for k := range g.dirtyEndpoints {
		c.Endpoints[k] = true
	}
	clear(g.dirtyRoutes)
	clear(g.dirtyIfaces)
	clear(g.dirtyEndpoints)
	return c
}
