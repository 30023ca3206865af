// Package policy is the end-to-end NetworkPolicy conformance suite: it replays the
// Cyclonus cases of test/conformance/netpol-cases.jsonl.gz with real traffic through
// Tabby's eBPF datapath. It holds tests only.
//
// One real node: etcd and kube-apiserver from test/k8senv, a fabric (test/fabric) with
// one node namespace running tabby-node with --policy=true (its BPF pins on a private
// bpffs the test mounts and unmounts), the namespaces x, y and z with the recorded
// labels, and the nine recorded pods made through the real CNI plugin (cnitool, as a
// kubelet would) with the recorded labels, container ports named serve-<port>-<proto>
// (80 and 81 on tcp, udp and sctp) and static addresses. Every pod runs test/probe's
// servers, in process.
//
// Addresses: the recorded pod addresses 192.168.1.N become 10.78.1.N (an IPPool of
// 10.78.1.0/24 and the tabby.dev/ipAddrs annotation), and ipBlock CIDRs are remapped
// the same way (192.168.1.0/24 except 192.168.1.0/28 becomes 10.78.1.0/24 except
// 10.78.1.0/28; 0.0.0.0/0 and 0.0.0.0/31 stay). The fabric is 10.78.0.0/24 and the
// node's uplink 10.78.255.0/24. All of it lives in namespaces the test makes.
//
// For each replayable step the test writes the step's policies to the apiserver, waits
// until the agent's local API reports the maps written from exactly those object
// versions (GET /policy), probes every cell concurrently (test/probe's matrix: a short
// first pass, then a long look at every cell that disagrees) and compares with the
// recorded Combined verdict, then deletes the policies and waits until the agent
// reports them gone. Cells from a pod to itself are counted as "loopback, not probed"
// (the traffic stays on the pod's loopback and crosses no datapath, like Cyclonus's
// --ignore-loopback). Steps whose recorded inputs equal an earlier step's but whose
// verdicts differ are not replayable (see felix/policy's conformance test) and are
// counted, not run.
//
// Everything (policies, pods, namespaces, the agent, the network namespaces, the BPF
// pins) is removed when the test ends, also on failure.
package policy
