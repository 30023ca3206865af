// Package cni is the integration suite of the CNI plugin (cmd/tabby-cni) against the
// real components: a kube-apiserver with Tabby's CRDs (test/k8senv), cnitool as the
// container runtime (hack/cnitool.sh), and network namespaces made by the test.
//
// The test plays a node: it creates a "node" network namespace with forwarding on and a
// default route through a veth to a stub namespace (so proxy ARP answers for
// 169.254.1.1), forwards a loopback port inside it to the apiserver, and runs cnitool
// and the plugin inside it, so veths, routes and sysctls land there and never in the
// host's namespace. Pods are namespaces too. Every name and address range is the
// test's own, and everything is removed in t.Cleanup, also when a test fails.
//
// The tests need root, the kube-apiserver build and cnitool; outside CI=true they skip
// loudly when one is missing, under CI=true they fail.
package cni
