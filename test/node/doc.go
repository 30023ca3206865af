// Package node is the integration suite of the per-node agent (cmd/tabby-node) against
// the real components: a kube-apiserver with Tabby's CRDs (test/k8senv), the CNI plugin
// run by cnitool (hack/cnitool.sh) to wire pods, and network namespaces made by the
// test.
//
// The test plays a node: a "node" network namespace with forwarding on and a default
// route through a veth to a stub namespace, a loopback port inside it forwarded to the
// apiserver, pods as namespaces wired by the plugin, and tabby-node started inside the
// node namespace with `ip netns exec`, its socket, node-name file and logs in a
// temporary directory. It checks what the agent programs (workload /32 routes with
// protocol 116, blackholes for the node's blocks, sysctls), that drift is repaired,
// that it touches no route that is not its own, what `tabbyctl node` shows, and that a
// continuous ping between two pods loses nothing while the agent is stopped
// (SIGTERM, or SIGKILL leaving a stale socket) and started again.
//
// Every name and address range is the test's own, and everything (agent processes,
// namespaces, objects) is removed in t.Cleanup, also when a test fails. The tests need
// root, the kube-apiserver build and cnitool; outside CI=true they skip loudly when one
// is missing, under CI=true they fail.
package node
