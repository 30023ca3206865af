package controller

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "github.com/tabbynet/tabby/api/v1"
	corev1 "k8s.io/api/core/v1"
)

// Input is everything Calc reads. Objects need not be sorted; invalid ones are skipped
// and reported in Desired.Problems.
type Input struct {
	// NodeName is this node.
	NodeName string
	Nodes    []*v1.Node
	// Configs are the BGPConfigurations: "default" and every "node.<name>" (those of
	// other nodes give their listen ports).
	Configs []*v1.BGPConfiguration
	Peers   []*v1.BGPPeer
	Filters []*v1.BGPFilter
	Pools   []*v1.IPPool
	// Blocks are the IPAMBlocks: this node's affine blocks, and any block where it holds
	// an address (allocation attribute node=<this node>).
	Blocks []*v1.IPAMBlock
	// Secrets are read for BGP passwords, in SecretNamespace (default tabby-system).
	Secrets         []*corev1.Secret
	SecretNamespace string
}

// nodeInfo is what Calc keeps of a valid Node.
type nodeInfo struct {
	name   string
	ip     netip.Addr   // invalid when the node has no IPv4 address
	subnet netip.Prefix // ip's subnet (spec.bgp.ipv4Address, masked)
	asn    uint32
	rrID   string
	port   uint16
	labels map[string]string
}

type calc struct {
	in       Input
	d        *Desired
	nodes    []*nodeInfo // valid nodes, sorted by name
	me       *nodeInfo
	def      *v1.BGPConfiguration
	nodeCfgs map[string]*v1.BGPConfiguration
	pools    []*v1.IPPool // valid pools
	filters  map[string]*v1.BGPFilter
}

// Calc computes the node's desired speaker state. It is pure: the same input gives the
// same Desired, and it never fails; what it cannot use it reports in Problems.
func Calc(in Input) *Desired {
	if in.SecretNamespace == "" {
		in.SecretNamespace = DefaultSecretNamespace
	}
	c := &calc{in: in, nodeCfgs: map[string]*v1.BGPConfiguration{}, filters: map[string]*v1.BGPFilter{},
		d: &Desired{Peers: map[netip.Addr]Peer{}, Filters: map[netip.Addr][]NamedFilter{}, Adverts: map[netip.Prefix]Advert{}, Own: map[netip.Prefix]bool{}, Pools: []netip.Prefix{}}}
	c.readConfigs()
	c.readNodes()
	c.readPools()
	for _, f := range in.Filters {
		if c.valid("BGPFilter", f) {
			c.filters[f.Name] = f
		}
	}
	switch {
	case c.me == nil:
		c.problem("Node "+in.NodeName, "not found (or invalid): BGP is off on this node")
	case !c.me.ip.IsValid():
		c.problem("Node "+in.NodeName, "has no spec.bgp.ipv4Address: BGP is off on this node")
	default:
		c.d.Global = &Global{RouterID: c.me.ip, ASN: c.me.asn, ListenPort: c.me.port}
		c.d.LogSeverity = c.def.Spec.LogSeverityScreen
		if n := c.nodeCfgs[c.me.name]; n != nil && n.Spec.LogSeverityScreen != "" {
			c.d.LogSeverity = n.Spec.LogSeverityScreen
		}
		c.own()
		c.explicitPeers()
		c.meshPeers()
	}
	slices.SortFunc(c.d.Problems, func(a, b Problem) int {
		return cmp.Or(strings.Compare(a.Object, b.Object), strings.Compare(a.Reason, b.Reason))
	})
	c.d.Problems = slices.Compact(c.d.Problems)
	return c.d
}

func (c *calc) problem(obj, format string, args ...any) {
	c.d.Problems = append(c.d.Problems, Problem{Object: obj, Reason: fmt.Sprintf(format, args...)})
}

// valid reports whether obj passes api/v1 validation, and reports it when not.
func (c *calc) valid(kind string, obj v1.Object) bool {
	if err := v1.Validate(obj); err != nil {
		c.problem(kind+" "+obj.GetName(), "invalid, ignored: %v", err)
		return false
	}
	return true
}

func (c *calc) readConfigs() {
	c.def = &v1.BGPConfiguration{}
	for _, o := range c.in.Configs {
		if !c.valid("BGPConfiguration", o) {
			continue
		}
		if o.Name == "default" {
			c.def = o
		} else if node, ok := strings.CutPrefix(o.Name, "node."); ok {
			c.nodeCfgs[node] = o
		}
	}
}

// meshEnabled is the default BGPConfiguration's nodeToNodeMeshEnabled (default true).
func (c *calc) meshEnabled() bool {
	return c.def.Spec.NodeToNodeMeshEnabled == nil || *c.def.Spec.NodeToNodeMeshEnabled
}

func (c *calc) readNodes() {
	defASN := v1.DefaultASNumber
	if c.def.Spec.ASNumber != nil {
		defASN = *c.def.Spec.ASNumber
	}
	for _, n := range c.in.Nodes {
		if !c.valid("Node", n) {
			continue
		}
		ni := &nodeInfo{name: n.Name, asn: uint32(defASN), port: c.def.Spec.ListenPort, labels: n.Labels}
		if nc := c.nodeCfgs[n.Name]; nc != nil && nc.Spec.ListenPort != 0 {
			ni.port = nc.Spec.ListenPort
		}
		if ni.port == 0 {
			ni.port = v1.DefaultListenPort
		}
		if b := n.Spec.BGP; b != nil {
			if b.IPv4Address != "" {
				pfx := netip.MustParsePrefix(b.IPv4Address) // validated
				ni.ip, ni.subnet = pfx.Addr(), pfx.Masked()
			}
			if b.ASNumber != nil {
				ni.asn = uint32(*b.ASNumber)
			}
			ni.rrID = b.RouteReflectorClusterID
		}
		c.nodes = append(c.nodes, ni)
		if n.Name == c.in.NodeName {
			c.me = ni
		}
	}
	slices.SortFunc(c.nodes, func(a, b *nodeInfo) int { return strings.Compare(a.name, b.name) })
}

func (c *calc) readPools() {
	for _, p := range c.in.Pools {
		if !c.valid("IPPool", p) {
			continue
		}
		c.pools = append(c.pools, p)
		cidr := netip.MustParsePrefix(p.Spec.CIDR).Masked()
		c.d.Pools = append(c.d.Pools, cidr)
		if p.Spec.DisableBGPExport {
			c.d.NoExport = append(c.d.NoExport, cidr)
		}
	}
	slices.SortFunc(c.d.NoExport, comparePrefix)
	slices.SortFunc(c.d.Pools, comparePrefix)
	c.d.Pools = slices.Compact(c.d.Pools)
}

// poolOf is the valid pool that contains prefix (the most specific one), or nil.
func (c *calc) poolOf(prefix netip.Prefix) *v1.IPPool {
	var best *v1.IPPool
	bestBits := -1
	for _, p := range c.pools {
		pc := netip.MustParsePrefix(p.Spec.CIDR).Masked()
		if prefix.Bits() >= pc.Bits() && pc.Contains(prefix.Addr()) && pc.Bits() > bestBits {
			best, bestBits = p, pc.Bits()
		}
	}
	return best
}

// own fills Own and Adverts: this node's affine blocks and its borrowed addresses.
func (c *calc) own() {
	me := c.in.NodeName
	for _, b := range c.in.Blocks {
		obj := "IPAMBlock " + b.Name
		cidr, err := netip.ParsePrefix(b.Spec.CIDR)
		if err != nil {
			c.problem(obj, "spec.cidr %q: %v", b.Spec.CIDR, err)
			continue
		}
		cidr = cidr.Masked()
		affine := b.Spec.Affinity != nil && *b.Spec.Affinity == "host:"+me
		if affine {
			if !b.Spec.Deleted {
				c.d.Own[cidr] = true
				c.advertise(obj, cidr, false)
			}
			continue
		}
		for _, addr := range borrowed(b, cidr, me) {
			p := netip.PrefixFrom(addr, addr.BitLen())
			c.d.Own[p] = true
			c.advertise(obj, p, true)
		}
	}
}

// borrowed lists the addresses of a block that allocations with attribute node=<me>
// hold.
func borrowed(b *v1.IPAMBlock, cidr netip.Prefix, me string) []netip.Addr {
	mine := map[int]bool{}
	for i, a := range b.Spec.Attributes {
		if a.Secondary["node"] == me {
			mine[i] = true
		}
	}
	if len(mine) == 0 {
		return nil
	}
	size := 1 << min(cidr.Addr().BitLen()-cidr.Bits(), 30)
	var out []netip.Addr
	for ord, idx := range b.Spec.Allocations {
		if ord >= size || !mine[idx] {
			continue
		}
		out = append(out, addrAt(cidr.Addr(), ord))
	}
	return out
}

// addrAt is base + ord.
func addrAt(base netip.Addr, ord int) netip.Addr {
	b := base.As16()
	carry := ord
	for i := 15; i >= 0 && carry > 0; i-- {
		sum := int(b[i]) + carry&0xff
		b[i] = byte(sum)
		carry = carry>>8 + sum>>8
	}
	a := netip.AddrFrom16(b)
	if base.Is4() {
		a = a.Unmap()
	}
	return a
}

// advertise adds prefix to Adverts when its pool exports it.
func (c *calc) advertise(obj string, prefix netip.Prefix, isBorrowed bool) {
	if !prefix.Addr().Is4() {
		return // IPv6 sessions are not built yet: v6 blocks stay local
	}
	pool := c.poolOf(prefix)
	switch {
	case pool == nil:
		c.problem(obj, "%s is in no IPPool: not advertised", prefix)
		return
	case pool.Spec.DisableBGPExport:
		return
	}
	c.d.Adverts[prefix] = Advert{Prefix: prefix, Borrowed: isBorrowed, Communities: c.communities(prefix)}
}

// communities are the values of every prefixAdvertisement whose CIDR holds prefix:
// those of node.<name> when it has any, else those of default.
func (c *calc) communities(prefix netip.Prefix) []string {
	named := map[string]string{}
	for _, cm := range c.def.Spec.Communities {
		named[cm.Name] = cm.Value
	}
	pas := c.def.Spec.PrefixAdvertisements
	obj := "BGPConfiguration default"
	if nc := c.nodeCfgs[c.in.NodeName]; nc != nil {
		for _, cm := range nc.Spec.Communities {
			named[cm.Name] = cm.Value
		}
		if len(nc.Spec.PrefixAdvertisements) > 0 {
			pas, obj = nc.Spec.PrefixAdvertisements, "BGPConfiguration "+nc.Name
		}
	}
	var out []string
	for _, pa := range pas {
		pc, err := netip.ParsePrefix(pa.CIDR)
		if err != nil || prefix.Bits() < pc.Bits() || !pc.Masked().Contains(prefix.Addr()) {
			continue
		}
		for _, name := range pa.Communities {
			switch v, ok := named[name]; {
			case ok:
				out = append(out, v)
			case isCommunity(name):
				out = append(out, name)
			default:
				c.problem(obj, "community %q is neither defined nor a literal value", name)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// isCommunity reports whether s is a literal AA:NN or AA:NN:MM value.
func isCommunity(s string) bool {
	_, err := ParseCommunity(s)
	return err == nil
}
