// Package lab is the end-to-end test of the lab (tabbyctl lab, package lab/): it builds
// tabbyctl, tabby-node and tabby-cni, runs `tabbyctl lab up --nodes 2` as a person
// would (a subprocess, which starts the detached supervisor), checks the exit code and
// the JSON report (every node ready, every BGP session Established from both ends,
// every pod reaching every other in the connectivity matrix), lab status, lab exec
// (exit codes passed through) and lab up on the running lab (reported, nothing new);
// then `tabbyctl lab down` twice (the second a no-op) and that nothing is left: no
// network namespace named after the lab, no process of it (supervisor, tabby-node,
// zebra/bgpd, etcd, kube-apiserver), no state directory, no new interface or route in
// the host's namespace, no cnitool result, FRR crash-log directory or BPF pin.
//
// The lab has a name and state directory of its own (tlab<random>, under the temporary
// directory), so it never meets a person's lab or another test's namespaces. It needs
// root, ip, ping, FRR, cnitool (hack/cnitool.sh) and the Kubernetes binaries
// (hack/k8s-bins.sh); outside CI=true a missing one skips loudly, under CI=true it
// fails.
package lab
