// Package lab is the lab: a whole Tabby cluster on one Linux machine, made and removed
// with one command each (tabbyctl lab up, lab down; see ctl/lab.go and docs/lab.md).
// It is Tabby's main job on an embedded default, and the harness end-to-end tests and
// benchmarks can reuse.
//
// What a lab is: etcd and the real kube-apiserver on 127.0.0.1 (test/k8senv) with
// Tabby's CRDs, an IPPool and a BGPConfiguration; a fabric namespace with a bridge and
// N node namespaces on it (test/fabric), each running tabby-node; a top-of-rack router
// namespace running FRR, BIRD 2 or gobgpd (test/router) with eBGP to every node, the
// nodes in an iBGP mesh or around a route reflector; and pods: Pod objects (labelled
// app=<name>) plus network namespaces wired by tabby-cni through cnitool, as a kubelet
// would; and, with Options.VM (tabbyctl's default), a libvirt guest vm-a1 on node a
// (vm.go): test/vmguest's guest on the machine's system libvirtd, Tabby metadata
// (namespace demo, app=vm-a1) in its domain XML, its tap moved into node a's namespace
// while it is paused, node a's tabby-node following libvirt for the lab's taps and
// answering its DHCP. Where libvirt or QEMU cannot run, the lab says why in one line
// and runs without it. The agents enforce network policy (--policy=true), each pinning its BPF maps,
// programs and links in a directory of its own on the bpffs test/fabric mounts under
// the state directory (<state-dir>/fabric/bpffs/<node>).
//
// # The matrix and the policy demo
//
// The connectivity matrix is a TCP probe (probe.go): every pod serves HTTP on
// ProbePort from a socket the supervisor made inside the pod's namespace, and a probe
// connects from inside the source pod's namespace and wants the destination's name
// back. The VM answers its bare name on ProbePort and is probed one connection at a
// time (its server's backlog is one); its own row is one command on its serial
// console (busybox nc to every pod at once). A cell without an answer is denied when a Kubernetes NetworkPolicy in force
// isolates the destination for ingress (not a problem), failed otherwise. The policy
// demo (policy.go, tabbyctl lab policy deny|allow) applies or removes the embedded
// NetworkPolicy policies/deny-pod-a1.yaml through the supervisor, waits until every
// node's agent reports its maps written from that resource version (or without it)
// on its local API, and answers a report with the matrix. Reports list the policies
// in force with the nodes that programmed each.
//
// # Why a supervisor process
//
// The harness packages tie every process they start to the process that started it:
// etcd, kube-apiserver, tabby-node and the router daemons get Pdeathsig=SIGKILL, and
// each node reaches the apiserver through a port forwarder running in-process. A lab
// therefore needs one long-lived process that holds it. lab up starts that supervisor
// (tabbyctl lab run, hidden) detached: in a session of its own, stdin /dev/null,
// output to <state-dir>/lab.log, and a pipe on fd 3 on which it writes its progress
// lines. lab up copies those lines to the terminal until the supervisor closes the
// pipe, which it does once the lab is ready (or after it failed and tore down what it
// had made); lab up then asks the supervisor for a Report and prints it. The pipe is
// close-on-exec in the supervisor, so the lab's own processes do not hold it open.
//
// The supervisor (Supervise) takes an flock on <state-dir>/lab.lock for its whole life:
// the kernel drops it when the process dies, however it dies, so "is a lab running"
// never trusts a pid. It builds the lab step by step, each teardown pushed on a
// netnode.Cleanup stack as the step succeeds and each part recorded in state.json;
// waits until every node is registered and ready, every BGP session is Established
// (from the nodes' local APIs and the router's own CLI) and every pod reaches every
// other; then serves GET /report on <state-dir>/lab.sock (HTTP over a unix socket; the
// report is collected live: agents, router, policies, probes; POST /policy/{action}
// runs the policy demo) and waits for SIGTERM, SIGINT or SIGHUP, on which it tears the
// lab down, last made first. tabby-node is started from
// one OS thread locked for the supervisor's life, since Pdeathsig follows the forking
// thread, not the process.
//
// # Removing it
//
// Down sends the supervisor SIGTERM and waits for its lock (SIGKILL after 90 s); the
// supervisor's teardown removes everything. Down then sweeps, so that it also works
// after a SIGKILL or a crash: libvirt domains named <name>-* (destroyed, undefined;
// the libvirtd the lab started is stopped when no domain is left), processes whose command line names the state directory
// or that run in one of the lab's network namespaces (found by the namespace inode),
// the namespaces (recorded in state.json, or named <name>-*), cnitool's cached results
// (/var/lib/cni/results/<name>-*), FRR's crash-log directories of the router's daemons
// (/var/tmp/frr/<daemon>.<pid>, pids recorded), BPF pins named <name>*, and the state
// directory, which is removed only when it holds nothing but what a lab makes, after
// unmounting what is mounted in it (the nodes' bpffs: every pin, program and TC link of
// the nodes goes with it). A second Down finds nothing and does nothing. Down never touches a namespace
// of a running lab of the same name in another state directory, and lab up refuses to
// make a second lab of a name that runs.
//
// # Addresses and names
//
// Every address is inside the lab's own namespaces (FabricNet, UplinksNet, PoolNet),
// outside the ranges the test suites use (10.66-10.77); nothing is added to the host's
// namespace but the loopback listeners of etcd and kube-apiserver (and nothing to the
// host's mounts but the nodes' bpffs inside the state directory). Every namespace and
// node name starts with the lab's name (default "tabbylab"); the state directory
// defaults to /run/tabby-lab ($TABBY_LAB_DIR). A test gives its lab a name and state
// directory of its own.
//
// The package owns the lab's life (Up, Supervise, Status, Exec, Down), its state
// (State, state.json, the lock), the Report and its printing (WriteReport). It imports
// the harness packages under test/ (k8senv, netnode, fabric, router) and
// agent/localapi; production code other than tabbyctl does not import it.
package lab
