// Package netnode is test and benchmark scaffolding for a Tabby node in network
// namespaces: the integration suites (test/cni, test/node) and the benchmarks
// (bench/cni-add, bench/wep-latency) play a node with it. It is never used by
// production code.
//
// The package owns:
//
//   - the node: a "node" network namespace with lo up and forwarding on, by default
//     with a veth (uplink0) to a stub namespace (uplink1) that is its default gateway,
//     so proxy ARP answers for 169.254.1.1; a netlink handle inside it; pod network
//     namespaces; commands and functions run inside it, see [New] and [Node];
//   - a loopback port inside the node namespace forwarded to the kube-apiserver on the
//     host's loopback, and kubeconfigs that point at it, see [Node.ForwardAPIServer]
//     and [WriteKubeconfig];
//   - the CNI runtime side: finding cnitool (hack/cnitool.sh), conflists, cnitool's
//     cached results, cnitool run inside the node namespace, see [FindCnitool] and
//     [Runtime];
//   - teardown: a cleanup stack that runs once, last step first, and the benchmarks'
//     handling of SIGINT/SIGTERM/SIGHUP, see [Cleanup]; names unique to one run, from
//     which a later run recognises what a killed one left behind, see [RunID] and
//     [SweepNetns];
//   - small helpers: building binaries ([Build]), running commands ([Run]), and for
//     tests skipping (or, under CI=true, failing) when a component is missing and
//     waiting on conditions ([Require], [WaitFor]).
//
// Every name and address range is the caller's: each user passes its own prefix and
// uplink addresses in [Options], so suites and benchmarks never collide. [Node.Close]
// removes everything the node made, also after a failure half-way through [New].
package netnode
