// Package vmendpoint makes libvirt guests workload endpoints: for every tap of a
// running domain on this node it holds an address in Tabby IPAM and writes a
// WorkloadEndpoint (orchestrator libvirt), which felix then routes, proxy-ARPs and
// polices exactly like a pod's veth. See docs/vm.md.
//
// It has three parts:
//
//   - The pure part (desired.go): from a domain's XML (libvirtxml) and whether it is
//     active, the endpoints it should have. An interface is Tabby's when it is
//     <interface type='ethernet'> (a tap, no bridge) and its tap, as the live XML names
//     it, starts with one of the configured prefixes (default "tap" and "vnet", the
//     names libvirt gives taps it creates). Only an active domain (running, paused,
//     shutting down) has endpoints: its taps exist. Each endpoint is named
//     "<node>-libvirt-<domain>-<tap>" like Calico's, made a valid Kubernetes name (a
//     name that had to be changed or cut ends with a hash of the original).
//
//   - The Reconciler (reconcile.go): desired endpoints against the WorkloadEndpoints of
//     orchestrator libvirt on this node. The address of a guest NIC comes from the IPAM
//     handle ipam.VMHandle(domain UUID, MAC): the address the handle already holds is
//     reused, so a guest keeps it across reboots, agent restarts and a start on
//     another node; a fixed address from the metadata is requested with Request.IP.
//     A stopped domain loses its WorkloadEndpoints but keeps its handle; only an
//     undefined domain's handles are released (UNDEFINED event, or absent from a
//     fresh list of libvirt's domains), and not when the domain left by live migration
//     or a WorkloadEndpoint on another node names its UUID. Every write is
//     compare-and-swap; the DHCP server of each running tap is told the guest's MAC,
//     /32 and hostname (the DHCP interface; the server lives in vmendpoint/dhcp).
//
//   - The Watcher (watcher.go) and its libvirt Source (libvirt.go): it connects (the
//     default event loop implementation is registered once, before the first
//     connection), registers for lifecycle events and a close callback, lists every
//     domain and resyncs, then reconciles each domain an event makes dirty from a
//     fresh read of it; failures are retried per domain with backoff. When libvirtd
//     goes away it reconnects with capped backoff and resyncs; while disconnected it
//     writes nothing, so running guests keep their endpoints and dataplane. Nothing is
//     deleted without a fresh, successful list. The Source is an interface, so the
//     Reconciler and Watcher are tested with a fake; the real one against libvirtd.
//
//   - Live migration (migrate.go): a node's endpoints of a domain paused for a
//     migration wait on standby (spec.standby: policed, not routed) while another
//     node's endpoint of it is live; the source hands over (address, live endpoint,
//     the guest's last packet time) when libvirt pauses the guest for the last pages;
//     a node where the guest runs takes its endpoints over; the destination measures
//     the blackout from felix's per-endpoint packet times (the Activity interface)
//     and exports it (tabby_vm_migration_blackout_seconds).
//
// Tabby's element in a domain's <metadata>, namespace https://tabby.dev/xmlns/vm/1.0
// (all optional):
//
//	<metadata>
//	  <tabby:endpoint xmlns:tabby="https://tabby.dev/xmlns/vm/1.0" namespace="prod" hostname="web-1" pools="vm-pool">
//	    <tabby:label key="app" value="web"/>
//	    <tabby:interface mac="52:54:00:12:34:56" ip="10.65.0.10"/>
//	    <tabby:port name="http" protocol="TCP" port="80"/>
//	  </tabby:endpoint>
//	</metadata>
//
// namespace is the WorkloadEndpoints' namespace (default: the configured one);
// labels are theirs (tabby.dev/ keys are reserved: tabby.dev/namespace and
// tabby.dev/orchestrator=libvirt are always set); an interface element fixes the
// address (or the pools) of the NIC with that MAC; a port element names a port of the
// guest (spec.ports of every endpoint, for policies' named ports); hostname goes to
// DHCP (default: the domain name). A bad value is left out and reported in the domain's status.
//
// It imports api/v1, datastore, ipam, libvirt.org/go/libvirt, libvirtxml and the
// Prometheus client (the migration metrics, on an injected registry); it does no
// kernel I/O (felix owns routes, sysctls and BPF; the DHCP socket is vmendpoint/dhcp's).
package vmendpoint
