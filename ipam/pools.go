package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/api/v1/selector"
	"github.com/tabbynet/tabby/datastore"
	corev1 "k8s.io/api/core/v1"
)

// config is the IPAMConfiguration in force (defaults when there is none).
type config struct {
	strictAffinity   bool
	maxBlocksPerHost int
	autoAllocate     bool
}

func (a *Allocator) config(ctx context.Context) (config, error) {
	c, err := datastore.Get[*v1.IPAMConfiguration](ctx, a.s, "", "default")
	if errors.Is(err, datastore.ErrNotFound) {
		return config{autoAllocate: true}, nil
	}
	if err != nil {
		return config{}, fmt.Errorf("read IPAMConfiguration: %w", err)
	}
	return config{
		strictAffinity:   c.Spec.StrictAffinity,
		maxBlocksPerHost: c.Spec.MaxBlocksPerHost,
		autoAllocate:     c.Spec.AutoAllocateBlocks == nil || *c.Spec.AutoAllocateBlocks,
	}, nil
}

// pool is an IPPool with its parsed CIDR.
type pool struct {
	obj  *v1.IPPool
	cidr netip.Prefix
}

func (p pool) name() string { return p.obj.Name }

func (p pool) blockOf(addr netip.Addr) netip.Prefix {
	b, _ := addr.Prefix(p.obj.Spec.BlockSize)
	return b
}

// allPools lists every IPPool, sorted by name; stale allows the API server's cache (see
// settings).
func (a *Allocator) allPools(ctx context.Context, stale bool) ([]pool, error) {
	objs, err := datastore.List[*v1.IPPool](ctx, a.s, datastore.ListOptions{AllowStale: stale})
	if err != nil {
		return nil, fmt.Errorf("list IPPools: %w", err)
	}
	var out []pool
	for _, o := range objs {
		c, err := netip.ParsePrefix(o.Spec.CIDR)
		if err != nil {
			continue // validation keeps these out; never crash on one
		}
		if o.Spec.BlockSize == 0 {
			o.Spec.BlockSize = v1.DefaultBlockSizeV4
		}
		out = append(out, pool{obj: o, cidr: c})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name() < out[j].name() })
	return out, nil
}

// nodeLabels are the labels IPPool.nodeSelector sees: the Tabby Node's, else the
// Kubernetes Node's, else none. Both are read at once.
func (a *Allocator) nodeLabels(ctx context.Context, node string) (map[string]string, error) {
	var tabby, kube map[string]string
	var tabbyErr, kubeErr error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		n, err := datastore.Get[*v1.Node](ctx, a.s, "", node)
		if err == nil {
			tabby = n.Labels
			if tabby == nil {
				tabby = map[string]string{}
			}
		}
		tabbyErr = err
	}()
	go func() {
		defer wg.Done()
		n, err := datastore.Get[*corev1.Node](ctx, a.s, "", node)
		if err == nil {
			kube = n.Labels
		}
		kubeErr = err
	}()
	wg.Wait()
	switch {
	case tabby != nil:
		return tabby, nil
	case !errors.Is(tabbyErr, datastore.ErrNotFound):
		return nil, fmt.Errorf("read Node %q: %w", node, tabbyErr)
	case kubeErr == nil:
		return kube, nil
	case !errors.Is(kubeErr, datastore.ErrNotFound):
		return nil, fmt.Errorf("read Kubernetes Node %q: %w", node, kubeErr)
	}
	return map[string]string{}, nil
}

func usableForWorkloads(p *v1.IPPool) bool {
	if len(p.Spec.AllowedUses) == 0 {
		return true
	}
	for _, u := range p.Spec.AllowedUses {
		if u == v1.IPPoolAllowedUseWorkload {
			return true
		}
	}
	return false
}

// candidatePools are the pools a request may allocate from, in preference order.
func (a *Allocator) candidatePools(ctx context.Context, req Request, all []pool) ([]pool, error) {
	labels, err := a.cachedNodeLabels(ctx, req.Node)
	if err != nil {
		return nil, err
	}
	selects := func(p pool) (bool, string) {
		if p.obj.Spec.Disabled {
			return false, "disabled"
		}
		if !usableForWorkloads(p.obj) {
			return false, "not for workloads (allowedUses)"
		}
		if !p.cidr.Addr().Is4() {
			return false, "IPv6"
		}
		sel, err := selector.Parse(p.obj.Spec.NodeSelector)
		if err != nil {
			return false, "bad nodeSelector"
		}
		if !sel.Evaluate(labels) {
			return false, fmt.Sprintf("nodeSelector %q does not select node %s", p.obj.Spec.NodeSelector, req.Node)
		}
		return true, ""
	}
	if len(req.Pools) > 0 {
		var out []pool
		for _, want := range req.Pools {
			var found *pool
			for i := range all {
				if all[i].name() == want || all[i].cidr.String() == want {
					found = &all[i]
					break
				}
			}
			if found == nil {
				return nil, fmt.Errorf("%w: requested pool %q does not exist", ErrNoPool, want)
			}
			if ok, why := selects(*found); !ok {
				return nil, fmt.Errorf("%w: requested pool %q: %s", ErrNoPool, want, why)
			}
			out = append(out, *found)
		}
		return out, nil
	}
	var out []pool
	for _, p := range all {
		if ok, _ := selects(p); ok {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no enabled IPv4 workload pool selects node %s (%d pools exist)", ErrNoPool, req.Node, len(all))
	}
	return out, nil
}

// reservations returns a test for reserved addresses.
func (a *Allocator) reservations(ctx context.Context, stale bool) (func(netip.Addr) bool, []string, error) {
	objs, err := datastore.List[*v1.IPReservation](ctx, a.s, datastore.ListOptions{AllowStale: stale})
	if err != nil {
		return nil, nil, fmt.Errorf("list IPReservations: %w", err)
	}
	var pfxs []netip.Prefix
	var names []string
	for _, o := range objs {
		for _, c := range o.Spec.ReservedCIDRs {
			var p netip.Prefix
			if strings.Contains(c, "/") {
				p, err = netip.ParsePrefix(c)
			} else {
				var ad netip.Addr
				ad, err = netip.ParseAddr(c)
				p = netip.PrefixFrom(ad, ad.BitLen())
			}
			if err == nil {
				pfxs = append(pfxs, p)
				names = append(names, o.Name)
			}
		}
	}
	if len(pfxs) == 0 {
		return nil, nil, nil
	}
	return func(ad netip.Addr) bool {
		for _, p := range pfxs {
			if p.Contains(ad) {
				return true
			}
		}
		return false
	}, names, nil
}

func poolContaining(all []pool, addr netip.Addr) (pool, bool) {
	for _, p := range all {
		if p.cidr.Contains(addr) {
			return p, true
		}
	}
	return pool{}, false
}
