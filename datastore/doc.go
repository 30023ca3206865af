// Package datastore is Tabby's one way to read and write resources: a Store interface
// with get, list, create, update (compare-and-swap on resourceVersion), delete and watch
// (list then watch, relisting on errors and on a resync period), over the Tabby CRDs and
// the core Kubernetes objects the agent needs (Nodes, Pods, Namespaces, networking.k8s.io
// NetworkPolicies, Secrets).
//
// Two backends share one implementation of that behaviour: NewKube, over a real
// kube-apiserver with client-go, and NewMemory, an in-process store for unit tests only.
// Every write of a Tabby resource is defaulted and validated by api/v1 first (IPPools
// also against the other pools); a rejected object is never written.
//
// It imports api/v1 and client-go; it does no kernel I/O.
package datastore
