package controller

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/api/v1/selector"
)

// explicitPeers adds the sessions BGPPeers ask for. BGPPeers limited to nodes (node,
// nodeSelector) go first, then global ones, each group by name: the first to claim an
// address has it, and later claims are reported.
func (c *calc) explicitPeers() {
	peers := slices.Clone(c.in.Peers)
	slices.SortFunc(peers, func(a, b *v1.BGPPeer) int {
		ag, bg := isGlobal(a), isGlobal(b)
		if ag != bg {
			if ag {
				return 1
			}
			return -1
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, bp := range peers {
		if c.valid("BGPPeer", bp) {
			c.explicitPeer(bp)
		}
	}
}

func isGlobal(bp *v1.BGPPeer) bool { return bp.Spec.Node == "" && bp.Spec.NodeSelector == "" }

// appliesTo reports whether a BGPPeer's node/nodeSelector selects node n.
func appliesTo(bp *v1.BGPPeer, nodeSel *selector.Selector, n *nodeInfo) bool {
	switch {
	case bp.Spec.Node != "":
		return bp.Spec.Node == n.name
	case nodeSel != nil:
		return nodeSel.Evaluate(n.labels)
	}
	return true
}

func (c *calc) explicitPeer(bp *v1.BGPPeer) {
	obj := "BGPPeer " + bp.Name
	s := bp.Spec
	var nodeSel, peerSel *selector.Selector
	var err error
	if s.NodeSelector != "" {
		if nodeSel, err = selector.Parse(s.NodeSelector); err != nil {
			c.problem(obj, "spec.nodeSelector: %v", err)
			return
		}
	}
	if s.PeerSelector != "" {
		if peerSel, err = selector.Parse(s.PeerSelector); err != nil {
			c.problem(obj, "spec.peerSelector: %v", err)
			return
		}
	}
	base := PeerNode
	if isGlobal(bp) {
		base = PeerGlobal
	}
	tmpl, imp, ok := c.sessionTemplate(obj, bp)
	if !ok {
		return
	}
	if s.PeerIP != "" {
		if !appliesTo(bp, nodeSel, c.me) {
			return
		}
		addr, port, _ := v1.ParsePeerIP(s.PeerIP) // validated
		p := tmpl
		p.Address, p.Port, p.ASN, p.Type = addr.Unmap(), port, uint32(s.ASNumber), base
		if p.Port == 0 {
			p.Port = v1.DefaultListenPort
		}
		// An eBGP router on the node's own subnet (a ToR): other nodes' blocks passed on
		// to it keep their owner as next hop, as BIRD does for Calico.
		if p.NextHopMode == v1.NextHopAuto && p.ASN != p.LocalASN && c.me.subnet.Bits() < 32 && c.me.subnet.Contains(p.Address) {
			for _, n := range c.nodes {
				if n != c.me && n.ip.IsValid() && n.ip != c.me.ip && n.ip != p.Address && c.me.subnet.Contains(n.ip) {
					p.ThirdPartyNextHops = append(p.ThirdPartyNextHops, n.ip)
				}
			}
			slices.SortFunc(p.ThirdPartyNextHops, netip.Addr.Compare)
			p.ThirdPartyNextHops = slices.Compact(p.ThirdPartyNextHops)
		}
		c.addPeer(obj, p, imp)
		return
	}
	// peerSelector: the selected nodes peer with the nodes the BGPPeer applies to, in
	// both directions, so that both ends of each session are configured.
	forward := appliesTo(bp, nodeSel, c.me)
	reverse := peerSel.Evaluate(c.me.labels)
	for _, n := range c.nodes {
		if n == c.me || !((forward && peerSel.Evaluate(n.labels)) || (reverse && appliesTo(bp, nodeSel, n))) {
			continue
		}
		if !n.ip.IsValid() {
			c.problem(obj, "node %s has no spec.bgp.ipv4Address: no session with it", n.name)
			continue
		}
		p := tmpl
		p.Address, p.Port, p.ASN, p.Node, p.Type = n.ip, n.port, n.asn, n.name, base
		if c.me.rrID != "" || n.rrID != "" {
			p.Type = PeerReflector
		}
		if c.me.rrID != "" && n.rrID != c.me.rrID {
			p.RRClient, p.RRClusterID = true, c.me.rrID
		}
		c.addPeer(obj, p, imp)
	}
}

// sessionTemplate is a Peer with the BGPPeer's session settings, defaults resolved; ok
// is false (and the problem reported) when its password cannot be read.
func (c *calc) sessionTemplate(obj string, bp *v1.BGPPeer) (Peer, []NamedFilter, bool) {
	s := bp.Spec
	p := Peer{Source: obj, LocalASN: c.me.asn, NextHopMode: s.NextHopMode}
	if p.NextHopMode == "" {
		p.NextHopMode = v1.NextHopAuto
	}
	if s.LocalASNumber != nil {
		p.LocalASN = uint32(*s.LocalASNumber)
	}
	if s.SourceAddress != "None" {
		p.LocalAddress = c.me.ip
	}
	pw, err := c.password(s.Password)
	if err != nil {
		c.problem(obj, "spec.password: %v; no session", err)
		return Peer{}, nil, false
	}
	p.Password = pw
	p.HoldTime = DefaultHoldTime
	if s.HoldTime != nil {
		p.HoldTime = s.HoldTime.Duration
	}
	switch {
	case p.HoldTime == 0:
		p.KeepaliveTime = 0
	case s.KeepaliveTime != nil:
		p.KeepaliveTime = s.KeepaliveTime.Duration
	case s.HoldTime != nil:
		p.KeepaliveTime = p.HoldTime / 3
	default:
		p.KeepaliveTime = DefaultKeepaliveTime
	}
	p.MaxRestartTime = DefaultMaxRestartTime
	if s.MaxRestartTime != nil {
		p.MaxRestartTime = s.MaxRestartTime.Duration
	}
	if s.TTLSecurity != nil {
		p.TTLSecurity = *s.TTLSecurity
	}
	if s.MaxPrefixes != nil {
		p.MaxPrefixes = *s.MaxPrefixes
	}
	if s.NumAllowedLocalASNumbers != nil {
		p.AllowOwnAS = uint8(*s.NumAllowedLocalASNumbers)
	}
	var imp []NamedFilter
	for _, name := range s.Filters {
		f, ok := c.filters[name]
		if !ok {
			c.problem(obj, "BGPFilter %q not found (or invalid): left out", name)
			continue
		}
		imp = append(imp, NamedFilter{Name: name, Spec: f.Spec})
	}
	return p, imp, true
}

// password resolves a secretKeyRef in SecretNamespace; "" when none is asked for, or
// when an optional one is missing.
func (c *calc) password(pw *v1.BGPPassword) (string, error) {
	if pw == nil || pw.SecretKeyRef == nil {
		return "", nil
	}
	ref := pw.SecretKeyRef
	optional := ref.Optional != nil && *ref.Optional
	for _, s := range c.in.Secrets {
		if s.Namespace != c.in.SecretNamespace || s.Name != ref.Name {
			continue
		}
		if v, ok := s.Data[ref.Key]; ok {
			return string(v), nil
		}
		if v, ok := s.StringData[ref.Key]; ok {
			return v, nil
		}
		if optional {
			return "", nil
		}
		return "", fmt.Errorf("secret %s/%s has no key %q", s.Namespace, s.Name, ref.Key)
	}
	if optional {
		return "", nil
	}
	return "", fmt.Errorf("secret %s/%s not found", c.in.SecretNamespace, ref.Name)
}

// addPeer adds p unless its address is taken or is this node's own.
func (c *calc) addPeer(obj string, p Peer, imp []NamedFilter) {
	if p.Address == c.me.ip {
		c.problem(obj, "peer %s is this node's own address: no session", p.Address)
		return
	}
	if prev, ok := c.d.Peers[p.Address]; ok {
		if prev.Source != p.Source {
			c.problem(obj, "peer %s already has a session from %s: ignored", p.Address, prev.Source)
		}
		return
	}
	c.d.Peers[p.Address] = p
	if len(imp) > 0 {
		c.d.Filters[p.Address] = imp
	}
}

// meshPeers adds a mesh session to every other node with an IPv4 address, unless the
// mesh is off or a BGPPeer already configures that address.
func (c *calc) meshPeers() {
	if !c.meshEnabled() {
		return
	}
	pw, err := c.password(c.def.Spec.NodeMeshPassword)
	if err != nil {
		c.problem("BGPConfiguration default", "spec.nodeMeshPassword: %v; no mesh", err)
		return
	}
	restart := DefaultMaxRestartTime
	if d := c.def.Spec.NodeMeshMaxRestartTime; d != nil {
		restart = d.Duration
	}
	owner := map[netip.Addr]string{c.me.ip: c.me.name}
	for _, n := range c.nodes {
		if n == c.me || !n.ip.IsValid() {
			continue
		}
		if o, dup := owner[n.ip]; dup {
			c.problem("Node "+n.name, "spec.bgp.ipv4Address %s is also node %s's: no mesh session", n.ip, o)
			continue
		}
		owner[n.ip] = n.name
		if _, explicit := c.d.Peers[n.ip]; explicit {
			continue
		}
		c.d.Peers[n.ip] = Peer{Address: n.ip, Port: n.port, ASN: n.asn, LocalASN: c.me.asn, Type: PeerMesh,
			Source: "mesh", Node: n.name, Password: pw, LocalAddress: c.me.ip,
			KeepaliveTime: DefaultKeepaliveTime, HoldTime: DefaultHoldTime, MaxRestartTime: restart,
			NextHopMode: v1.NextHopAuto}
	}
}

// Community is a parsed BGP community: standard (AA:NN) or large (AA:NN:MM).
type Community struct {
	Large bool
	// Standard is AA<<16 | NN.
	Standard uint32
	// Global, Local1, Local2 are the parts of a large community.
	Global, Local1, Local2 uint32
}

// ParseCommunity parses "AA:NN" (16-bit parts) or "AA:NN:MM" (32-bit parts).
func ParseCommunity(s string) (Community, error) {
	parts := strings.Split(s, ":")
	bits := 16
	if len(parts) == 3 {
		bits = 32
	} else if len(parts) != 2 {
		return Community{}, fmt.Errorf("community %q: want AA:NN or AA:NN:MM", s)
	}
	var n [3]uint32
	for i, part := range parts {
		v, err := strconv.ParseUint(part, 10, bits)
		if err != nil {
			return Community{}, fmt.Errorf("community %q: part %q: %w", s, part, err)
		}
		n[i] = uint32(v)
	}
	if bits == 16 {
		return Community{Standard: n[0]<<16 | n[1]}, nil
	}
	return Community{Large: true, Global: n[0], Local1: n[1], Local2: n[2]}, nil
}
