// Package controller turns datastore state into the configuration of this node's BGP
// speaker (package bgp) and the speaker's best paths into felix's learned routes.
//
// It owns:
//   - Calc, a pure function: Nodes, BGPConfigurations, BGPPeers, BGPFilters, IPPools,
//     IPAMBlocks and Secrets in, the node's Desired speaker state out (router ID, AS and
//     listen port; mesh, global, node-specific and route-reflector sessions with every
//     default resolved; the prefixes to advertise with their communities; the import
//     policy of each session). Bad objects are skipped and reported, never fatal;
//   - Reconciler: the difference between Desired and what it last applied, as
//     AddPeer/UpdatePeer/RemovePeer and Advertise/Withdraw calls;
//   - Learned: the speaker's Watch events through the import policy, handed on as the
//     whole learned set (ECMP next hops kept), debounced, first after End-of-RIB;
//   - StatusWriter: the tabby.dev NodeStatus "<node>" status.bgp, periodically and on
//     session changes;
//   - Controller: the datastore watches and the loop that ties these together.
//
// It imports api/v1, datastore, bgp and felix (for felix.LearnedRoute only); it does no
// kernel I/O. See docs/bgp.md, section "controller".
package controller
