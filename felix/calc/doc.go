// Package calc is felix's calculation graph: from this node's WorkloadEndpoints, this
// node's affine IPAMBlocks and the routes the BGP speaker learned, it works out the
// dataplane the node should have (DesiredState): a /32 (or /128) route to each local
// workload address through its host-side interface, a blackhole for each block this
// node owns, a route (ECMP when several next hops) for each learned prefix, and the set
// of workload interfaces that need felix's sysctls.
//
// It is pure: no kernel or network I/O, no goroutines, not safe for concurrent use (the
// caller serialises). Updates are cheap and incremental; the Graph remembers which
// routes, interfaces and endpoints changed since TakeChanges was last called, so felix's
// apply loop writes only what changed. Bad objects (an address that does not parse, an
// interface name that could not exist) are logged, recorded as a problem of their
// endpoint, and skipped: they never stop the rest from being programmed.
//
// When two sources want the same prefix, a local workload route wins over a blackhole,
// and both win over a learned route; when two endpoints claim one address, the newer
// endpoint (creation time, then namespace/name) wins and the other reports the conflict.
//
// It imports api/v1 and zap only.
package calc
