package helm

import "fmt"

// The chart's two identities.
const (
	saNode = "tabby-node"
	saCNI  = "tabby-cni"
)

// secretNS is where the BGP password Secrets live in the tests: bgp.secretNamespace
// is empty in the test values, so the release namespace.
const secretNS = namespace

// Features a permission depends on: granted only when the value turns it on.
const (
	always     = ""
	featBGP    = "bgp"    // bgp.enabled
	featPolicy = "policy" // policy.enabled
	featVM     = "vm"     // vmEndpoints.enabled
)

// perm is one permission: verb on group/resource, in namespace ns ("" means every
// namespace, or a cluster-scoped resource).
type perm struct {
	sa, verb, group, resource, ns string
	feature                       string
	why                           string
}

func (p perm) String() string {
	g := p.group
	if g == "" {
		g = "core"
	}
	s := fmt.Sprintf("%s: %s %s/%s", p.sa, p.verb, g, p.resource)
	if p.ns != "" {
		s += " in " + p.ns
	}
	return s
}

// needed is THE list of what tabby-node and tabby-cni do with the API server, from an
// audit of every datastore.Store call in agent/, felix/, bgp/, ipam/, vmendpoint/, cni/
// and cmd/. A datastore Watch is a list followed by a watch; writes are Updates (no
// patch, no status subresource). The chart's RBAC (charts/tabby/templates/rbac.yaml)
// must grant each entry whose feature is on, and the tests below check it on a real
// API server.
var needed = []perm{
	// tabby-node, always.
	{saNode, "get", "", "nodes", "", always, "agent/register.go kubernetesAddresses: the Kubernetes Node's addresses"},
	{saNode, "get", "tabby.dev", "nodes", "", always, "agent/register.go Register, agent/agent.go datastore check: the node's own Node"},
	{saNode, "create", "tabby.dev", "nodes", "", always, "agent/register.go Register: a new node registers"},
	{saNode, "update", "tabby.dev", "nodes", "", always, "agent/register.go Register: the node's address changed"},
	{saNode, "list", "tabby.dev", "workloadendpoints", "", always, "felix/watch.go: endpoints to route to and police"},
	{saNode, "watch", "tabby.dev", "workloadendpoints", "", always, "felix/watch.go; podlabels/controller.go"},
	{saNode, "get", "tabby.dev", "workloadendpoints", "", always, "podlabels/controller.go: re-read after a conflict; vmendpoint/reconcile.go"},
	{saNode, "update", "tabby.dev", "workloadendpoints", "", always, "podlabels/controller.go: a pod's labels; vmendpoint/reconcile.go, migrate.go"},
	{saNode, "list", "", "pods", "", always, "podlabels/controller.go: this node's Pods (field selector spec.nodeName)"},
	{saNode, "watch", "", "pods", "", always, "podlabels/controller.go"},
	{saNode, "list", "tabby.dev", "ipamblocks", "", always, "felix/watch.go (this node's blocks); ipam/gc.go ReleaseEmptyBlocks from agent/blockgc.go"},
	{saNode, "watch", "tabby.dev", "ipamblocks", "", always, "felix/watch.go; bgp/controller/inputs.go"},
	{saNode, "update", "tabby.dev", "ipamblocks", "", always, "ipam/gc.go: marks an empty block"},
	{saNode, "delete", "tabby.dev", "ipamblocks", "", always, "ipam/gc.go: releases an empty block to its pool"},
	{saNode, "get", "tabby.dev", "blockaffinities", "", always, "ipam/gc.go releaseBlock"},
	{saNode, "update", "tabby.dev", "blockaffinities", "", always, "ipam/gc.go releaseBlock: pending deletion, or confirmed again"},
	{saNode, "delete", "tabby.dev", "blockaffinities", "", always, "ipam/gc.go releaseBlock"},
	// tabby-node, BGP speaker (bgp/controller).
	{saNode, "list", "tabby.dev", "nodes", "", featBGP, "bgp/controller/inputs.go: the mesh's nodes"},
	{saNode, "watch", "tabby.dev", "nodes", "", featBGP, "bgp/controller/inputs.go"},
	{saNode, "list", "tabby.dev", "bgpconfigurations", "", featBGP, "bgp/controller/inputs.go"},
	{saNode, "watch", "tabby.dev", "bgpconfigurations", "", featBGP, "bgp/controller/inputs.go"},
	{saNode, "list", "tabby.dev", "bgppeers", "", featBGP, "bgp/controller/inputs.go"},
	{saNode, "watch", "tabby.dev", "bgppeers", "", featBGP, "bgp/controller/inputs.go"},
	{saNode, "list", "tabby.dev", "bgpfilters", "", featBGP, "bgp/controller/inputs.go"},
	{saNode, "watch", "tabby.dev", "bgpfilters", "", featBGP, "bgp/controller/inputs.go"},
	{saNode, "list", "tabby.dev", "ippools", "", featBGP, "bgp/controller/inputs.go: pools to advertise"},
	{saNode, "watch", "tabby.dev", "ippools", "", featBGP, "bgp/controller/inputs.go"},
	{saNode, "get", "tabby.dev", "nodestatuses", "", featBGP, "bgp/controller/status.go: the node's BGP status"},
	{saNode, "create", "tabby.dev", "nodestatuses", "", featBGP, "bgp/controller/status.go"},
	{saNode, "update", "tabby.dev", "nodestatuses", "", featBGP, "bgp/controller/status.go"},
	{saNode, "list", "", "secrets", secretNS, featBGP, "bgp/controller/controller.go: BGP passwords, only in --bgp-secret-namespace"},
	{saNode, "watch", "", "secrets", secretNS, featBGP, "bgp/controller/controller.go"},
	// tabby-node, policy (felix/enforce.go policyKinds).
	{saNode, "list", "networking.k8s.io", "networkpolicies", "", featPolicy, "felix/enforce.go: Kubernetes NetworkPolicy"},
	{saNode, "watch", "networking.k8s.io", "networkpolicies", "", featPolicy, "felix/enforce.go"},
	{saNode, "list", "", "namespaces", "", featPolicy, "felix/enforce.go: namespace selectors"},
	{saNode, "watch", "", "namespaces", "", featPolicy, "felix/enforce.go"},
	{saNode, "list", "tabby.dev", "networkpolicies", "", featPolicy, "felix/enforce.go"},
	{saNode, "watch", "tabby.dev", "networkpolicies", "", featPolicy, "felix/enforce.go"},
	{saNode, "list", "tabby.dev", "globalnetworkpolicies", "", featPolicy, "felix/enforce.go"},
	{saNode, "watch", "tabby.dev", "globalnetworkpolicies", "", featPolicy, "felix/enforce.go"},
	{saNode, "list", "tabby.dev", "networksets", "", featPolicy, "felix/enforce.go"},
	{saNode, "watch", "tabby.dev", "networksets", "", featPolicy, "felix/enforce.go"},
	{saNode, "list", "tabby.dev", "globalnetworksets", "", featPolicy, "felix/enforce.go"},
	{saNode, "watch", "tabby.dev", "globalnetworksets", "", featPolicy, "felix/enforce.go"},
	// tabby-node, VM endpoints (vmendpoint/reconcile.go and the IPAM calls it makes:
	// Assign, Adopt, AddressesOf, Lookup, ReleaseHandle).
	{saNode, "create", "tabby.dev", "workloadendpoints", "", featVM, "vmendpoint/reconcile.go"},
	{saNode, "delete", "tabby.dev", "workloadendpoints", "", featVM, "vmendpoint/reconcile.go: a guest went away"},
	{saNode, "get", "tabby.dev", "ipamhandles", "", featVM, "ipam/handle.go"},
	{saNode, "list", "tabby.dev", "ipamhandles", "", featVM, "vmendpoint/reconcile.go: handles of guests on this node"},
	{saNode, "create", "tabby.dev", "ipamhandles", "", featVM, "ipam/handle.go"},
	{saNode, "update", "tabby.dev", "ipamhandles", "", featVM, "ipam/handle.go"},
	{saNode, "delete", "tabby.dev", "ipamhandles", "", featVM, "ipam/handle.go: the last address of a handle released"},
	{saNode, "get", "tabby.dev", "ipamblocks", "", featVM, "ipam/allocator.go, handle.go, adopt.go, static.go"},
	{saNode, "create", "tabby.dev", "ipamblocks", "", featVM, "ipam/claim.go: a node claims a block"},
	{saNode, "create", "tabby.dev", "blockaffinities", "", featVM, "ipam/claim.go"},
	{saNode, "get", "tabby.dev", "ipamconfigurations", "", featVM, "ipam/pools.go: the IPAM settings"},
	{saNode, "list", "tabby.dev", "ippools", "", featVM, "ipam/pools.go"},
	{saNode, "list", "tabby.dev", "ipreservations", "", featVM, "ipam/pools.go"},

	// tabby-cni (cni/add.go, del.go, check.go, gc.go, status.go and the IPAM calls:
	// Assign, AddressesOf, ReleaseHandle, Warm).
	{saCNI, "get", "", "pods", "", always, "cni/add.go: the pod's labels and service account"},
	{saCNI, "get", "", "nodes", "", always, "ipam/pools.go nodeLabels: pools by node selector"},
	{saCNI, "get", "tabby.dev", "nodes", "", always, "ipam/pools.go nodeLabels"},
	{saCNI, "get", "tabby.dev", "ipamconfigurations", "", always, "ipam/pools.go"},
	{saCNI, "get", "tabby.dev", "workloadendpoints", "", always, "cni/add.go, del.go, check.go"},
	{saCNI, "list", "tabby.dev", "workloadendpoints", "", always, "cni/del.go nodeWEPs (GC)"},
	{saCNI, "create", "tabby.dev", "workloadendpoints", "", always, "cni/add.go"},
	{saCNI, "update", "tabby.dev", "workloadendpoints", "", always, "cni/add.go: an ADD again for the same pod"},
	{saCNI, "delete", "tabby.dev", "workloadendpoints", "", always, "cni/add.go, del.go"},
	{saCNI, "get", "tabby.dev", "ipamblocks", "", always, "ipam"},
	{saCNI, "list", "tabby.dev", "ipamblocks", "", always, "ipam/allocator.go, claim.go; cni/gc.go"},
	{saCNI, "create", "tabby.dev", "ipamblocks", "", always, "ipam/claim.go"},
	{saCNI, "update", "tabby.dev", "ipamblocks", "", always, "ipam/allocator.go commit, handle.go release"},
	{saCNI, "get", "tabby.dev", "blockaffinities", "", always, "ipam/claim.go"},
	{saCNI, "create", "tabby.dev", "blockaffinities", "", always, "ipam/claim.go"},
	{saCNI, "update", "tabby.dev", "blockaffinities", "", always, "ipam/claim.go: confirm"},
	{saCNI, "delete", "tabby.dev", "blockaffinities", "", always, "ipam/claim.go dropAffinity: a lost race"},
	{saCNI, "get", "tabby.dev", "ipamhandles", "", always, "ipam/handle.go"},
	{saCNI, "create", "tabby.dev", "ipamhandles", "", always, "ipam/handle.go"},
	{saCNI, "update", "tabby.dev", "ipamhandles", "", always, "ipam/handle.go"},
	{saCNI, "delete", "tabby.dev", "ipamhandles", "", always, "ipam/handle.go"},
	{saCNI, "list", "tabby.dev", "ippools", "", always, "ipam/pools.go; cni/status.go"},
	{saCNI, "list", "tabby.dev", "ipreservations", "", always, "ipam/pools.go"},
}

// denied are broader permissions neither identity may have.
var denied = []perm{
	{sa: saNode, verb: "get", resource: "pods"},
	{sa: saNode, verb: "delete", resource: "pods"},
	{sa: saNode, verb: "create", resource: "pods"},
	{sa: saNode, verb: "get", resource: "secrets", ns: "kube-system"},
	{sa: saNode, verb: "list", resource: "secrets", ns: "kube-system"},
	{sa: saNode, verb: "list", resource: "secrets"},                 // every namespace
	{sa: saNode, verb: "get", resource: "secrets", ns: secretNS},    // list/watch only
	{sa: saNode, verb: "create", resource: "secrets", ns: secretNS}, // read only
	{sa: saNode, verb: "create", resource: "namespaces"},
	{sa: saNode, verb: "delete", resource: "nodes"},
	{sa: saNode, verb: "update", resource: "nodes"},
	{sa: saNode, verb: "list", resource: "nodes"},
	{sa: saNode, verb: "patch", group: "tabby.dev", resource: "nodes"},
	{sa: saNode, verb: "delete", group: "tabby.dev", resource: "nodes"},
	{sa: saNode, verb: "create", group: "tabby.dev", resource: "ippools"},
	{sa: saNode, verb: "delete", group: "tabby.dev", resource: "ippools"},
	{sa: saNode, verb: "update", group: "tabby.dev", resource: "bgppeers"},
	{sa: saNode, verb: "update", group: "tabby.dev", resource: "ipamconfigurations"},
	{sa: saNode, verb: "delete", group: "tabby.dev", resource: "nodestatuses"},
	{sa: saNode, verb: "list", group: "tabby.dev", resource: "hostendpoints"},       // never read
	{sa: saNode, verb: "list", group: "tabby.dev", resource: "felixconfigurations"}, // never read
	{sa: saNode, verb: "create", group: "tabby.dev", resource: "networkpolicies"},
	{sa: saNode, verb: "create", group: "rbac.authorization.k8s.io", resource: "clusterroles"},
	{sa: saNode, verb: "create", group: "rbac.authorization.k8s.io", resource: "clusterrolebindings"},
	{sa: saCNI, verb: "list", resource: "secrets"},
	{sa: saCNI, verb: "get", resource: "secrets", ns: secretNS},
	{sa: saCNI, verb: "list", resource: "pods"},
	{sa: saCNI, verb: "delete", resource: "pods"},
	{sa: saCNI, verb: "update", resource: "nodes"},
	{sa: saCNI, verb: "watch", group: "tabby.dev", resource: "workloadendpoints"},
	{sa: saCNI, verb: "delete", group: "tabby.dev", resource: "ipamblocks"},
	{sa: saCNI, verb: "create", group: "tabby.dev", resource: "ippools"},
	{sa: saCNI, verb: "update", group: "tabby.dev", resource: "nodes"},
	{sa: saCNI, verb: "list", group: "tabby.dev", resource: "bgppeers"},
	{sa: saCNI, verb: "create", group: "tabby.dev", resource: "nodestatuses"},
}
