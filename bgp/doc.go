// Package bgp is Tabby's BGP speaker: a small, vendor-neutral router interface
// (Speaker) and its one implementation on an embedded gobgp v4 server (NewGoBGP). It
// owns the sessions (node-to-node mesh, top-of-rack and other global or per-node peers,
// route reflector clients), what the node originates (its affine blocks, borrowed /32s,
// service ranges), per-peer prefix filters and next-hop mode, graceful restart, and the
// learned best paths with all their ECMP next hops.
//
// No gobgp type crosses the package boundary: callers speak Global, Peer, PathAttrs,
// PrefixPolicy, PeerState, Route and Event. The speaker does no kernel I/O: it never
// writes a route. Learned routes leave through Watch (and Routes) and the caller hands
// them to felix (felix.SetLearnedRoutes), which programs the kernel. Turning Nodes,
// BGPPeers, BGPConfiguration and IPAM blocks into peers and advertisements, and writing
// NodeStatus, is the caller's job too.
//
// Good to know about the embedded gobgp (see docs/bgp.md): per-peer filters are global
// policy statements scoped by neighbor sets (gobgp applies per-peer policies only to
// route-server clients); multipath and best-path options are process-wide in gobgp, so
// every speaker in a process runs with multipath on; a graceful Stop closes the sessions
// that negotiated graceful restart without a NOTIFICATION but may still send
// withdrawals for routes it passed on from other peers (transit, reflected) as those
// peers are torn down first: our own prefixes are never withdrawn.
//
// It imports gobgp and zap, and nothing of ours.
package bgp
