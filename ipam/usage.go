package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
)

// PoolUsage counts one pool's addresses.
type PoolUsage struct {
	Name     string `json:"name"`
	CIDR     string `json:"cidr"`
	Total    int    `json:"total"`
	InUse    int    `json:"inUse"`
	Free     int    `json:"free"`
	Blocks   int    `json:"blocks"`
	Disabled bool   `json:"disabled,omitempty"`
}

// BlockUsage counts one block's addresses.
type BlockUsage struct {
	CIDR     string `json:"cidr"`
	Pool     string `json:"pool,omitempty"`
	Node     string `json:"node,omitempty"`
	Total    int    `json:"total"`
	InUse    int    `json:"inUse"`
	Free     int    `json:"free"`
	Borrowed int    `json:"borrowed"`
}

// BorrowedAddress is an address held by a node other than its block's.
type BorrowedAddress struct {
	IP        string    `json:"ip"`
	Block     string    `json:"block"`
	BlockNode string    `json:"blockNode,omitempty"`
	Node      string    `json:"node"`
	Handle    string    `json:"handle"`
	Since     time.Time `json:"since,omitzero"`
}

// Usage is the whole IPAM picture for `tabbyctl ipam show`.
type Usage struct {
	Pools    []PoolUsage       `json:"pools"`
	Blocks   []BlockUsage      `json:"blocks"`
	Borrowed []BorrowedAddress `json:"borrowed"`
}

// AddressInfo says who holds one address, for `tabbyctl ipam show --ip`.
type AddressInfo struct {
	IP        string            `json:"ip"`
	Pool      string            `json:"pool,omitempty"`
	Block     string            `json:"block,omitempty"`
	BlockNode string            `json:"blockNode,omitempty"`
	Allocated bool              `json:"allocated"`
	Reserved  bool              `json:"reserved,omitempty"`
	Handle    string            `json:"handle,omitempty"`
	Attrs     map[string]string `json:"attributes,omitempty"`
	Since     time.Time         `json:"since,omitzero"`
	Borrowed  bool              `json:"borrowed,omitempty"`
}

// Usage reads every pool and block and counts them.
func (a *Allocator) Usage(ctx context.Context) (Usage, error) {
	all, err := a.allPools(ctx, false)
	if err != nil {
		return Usage{}, err
	}
	blocks, err := datastore.List[*v1.IPAMBlock](ctx, a.s, datastore.ListOptions{})
	if err != nil {
		return Usage{}, fmt.Errorf("list blocks: %w", err)
	}
	u := Usage{Pools: []PoolUsage{}, Blocks: []BlockUsage{}, Borrowed: []BorrowedAddress{}}
	idx := map[string]int{}
	for _, p := range all {
		total := 1 << min(p.cidr.Addr().BitLen()-p.cidr.Bits(), 62)
		idx[p.name()] = len(u.Pools)
		u.Pools = append(u.Pools, PoolUsage{Name: p.name(), CIDR: p.cidr.String(), Total: total, Free: total, Disabled: p.obj.Spec.Disabled})
	}
	for _, b := range blocks {
		cidr, err := blockCIDR(b)
		if err != nil {
			continue
		}
		bu := BlockUsage{CIDR: cidr.String(), Node: affineNode(b), Total: blockSize(cidr), InUse: inUse(b)}
		bu.Free = bu.Total - bu.InUse
		if p, ok := poolContaining(all, cidr.Addr()); ok {
			bu.Pool = p.name()
			pu := &u.Pools[idx[p.name()]]
			pu.InUse += bu.InUse
			pu.Free -= bu.InUse
			pu.Blocks++
		}
		for ord := range b.Spec.Allocations {
			h, attrs := handleAt(b, ord)
			if isFree(b, ord) || attrs[AttrNode] == "" || attrs[AttrNode] == bu.Node {
				continue
			}
			bu.Borrowed++
			since, _ := time.Parse(time.RFC3339, attrs[AttrTimestamp])
			u.Borrowed = append(u.Borrowed, BorrowedAddress{IP: addrAt(cidr, ord).String(), Block: cidr.String(),
				BlockNode: bu.Node, Node: attrs[AttrNode], Handle: h, Since: since})
		}
		u.Blocks = append(u.Blocks, bu)
	}
	sort.Slice(u.Blocks, func(i, j int) bool {
		return netip.MustParsePrefix(u.Blocks[i].CIDR).Addr().Less(netip.MustParsePrefix(u.Blocks[j].CIDR).Addr())
	})
	sort.Slice(u.Borrowed, func(i, j int) bool {
		return netip.MustParseAddr(u.Borrowed[i].IP).Less(netip.MustParseAddr(u.Borrowed[j].IP))
	})
	return u, nil
}

// Lookup says who holds ip, since when, and from which block.
func (a *Allocator) Lookup(ctx context.Context, ip netip.Addr) (AddressInfo, error) {
	info := AddressInfo{IP: ip.String()}
	all, err := a.allPools(ctx, false)
	if err != nil {
		return info, err
	}
	if p, ok := poolContaining(all, ip); ok {
		info.Pool = p.name()
	}
	if reserved, _, err := a.reservations(ctx, false); err != nil {
		return info, err
	} else if reserved != nil {
		info.Reserved = reserved(ip)
	}
	cidr, b, err := a.blockOf(ctx, all, ip)
	if err != nil {
		return info, nil // in no block: not allocated
	}
	info.Block = cidr.String()
	info.BlockNode = affineNode(b)
	ord := ordinalOf(cidr, ip)
	if isFree(b, ord) {
		return info, nil
	}
	info.Allocated = true
	info.Handle, info.Attrs = handleAt(b, ord)
	info.Since, _ = time.Parse(time.RFC3339, info.Attrs[AttrTimestamp])
	info.Borrowed = info.Attrs[AttrNode] != "" && info.Attrs[AttrNode] != info.BlockNode
	return info, nil
}
