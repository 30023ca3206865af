package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Speaker is a BGP router as Tabby uses it: sessions to peers, locally originated
// prefixes, and the best paths it learns. No type of the underlying implementation
// (gobgp) crosses this interface.
type Speaker interface {
	// Start runs the router with its identity and listener. It is called once.
	Start(ctx context.Context, g Global) error
	// AddPeer configures a session; the speaker connects (unless Passive) and accepts.
	AddPeer(ctx context.Context, p Peer) error
	// UpdatePeer changes a session's configuration. A change of the filters or the
	// next-hop mode is applied with a soft reset, keeping the session up; a change of the
	// type label just relabels; any other change re-creates the session (Cease).
	UpdatePeer(ctx context.Context, p Peer) error
	// RemovePeer closes the session with a Cease and forgets the peer's routes.
	RemovePeer(ctx context.Context, addr netip.Addr) error
	// Advertise originates prefix (or replaces its attributes if already originated).
	Advertise(ctx context.Context, prefix netip.Prefix, attrs PathAttrs) error
	// Withdraw stops originating prefix; withdrawing an unknown prefix is a no-op.
	Withdraw(ctx context.Context, prefix netip.Prefix) error
	// Peers reports every configured session.
	Peers(ctx context.Context) ([]PeerState, error)
	// Routes is the current set of learned best routes: what the route events on Watch
	// add up to.
	Routes(ctx context.Context) ([]Route, error)
	// Watch returns the speaker's one event channel (the same channel on every call).
	// The caller must drain it; it is closed when Stop returns.
	Watch() <-chan Event
	// Stop ends the router. graceful=true closes every graceful-restart session without
	// a NOTIFICATION, so peers keep our routes (stale) until a restarted speaker
	// (Global.LocalRestarting) refreshes them; graceful=false sends a Cease to every peer.
	Stop(ctx context.Context, graceful bool) error
}

// Global is the identity and listener of a speaker.
type Global struct {
	// RouterID is the BGP identifier: an IPv4 address, normally the node's.
	RouterID netip.Addr
	// ASN is the local AS number.
	ASN uint32
	// ListenAddresses are the addresses to accept sessions on; empty means every address
	// (0.0.0.0 and ::).
	ListenAddresses []netip.Addr
	// ListenPort accepts sessions on this TCP port; 0 means no listener at all (every
	// session is then opened by us).
	ListenPort uint16
	// LocalRestarting says this speaker restarts after a graceful stop: sessions with
	// graceful restart set the Restart State bit in their OPEN, and our advertisements
	// wait until every such peer has sent End-of-RIB (or SelectionDeferral passes). It
	// applies to the peers added within SelectionDeferral of Start.
	LocalRestarting bool
	// SelectionDeferral bounds the wait for End-of-RIB when LocalRestarting; default
	// 120s.
	SelectionDeferral time.Duration
}

// DefaultSelectionDeferral is Global.SelectionDeferral when it is zero.
const DefaultSelectionDeferral = 120 * time.Second

// Peer types: labels only, reported in PeerState and NodeStatus.
const (
	PeerTypeMesh      = "mesh"
	PeerTypeGlobal    = "global"
	PeerTypeNode      = "node"
	PeerTypeReflector = "reflector"
)

// NextHopMode says what next hop we set on routes we send a peer.
type NextHopMode string

// Next-hop modes. Auto is BGP's default: self towards eBGP peers and for our own
// prefixes, unchanged for routes passed on to iBGP peers.
const (
	NextHopAuto NextHopMode = ""
	NextHopSelf NextHopMode = "Self"
	NextHopKeep NextHopMode = "Keep"
)

// Peer is one BGP session's configuration.
type Peer struct {
	// Address of the peer; the session's key.
	Address netip.Addr
	// Port of the peer; 0 means 179.
	Port uint16
	// LocalAddress is the source address of the session; zero lets the kernel choose.
	LocalAddress netip.Addr
	// ASN of the peer: equal to the local AS for iBGP, different for eBGP.
	ASN uint32
	// LocalASN overrides Global.ASN on this session.
	LocalASN uint32
	// Password turns on TCP MD5 (RFC 2385).
	Password string
	// KeepaliveTime and HoldTime of the session; zero means 30s and 90s (whole
	// seconds; HoldTime at least 3s).
	KeepaliveTime, HoldTime time.Duration
	// ConnectRetry is the wait between connection attempts; zero means 5s (at least 2s).
	ConnectRetry time.Duration
	// TTLSecurity turns on GTSM (RFC 5082): the peer may be at most this many hops
	// away; 0 is off.
	TTLSecurity uint8
	// MultihopTTL is the TTL of eBGP packets for a peer more than one hop away; 0 means
	// 1 (directly connected). Exclusive with TTLSecurity.
	MultihopTTL uint8
	// MaxPrefixes tears the session down (Cease, maximum number of prefixes) when the
	// peer sends more prefixes than this; 0 is no limit. The session stays down until
	// the peer is updated or re-added.
	MaxPrefixes uint32
	// GracefulRestart (RFC 4724) for the session's address family: when the session
	// drops without a NOTIFICATION we keep the peer's routes, marked stale, for the
	// restart time it advertised, and it keeps ours.
	GracefulRestart bool
	// RestartTime we advertise; zero means HoldTime.
	RestartTime time.Duration
	// RouteReflectorClient makes this speaker a route reflector for the peer.
	RouteReflectorClient bool
	// RouteReflectorClusterID is the cluster ID (dotted IPv4) we reflect for; empty
	// means our router ID.
	RouteReflectorClusterID string
	// NextHop is what next hop we set on routes sent to the peer.
	NextHop NextHopMode
	// ThirdPartyNextHops, with NextHop Auto, are the other nodes on the subnet this
	// node shares with the peer: routes with one of them as next hop (another node's
	// block, passed on) go to the peer with that next hop unchanged, a third-party next
	// hop (RFC 4271 5.1.3), so the peer forwards straight to the node that owns the
	// route. (Addresses, not the subnet: gobgp v4 keeps only the address of a prefix in
	// a next-hop condition.)
	ThirdPartyNextHops []netip.Addr
	// AllowOwnAS accepts routes whose AS path holds our AS up to this many times (eBGP
	// behind a ToR where every node has the same AS).
	AllowOwnAS int
	// Passive waits for the peer to connect.
	Passive bool
	// Type is a label: mesh, global, node or reflector.
	Type string
	// Import and Export filter the routes we accept from and send to the peer; nil
	// accepts everything.
	Import, Export *PrefixPolicy
}

// PathAttrs are the attributes of a prefix we originate.
type PathAttrs struct {
	// NextHop to advertise; zero means the session's local address (next hop self).
	NextHop netip.Addr
	// Communities are "AA:NN" standard, "AA:NN:MM" large communities, or the well-known
	// names no-export, no-advertise, no-export-subconfed, no-peer.
	Communities []string
	// LocalPref sent to iBGP peers; 0 means the default (100).
	LocalPref uint32
	// MED; 0 means none.
	MED uint32
}

// SessionState is a BGP FSM state.
type SessionState string

// Session states.
const (
	StateIdle        SessionState = "Idle"
	StateConnect     SessionState = "Connect"
	StateActive      SessionState = "Active"
	StateOpenSent    SessionState = "OpenSent"
	StateOpenConfirm SessionState = "OpenConfirm"
	StateEstablished SessionState = "Established"
)

// PeerState is one session as the speaker sees it.
type PeerState struct {
	Address netip.Addr
	Type    string
	ASN     uint32
	State   SessionState
	// Since is when the session entered State (or was configured).
	Since time.Time
	// PrefixesReceived is what the peer sent us; PrefixesAccepted what passed the AS-path
	// loop and originator checks (the import filter applies after); PrefixesAdvertised
	// what we send it, recounted after a change at most once a second, less often the
	// longer counting takes (it walks the whole table), and at least every 30 s.
	PrefixesReceived, PrefixesAccepted, PrefixesAdvertised int
	// LastError is why the session last went down: a NOTIFICATION sent or received, a
	// read error, the hold timer, the prefix limit...; empty if it never did.
	LastError string
	// AdminDown is true when the session is held down (e.g. after MaxPrefixes).
	AdminDown bool
	// Flaps counts the times the session left Established; UpdatesReceived and
	// UpdatesSent count UPDATE messages. All three count since this speaker started.
	Flaps                        int
	UpdatesReceived, UpdatesSent uint64
}

// EventKind says what an Event reports.
type EventKind int

// Event kinds.
const (
	// EventRoute: the learned best paths of Prefix changed.
	EventRoute EventKind = iota + 1
	// EventPeer: a session changed state.
	EventPeer
	// EventEndOfRIB: a peer finished sending its routes of one address family.
	EventEndOfRIB
)

func (k EventKind) String() string {
	switch k {
	case EventRoute:
		return "route"
	case EventPeer:
		return "peer"
	case EventEndOfRIB:
		return "end-of-rib"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is one change seen by the speaker.
type Event struct {
	Kind EventKind
	// Route (EventRoute): Prefix and its best-path next hops (several for ECMP, sorted);
	// Withdrawn when no learned path is left. Paths a restarting peer's routes keep under
	// graceful restart are reported as they were. Prefixes we originate ourselves are not
	// reported.
	Prefix    netip.Prefix
	NextHops  []netip.Addr
	Withdrawn bool
	// Peer (EventPeer, EventEndOfRIB) and its new State; Reason says why it left
	// Established (EventPeer).
	Peer   netip.Addr
	State  SessionState
	Reason string
	// IPv6 (EventEndOfRIB): the address family is IPv6 unicast, else IPv4 unicast.
	IPv6 bool
}

// Route is a learned prefix and its best-path next hops.
type Route struct {
	Prefix   netip.Prefix
	NextHops []netip.Addr
}

// ErrNotStarted is returned by calls made before Start or after Stop.
var ErrNotStarted = errors.New("bgp speaker is not running")

func (g *Global) validate() error {
	if !g.RouterID.Is4() {
		return fmt.Errorf("router id %q is not an IPv4 address", g.RouterID)
	}
	if g.ASN == 0 {
		return errors.New("local as number is 0")
	}
	for _, a := range g.ListenAddresses {
		if !a.IsValid() {
			return errors.New("listen address is not valid")
		}
	}
	return nil
}

func (p *Peer) validate() error {
	if !p.Address.IsValid() {
		return errors.New("peer address is not valid")
	}
	if p.ASN == 0 {
		return fmt.Errorf("peer %s: as number is 0", p.Address)
	}
	if p.LocalAddress.IsValid() && p.LocalAddress.Unmap().Is4() != p.Address.Unmap().Is4() {
		return fmt.Errorf("peer %s: local address %s is of another family", p.Address, p.LocalAddress)
	}
	if p.HoldTime != 0 && p.HoldTime < 3*time.Second {
		return fmt.Errorf("peer %s: hold time %s is under 3s", p.Address, p.HoldTime)
	}
	if p.KeepaliveTime < 0 || p.HoldTime < 0 || p.ConnectRetry < 0 || p.RestartTime < 0 {
		return fmt.Errorf("peer %s: negative time", p.Address)
	}
	if p.TTLSecurity != 0 && p.MultihopTTL != 0 {
		return fmt.Errorf("peer %s: ttl security and multihop ttl are exclusive", p.Address)
	}
	if p.AllowOwnAS < 0 || p.AllowOwnAS > 10 {
		return fmt.Errorf("peer %s: allow own as %d is not in 0-10", p.Address, p.AllowOwnAS)
	}
	if p.RouteReflectorClusterID != "" {
		id, err := netip.ParseAddr(p.RouteReflectorClusterID)
		if err != nil || !id.Is4() {
			return fmt.Errorf("peer %s: route reflector cluster id %q is not a dotted IPv4 address",
				p.Address, p.RouteReflectorClusterID)
		}
	}
	switch p.NextHop {
	case NextHopAuto, NextHopSelf, NextHopKeep:
	default:
		return fmt.Errorf("peer %s: next hop mode %q is not Self or Keep", p.Address, p.NextHop)
	}
	for _, f := range []*PrefixPolicy{p.Import, p.Export} {
		if err := f.validate(); err != nil {
			return fmt.Errorf("peer %s: %w", p.Address, err)
		}
	}
	return nil
}
