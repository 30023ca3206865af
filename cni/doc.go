// Package cni is Tabby's CNI plugin (CNI spec 1.1, results for 0.4.0, 1.0.0 and 1.1.0):
// ADD, DEL, CHECK, STATUS, GC and VERSION for Kubernetes pods, with Tabby IPAM built in.
//
// It owns:
//   - the net config (JSON on stdin) and CNI_ARGS: parsing, defaults, the node name;
//   - naming: the host-side veth (cali + 11 hex chars of sha1("<namespace>.<pod>")) and
//     the WorkloadEndpoint (<node>-k8s-<pod>-<endpoint>);
//   - the pod's veth pair: the container side (address /32, a link route to 169.254.1.1
//     and the default route through it) and the host side (no address, proxy ARP,
//     forwarding, the workload's /32 route written through felix/routes);
//   - the WorkloadEndpoint built from the Pod (labels, named ports, service account);
//   - mapping every failure to a CNI error code (types.Error) with a clear message,
//     and undoing everything a failed ADD did, in reverse.
//
// Addresses come from ipam (an allocator over the datastore); the plugin reaches the
// datastore through the kubeconfig in the net config. Route writes are felix/routes'.
// cmd/tabby-cni only wires this package to skel and the allocator.
//
// It imports api/v1, datastore, ipam and felix/routes.
package cni
