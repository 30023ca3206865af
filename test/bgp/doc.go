// Package bgp is the two-node BGP end-to-end suite: two node network namespaces
// on a shared fabric (a third namespace with a Linux bridge), a real kube-apiserver
// (test/k8senv), tabby-node in each node namespace meshing over the fabric with the
// embedded BGP speaker, and one pod per node wired with tabby-cni through cnitool. It
// checks that each node's kernel learns the other's block (protocol 117, via the other
// node's fabric address), that the pods ping each other across the nodes, and that
// tabbyctl bgp peers and tabbyctl node status show the mesh session Established. Then
// it stops node A's agent with SIGTERM and checks graceful restart: node B keeps the
// route to A's block, the pods still ping, and A comes back as restarting (it finds its
// learned routes) with the session Established again.
//
// It needs root, ip, ping, cnitool (hack/cnitool.sh) and the Kubernetes binaries
// (hack/k8s-bins.sh); outside CI=true a missing component skips it loudly. It uses only
// the namespaces it creates (prefix tabbyb-) and the addresses 10.73.0.0/16 (fabric and
// uplinks) and 10.74.0.0/16 (the pool); everything is removed in t.Cleanup.
package bgp
