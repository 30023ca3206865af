// Package agent is tabby-node, the per-node agent, minus its main: the wiring between
// the datastore and the dataplane (felix), and what the agent shows of itself.
//
// It owns:
//   - the configuration: flags and environment variables (a flag wins over its
//     variable, which wins over the default), validation, the zap logger (JSON or
//     console) and the datastore client built from the kubeconfig;
//   - the node address: --ip, or autodetection (first-found, interface=REGEX,
//     skip-interface=REGEX, can-reach=DEST, cidr=CIDR), reading the interfaces of the
//     current network namespace;
//   - the node's registration: the fields it owns in its tabby.dev Node (the IPv4
//     address, its TabbyNodeIP/InternalIP/ExternalIP addresses, the k8s orchRef),
//     written compare-and-swap without touching what users set, and kept there;
//   - the run loop: the datastore check, felix's Run, and a graceful stop on
//     cancellation that leaves every route in the kernel;
//   - the HTTP servers: /livez and /readyz, Prometheus /metrics from the injected
//     registry, and the local API (GET /status, /endpoints, /routes, /bgp/peers,
//     /policy, /vms) on a unix socket (package agent/localapi holds its wire types and
//     client, for tabbyctl); the BGP controller and the libvirt watcher are run by
//     cmd/tabby-node and only reported here;
//   - the node-name file the CNI plugin reads (/var/lib/tabby/nodename).
//
// It does no kernel I/O beyond reading interface addresses: routes, sysctls and BPF are
// felix's. The only files it writes are the socket (replacing a stale one that nobody
// answers on, removed on exit) and the node-name file.
//
// It imports api/v1, datastore, felix, bgp and vmendpoint (for the BGP and VM reports'
// types); cmd/tabby-node only wires it.
package agent
