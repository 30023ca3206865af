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
// Addresses: fabric 10.76.0.0/24, node uplinks 10.76.255.0/24, the IPPool
// 10.77.0.0/16, all inside the suite's own namespaces. It has no non-test code.
package vm
