// Package vm holds the end-to-end suite of VM endpoints: a real libvirt guest (QEMU
// TCG, test/vmguest) whose tap sits in node A of a two-node test/fabric cluster, with
// tabby-node's libvirt watcher on (--vm-endpoints=true, a tap prefix unique to the run,
// so the node ignores other suites' domains on the machine's shared libvirtd), a real
// kube-apiserver (test/k8senv), BGP mesh between the nodes, and a pod on node B wired by
// tabby-cni through cnitool.
//
// It checks that the guest is configured only by Tabby's DHCP server with the address
// of its WorkloadEndpoint (orchestrator libvirt, labels from the domain's Tabby
// metadata); that it and the pod reach each other through BGP-learned routes; that a
// Tabby NetworkPolicy selecting the guest by its labels is enforced (and explained by
// tabbyctl policy explain); that the address survives an ACPI reboot and a tabby-node
// restart with (almost) no loss; and that the guest can neither send from a forged
// source address nor take over another workload's address by ARP.
//
// TestLibvirtdRestart runs its guest under a libvirtd of its own (vmguest's
// PrivateLibvirtd; node A's tabby-node gets --libvirt-uri to it) and stops it with
// SIGTERM, then SIGKILL, and starts it again under a 20 ms ping from a pod on node B:
// the guest's QEMU keeps running, no ping is lost, the WorkloadEndpoint is never
// changed (a datastore watch), GET /vms shows the watcher disconnected, then connected
// again and resynced, and a live metadata change on the restarted daemon is applied
// by its event, not by a resync.
//
// TestLiveMigration gives each node a PrivateLibvirtd of its own started inside the
// node's network namespace (vmguest.StartPrivateLibvirtdIn; each with its own host
// UUID, or libvirt refuses a migration "to the same host"), each followed by its
// node's tabby-node. A guest on node A, policed by a NetworkPolicy on its labels, is
// live-migrated to node B (vmguest's Domain.Migrate: client-managed Migrate3, QEMU's
// stream over the fabric to node B's address, a destination XML with a console socket
// of its own) under 20 ms pings from a pod on node B and a pod on node A. It checks
// that the endpoint moves to node B with the same address, that the allocation becomes
// node B's (borrowed from node A's block), that node A learns the /32 from node B over
// BGP, that the policy is enforced on node B and that the guest keeps its address; it
// logs the timeline (guest running on B, endpoints created and deleted, routes) and
// each ping's blackout (the longest gap between replies), bounded by 5 s.
//
// Addresses: fabric 10.76.0.0/24, node uplinks 10.76.255.0/24, the IPPool
// 10.77.0.0/16, all inside the suite's own namespaces. It has no non-test code.
package vm
