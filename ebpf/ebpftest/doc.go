// Package ebpftest is test and benchmark scaffolding for Tabby's eBPF datapath, shared
// by the suites of ebpf/, felix/policymaps, felix and bench/policy: the probe that
// skips a test where BPF cannot run (and fails it under CI=true), a private bpffs to
// pin in, synthetic Ethernet/IPv4 frames for BPF_PROG_TEST_RUN, and a TCP server that
// accepts and closes (a connect succeeds where policy lets it through). It does not
// import ebpf (ebpf's own tests use it), and production code never uses it.
package ebpftest
