// Package dataplane is felix's kernel I/O: level-triggered reconcilers that compare the
// desired dataplane with what the kernel has and repair the difference.
//
//   - RouteTable owns every route of the main table that carries Tabby's marks (route
//     protocol routes.ProtocolLocal for workload /32s and block blackholes,
//     routes.ProtocolLearned for BGP-learned routes) and never touches any other route.
//     It keeps a cache of the kernel's state (a full dump on resync, its own writes, and
//     the link and route events it is fed), so applying a change costs one netlink call
//     per changed route. Routes whose interface is missing or down wait for the link to
//     appear or come up. Deletes can be held back (SetAllowDeletes) until the caller
//     knows its desired state is complete: a restarting agent adopts what is there and
//     removes nothing it is not sure about.
//   - Sysctls keeps proxy_arp=1, proxy_delay=0 and forwarding=1 on each workload
//     interface, writing only what differs, in the network namespace of the node.
//   - NSThread runs functions on an OS thread inside another network namespace (for
//     /proc/sys/net, which is per network namespace of the calling thread).
//   - Subscribe delivers link and route events of a network namespace.
//
// Every netlink call goes through one caller-supplied persistent *netlink.Handle; the
// package-level netlink functions (a socket per call) are never used on a hot path.
// Reconcilers are not safe for concurrent use: one goroutine (felix's apply loop)
// drives them. It imports felix/routes, felix/calc (for the shared route type; calc is pure),
// vishvananda/netlink and netns, and zap.
package dataplane
