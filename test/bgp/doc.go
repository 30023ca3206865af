// Package bgp holds the multi-node BGP end-to-end suites, each on its own
// test/fabric cluster: node network namespaces on a shared fabric (a namespace with a
// Linux bridge), a real kube-apiserver (test/k8senv), tabby-node in each node namespace
// with the embedded BGP speaker, and pods wired by tabby-cni through cnitool.
//
//   - TestBGPMesh: two nodes mesh over iBGP; each kernel learns the other's block
//     (protocol 117, via the other node's fabric address), the pods ping across, and
//     tabbyctl bgp peers / node status show the session; then graceful restart: node
//     A's agent stops with SIGTERM, B keeps the route, the pods still ping, and A comes
//     back as restarting with the session Established again.
//   - TestRouteReflector: four nodes, mesh off, one route reflector chosen by label and
//     routeReflectorClusterID; every node learns every block with the original next
//     hop, clients have sessions only to the reflector, pods ping across clients.
//   - TestToR*: a top-of-rack router we did not write (FRR, BIRD 2, gobgpd, run by
//     test/router) peering eBGP with the nodes: RIB checks with the router's own CLI,
//     TCP MD5, maxPrefixes and graceful restart across a SIGKILL of an agent.
//
// They need root, ip, ping, cnitool (hack/cnitool.sh), the Kubernetes binaries
// (hack/k8s-bins.sh) and, for the ToR suites, frr, bird2 and gobgpd; outside CI=true a
// missing component skips loudly, under CI=true it fails. They use only the namespaces
// they create (prefix tabbyb-) and the addresses 10.73.0.0/16 (fabric and uplinks) and
// 10.74.0.0/16 (pools and router prefixes); everything is removed in t.Cleanup.
package bgp
