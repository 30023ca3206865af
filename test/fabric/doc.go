// Package fabric is test, benchmark and lab scaffolding for a Tabby cluster of several
// nodes in network namespaces on one machine: the multi-node integration suites
// (test/bgp), the BGP benchmarks and the lab build on it. It is never used by
// production code.
//
// The package owns:
//
//   - the fabric: a network namespace holding a bridge (br0) that every node and router
//     namespace joins with a veth, inside the caller's subnet, see [New];
//   - nodes: a [netnode.Node] per node (with its stub default route, so proxy ARP
//     answers the pods' 169.254.1.1) joined to the fabric as fab0, a kubeconfig that
//     reaches the kube-apiserver from inside, a CNI network for tabby-cni, and the
//     tabby-node process (start, SIGTERM, SIGKILL), see [Cluster.AddNode] and [Node];
//   - pods: a Pod object in the apiserver plus a network namespace wired by cnitool, as
//     a kubelet would, see [Node.AddPod];
//   - router namespaces on the fabric for a top-of-rack router (test/router runs the
//     daemon in it), see [Cluster.AddRouter];
//   - teardown of all of it, last made first, once, see [Cluster.Close].
//
// Addresses: node i is host i+1 of Options.Subnet on the fabric; routers take hosts
// from the top of the subnet; each node's uplink to its stub is the /30 number i of
// Options.Uplinks. Every namespace name starts with Options.Prefix. The package never
// touches the host's namespace beyond creating and deleting its own namespaces.
package fabric
