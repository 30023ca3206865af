// Package felix is Tabby's per-node dataplane agent core, after Calico's felix: it
// watches this node's WorkloadEndpoints and affine IPAMBlocks in the datastore, takes
// the routes the BGP speaker learned, works out the desired dataplane (felix/calc) and
// makes the kernel match it (felix/dataplane): a /32 route to each local workload
// through its interface, a blackhole for each of the node's blocks, the learned routes
// (ECMP when several next hops), and proxy-ARP/forwarding sysctls on each workload
// interface.
//
// Updates are cheap and do no kernel I/O: a datastore event or SetLearnedRoutes changes
// the calculation graph and wakes the single apply goroutine, which writes what changed
// since its last run (changes that arrive while it works go together in the next batch).
// The reconcilers are level-triggered: a full resync every ResyncInterval (and at
// start) compares the whole desired state with the kernel and repairs drift, and link
// and route events repair faster (a route deleted by hand, a veth that appears).
//
// Felix only touches what carries Tabby's marks (route protocols 116 and 117 in the
// main table) and removes nothing until every datastore watch has reported Synced: a
// restarting agent adopts the routes it finds. Stopping leaves the kernel as it is.
//
// The agent (cmd/tabby-node, agent/) wires it: datastore, logger, metrics registry, and
// the unix-socket API that serves Status, Routes and WaitEndpointProgrammed. It imports
// api/v1, datastore, felix/calc, felix/dataplane, netlink/netns, zap, prometheus and
// apimachinery's label validation; it does no kernel I/O itself (felix/dataplane does).
package felix
