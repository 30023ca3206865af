package controller

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
)

// PeerType says why a session exists; it is status.bgp.peers[].type.
type PeerType string

// Peer types.
const (
	// PeerMesh is a node-to-node mesh session with another Tabby node.
	PeerMesh PeerType = "mesh"
	// PeerGlobal comes from a BGPPeer that names neither node nor nodeSelector.
	PeerGlobal PeerType = "global"
	// PeerNode comes from a BGPPeer limited by node or nodeSelector.
	PeerNode PeerType = "node"
	// PeerReflector comes from a BGPPeer peerSelector between two Tabby nodes of which
	// at least one is a route reflector (spec.bgp.routeReflectorClusterID).
	PeerReflector PeerType = "reflector"
)

// Session defaults, applied when a BGPPeer or BGPConfiguration leaves them out.
const (
	DefaultKeepaliveTime  = 30 * time.Second
	DefaultHoldTime       = 90 * time.Second
	DefaultMaxRestartTime = 120 * time.Second
	// DefaultSecretNamespace holds the Secrets that BGP passwords name.
	DefaultSecretNamespace = "tabby-system"
)

// Global is the speaker's own identity.
type Global struct {
	// RouterID is the node's IPv4 address.
	RouterID netip.Addr
	// ASN is the node's AS: spec.bgp.asNumber, else the default BGPConfiguration's, else
	// 64512.
	ASN uint32
	// ListenPort: node.<name> BGPConfiguration, else default, else 179.
	ListenPort uint16
}

// Peer is one BGP session the node should have, every default resolved.
type Peer struct {
	// Address and Port of the peer (Port is the peer node's listen port for Tabby nodes,
	// 179 for an external peer that names none).
	Address netip.Addr
	Port    uint16
	// ASN of the peer; LocalASN is this side's AS on the session.
	ASN      uint32
	LocalASN uint32
	Type     PeerType
	// Source names what asked for the session: "mesh" or "BGPPeer <name>".
	Source string
	// Node is the Tabby node at Address, "" for an external router.
	Node string
	// RRClient: this node is a route reflector and the peer is its client.
	RRClient bool
	// RRClusterID is this node's cluster ID when RRClient.
	RRClusterID string
	// Password for TCP MD5, resolved from its Secret; "" for none.
	Password string
	// LocalAddress is the source of the session (the node IP), or invalid for the
	// kernel's choice (sourceAddress None).
	LocalAddress   netip.Addr
	KeepaliveTime  time.Duration
	HoldTime       time.Duration
	MaxRestartTime time.Duration
	// TTLSecurity (GTSM hops), MaxPrefixes: 0 means off.
	TTLSecurity uint8
	MaxPrefixes uint32
	// AllowOwnAS accepts routes with our AS this many times in the path.
	AllowOwnAS uint8
	// NextHopMode is Auto, Self or Keep.
	NextHopMode v1.NextHopMode
	// ThirdPartyNextHops: when the peer is an eBGP router on the node's subnet and
	// NextHopMode is Auto, the other nodes on that subnet; routes of theirs passed on
	// to the peer keep them as next hop.
	ThirdPartyNextHops []netip.Addr
}

// Advert is one prefix the node originates.
type Advert struct {
	Prefix netip.Prefix
	// Communities are literal values, "AA:NN" or "AA:NN:MM", sorted and unique.
	Communities []string
	// Borrowed: a single address of another node's block, held by this node.
	Borrowed bool
}

// Equal compares two adverts.
func (a Advert) Equal(b Advert) bool {
	return a.Prefix == b.Prefix && a.Borrowed == b.Borrowed && slices.Equal(a.Communities, b.Communities)
}

// Problem is an object Calc skipped (wholly or partly), and why.
type Problem struct {
	// Object is "<Kind> <name>".
	Object string
	Reason string
}

func (p Problem) String() string { return p.Object + ": " + p.Reason }

// Desired is everything the node's speaker should be.
type Desired struct {
	// Global is nil when BGP cannot run on this node (no Node, no IPv4 address): then
	// there are no peers and no adverts.
	Global *Global
	// Peers by address. A Peer is comparable: equal peers configure the speaker alike.
	Peers map[netip.Addr]Peer
	// Filters holds the BGPFilters of the peers that name some, in order.
	Filters map[netip.Addr][]NamedFilter
	// Adverts by prefix.
	Adverts map[netip.Prefix]Advert
	// Pools are the IPPool CIDRs (every pool, enabled or not), sorted; NoExport those
	// of the pools with disableBGPExport.
	Pools    []netip.Prefix
	NoExport []netip.Prefix
	// Own holds the prefixes that are this node's: its affine blocks (exported or
	// not) and the addresses it borrowed. It never takes a route to one of them.
	Own map[netip.Prefix]bool
	// Problems lists what was skipped, sorted.
	Problems []Problem
	// LogSeverity is the speaker's requested log level ("" for the default).
	LogSeverity string
}

// String prints a Desired compactly and deterministically (for golden tests and logs).
func (d *Desired) String() string {
	var b strings.Builder
	if d.Global == nil {
		b.WriteString("global: none\n")
	} else {
		fmt.Fprintf(&b, "global: router-id %s as %d port %d\n", d.Global.RouterID, d.Global.ASN, d.Global.ListenPort)
	}
	for _, a := range sortedKeys(d.Peers, netip.Addr.Compare) {
		p := d.Peers[a]
		fmt.Fprintf(&b, "peer %s port %d as %d local-as %d type %s (%s)", p.Address, p.Port, p.ASN, p.LocalASN, p.Type, p.Source)
		if p.Node != "" {
			fmt.Fprintf(&b, " node %s", p.Node)
		}
		if p.RRClient {
			fmt.Fprintf(&b, " rr-client cluster %s", p.RRClusterID)
		}
		if p.Password != "" {
			b.WriteString(" password")
		}
		if p.LocalAddress.IsValid() {
			fmt.Fprintf(&b, " source %s", p.LocalAddress)
		}
		fmt.Fprintf(&b, " timers %s/%s restart %s", p.KeepaliveTime, p.HoldTime, p.MaxRestartTime)
		if p.TTLSecurity > 0 {
			fmt.Fprintf(&b, " ttl-security %d", p.TTLSecurity)
		}
		if p.MaxPrefixes > 0 {
			fmt.Fprintf(&b, " max-prefixes %d", p.MaxPrefixes)
		}
		if p.AllowOwnAS > 0 {
			fmt.Fprintf(&b, " allow-own-as %d", p.AllowOwnAS)
		}
		if p.NextHopMode != v1.NextHopAuto {
			fmt.Fprintf(&b, " next-hop %s", p.NextHopMode)
		}
		if len(p.ThirdPartyNextHops) > 0 {
			fmt.Fprintf(&b, " third-party-next-hops %v", p.ThirdPartyNextHops)
		}
		for _, f := range d.Filters[a] {
			fmt.Fprintf(&b, " filter %s", f.Name)
		}
		b.WriteString("\n")
	}
	for _, pfx := range sortedKeys(d.Adverts, comparePrefix) {
		a := d.Adverts[pfx]
		fmt.Fprintf(&b, "advertise %s", pfx)
		if a.Borrowed {
			b.WriteString(" borrowed")
		}
		if len(a.Communities) > 0 {
			fmt.Fprintf(&b, " communities %s", strings.Join(a.Communities, ","))
		}
		b.WriteString("\n")
	}
	for _, p := range d.Pools {
		fmt.Fprintf(&b, "pool %s", p)
		if slices.Contains(d.NoExport, p) {
			b.WriteString(" no-export")
		}
		b.WriteString("\n")
	}
	for _, p := range d.Problems {
		fmt.Fprintf(&b, "problem %s\n", p)
	}
	return b.String()
}

func sortedKeys[K comparable, V any](m map[K]V, cmp func(a, b K) int) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.SortFunc(out, cmp)
	return out
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}
