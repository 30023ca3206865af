// Package ebpf is Tabby's datapath: the TC program enforcing network policy on a
// workload's host-side interface, its maps, and typed helpers to load, pin, attach and
// program them.
//
// The C source lives in bpf/; bpf2go turns it into tabby_bpfel.o and tabby_bpfel.go
// (both committed). Everything Tabby creates is pinned under one directory
// (DefaultPinDir unless Options.PinDir says otherwise) so a restarted agent finds
// its maps and links again, and never touches what it did not create.
//
// Per packet the program does a fixed number of map lookups whatever the number of
// rules: endpoint (by ifindex), conntrack (forward and reverse), ipcache (LPM, the
// peer's class), policy (at most six exact-match lookups, most specific first; eight
// for ICMP, whose type and code take the port's place), a per-rule counter (two when a
// Log rule matched, which also emits a log event on the drop ring) and a per-endpoint
// counter (by ifindex and direction, allowed and denied).
package ebpf
