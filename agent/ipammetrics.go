package agent

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
)

// ipamScrapeTimeout bounds the datastore reads of one scrape of the IPAM metrics.
const ipamScrapeTimeout = 5 * time.Second

// ipamCollector exports IPAM utilisation, computed at each scrape from the IPPools and
// IPAMBlocks in the datastore (two lists, allowed from the API server's watch cache):
//
//	tabby_ipam_addresses_capacity{pool}       addresses in the pool's CIDR
//	tabby_ipam_addresses_in_use{pool}         addresses allocated from the pool's blocks
//	tabby_ipam_blocks{pool}                   blocks of the pool claimed by any node
//	tabby_ipam_node_blocks{pool}              blocks of the pool affine to this node
//	tabby_ipam_node_addresses_capacity{pool}  addresses in this node's blocks
//	tabby_ipam_node_addresses_in_use{pool}    addresses allocated in this node's blocks
//
// The pool-wide series are the same on every node (aggregate them with max by (pool)).
// Blocks in no pool (their pool was deleted) are left out. A scrape whose lists fail
// reports an error for these metrics only.
type ipamCollector struct {
	store   datastore.Store
	node    string
	timeout time.Duration

	capacity, inUse, blocks                    *prometheus.Desc
	nodeBlocks, nodeCapacity, nodeAddressInUse *prometheus.Desc
}

func newIPAMCollector(store datastore.Store, node string, timeout time.Duration) *ipamCollector {
	l := []string{"pool"}
	return &ipamCollector{store: store, node: node, timeout: timeout,
		capacity: prometheus.NewDesc("tabby_ipam_addresses_capacity",
			"Addresses in the IP pool's CIDR.", l, nil),
		inUse: prometheus.NewDesc("tabby_ipam_addresses_in_use",
			"Addresses allocated from the IP pool's blocks, by any node.", l, nil),
		blocks: prometheus.NewDesc("tabby_ipam_blocks",
			"Blocks of the IP pool claimed by any node.", l, nil),
		nodeBlocks: prometheus.NewDesc("tabby_ipam_node_blocks",
			"Blocks of the IP pool affine to this node.", l, nil),
		nodeCapacity: prometheus.NewDesc("tabby_ipam_node_addresses_capacity",
			"Addresses in the blocks of the IP pool affine to this node.", l, nil),
		nodeAddressInUse: prometheus.NewDesc("tabby_ipam_node_addresses_in_use",
			"Addresses allocated in the blocks of the IP pool affine to this node (by this node or borrowed by others).", l, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *ipamCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.capacity, c.inUse, c.blocks, c.nodeBlocks, c.nodeCapacity, c.nodeAddressInUse} {
		ch <- d
	}
}

// poolCounts is one pool's figures of a scrape.
type poolCounts struct {
	name                                string
	cidr                                netip.Prefix
	capacity, inUse, blocks             float64
	nodeBlocks, nodeCapacity, nodeInUse float64
}

// Collect implements prometheus.Collector.
func (c *ipamCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	pools, err := c.count(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.inUse, err)
		return
	}
	for _, p := range pools {
		for _, m := range []struct {
			d *prometheus.Desc
			v float64
		}{{c.capacity, p.capacity}, {c.inUse, p.inUse}, {c.blocks, p.blocks},
			{c.nodeBlocks, p.nodeBlocks}, {c.nodeCapacity, p.nodeCapacity}, {c.nodeAddressInUse, p.nodeInUse}} {
			ch <- prometheus.MustNewConstMetric(m.d, prometheus.GaugeValue, m.v, p.name)
		}
	}
}

// count reads the pools and blocks and counts them per pool.
func (c *ipamCollector) count(ctx context.Context) ([]*poolCounts, error) {
	opts := datastore.ListOptions{AllowStale: true}
	ps, err := datastore.List[*v1.IPPool](ctx, c.store, opts)
	if err != nil {
		return nil, fmt.Errorf("ipam metrics: list IP pools: %w", err)
	}
	bs, err := datastore.List[*v1.IPAMBlock](ctx, c.store, opts)
	if err != nil {
		return nil, fmt.Errorf("ipam metrics: list IPAM blocks: %w", err)
	}
	pools := make([]*poolCounts, 0, len(ps))
	for _, p := range ps {
		cidr, err := netip.ParsePrefix(p.Spec.CIDR)
		if err != nil {
			continue // validation keeps these out of the datastore
		}
		pools = append(pools, &poolCounts{name: p.Name, cidr: cidr.Masked(), capacity: addresses(cidr)})
	}
	for _, b := range bs {
		cidr, err := netip.ParsePrefix(b.Spec.CIDR)
		if err != nil {
			continue
		}
		var p *poolCounts
		for _, q := range pools {
			if q.cidr.Contains(cidr.Addr()) {
				p = q
				break
			}
		}
		if p == nil {
			continue
		}
		used := 0.0
		for _, a := range b.Spec.Allocations {
			if a >= 0 {
				used++
			}
		}
		p.blocks++
		p.inUse += used
		if b.Spec.Affinity != nil && strings.TrimPrefix(*b.Spec.Affinity, "host:") == c.node {
			p.nodeBlocks++
			p.nodeCapacity += addresses(cidr)
			p.nodeInUse += used
		}
	}
	return pools, nil
}

// addresses is the number of addresses in p (capped at 2^62 for huge IPv6 prefixes).
func addresses(p netip.Prefix) float64 {
	return float64(uint64(1) << min(p.Addr().BitLen()-p.Bits(), 62))
}
