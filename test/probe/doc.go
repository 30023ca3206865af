// Package probe is test scaffolding: real servers and real probes across network
// namespaces, all inside the test process, for suites that check what a network policy
// lets through (test/policy replays the NetworkPolicy conformance cases with it). It is
// never used by production code.
//
// The package owns:
//
//   - servers, see [Serve]: in one network namespace, for each port, a TCP listener
//     (accept, write one byte, close), a UDP echo socket, and an SCTP responder;
//   - probes, see [Prober.Probe] and [Probe]: one connection attempt from a network
//     namespace to an address, protocol and port, with a timeout, answering allowed
//     (the server answered) or not, and why (timeout, refused);
//   - the matrix, see [Prober.Matrix]: many probes at once, a first pass with a short
//     timeout, then every cell whose result disagrees with what the caller expects is
//     probed again with a long timeout, so a loaded machine does not make false
//     failures and every unexpected denial is confirmed.
//
// # Network namespaces without exec
//
// A socket belongs to the network namespace its creating thread was in when it was
// made, for its whole life. So the package makes each socket on a locked OS thread that
// has entered the namespace (containernetworking's ns.WithNetNSPath), then leaves, and
// uses the socket from any goroutine through Go's poller (non-blocking descriptors
// wrapped in os.File, or net listeners). One test process can serve in every pod and
// probe from every pod; no `ip netns exec`, no helper binary, and only a handful of
// threads are ever locked, briefly.
//
// # Probes
//
// TCP: a non-blocking connect; allowed when the connection is established and the
// server's byte arrives (or the server closes cleanly), refused on a reset. UDP: a
// connected socket sends a random payload, resent every [Resend] until the deadline;
// allowed when the same payload comes back, refused on an ICMP port unreachable.
// Every probe binds its source port itself from a per-namespace sequence
// ([FirstPort]..[LastPort]), so no 5-tuple is used twice in a run: a datapath that keeps
// connection state (Tabby's conntrack map lets replies and later packets of a known flow
// through without a policy lookup) never sees a probe ride on an earlier probe's flow.
//
// # SCTP without a kernel SCTP stack
//
// The machines this runs on have no SCTP in the kernel: socket(AF_INET, SOCK_STREAM,
// IPPROTO_SCTP) fails with EPROTONOSUPPORT and there are no modules. So the package
// speaks the first step of SCTP's handshake itself over raw IP sockets
// (socket(AF_INET, SOCK_RAW, IPPROTO_SCTP)), which the kernel supports without SCTP:
//
//   - the responder, in the destination namespace, reads every SCTP packet delivered
//     there and answers an INIT chunk (verification tag 0) to a served port with an
//     INIT ACK: ports swapped, verification tag = the INIT's initiate tag, its own
//     initiate tag, window, streams, TSN and a state cookie parameter;
//   - the prober sends an INIT from a raw socket in the source namespace and waits for
//     the INIT ACK with the matching ports and verification tag. One raw socket per
//     source namespace serves every probe from it; a reader goroutine demultiplexes the
//     answers on (peer address, peer port, local port, tag), so many probes from one
//     namespace can run at once.
//
// Both sides compute the CRC32c checksum (hash/crc32, Castagnoli) and check it on
// what they read. The packets are real SCTP on the wire (IP protocol 132, the common
// header with ports at the same offsets as TCP and UDP), so the datapath under test
// parses and polices them exactly as it would a kernel's SCTP association setup; the
// handshake simply stops after INIT ACK, which is all a reachability probe needs. An
// INIT that is not answered is resent every [Resend] until the deadline, as SCTP's T1
// timer would.
//
// Every socket and goroutine the package makes is released by [Server.Close] and
// [Prober.Close]; an open socket keeps its network namespace alive, so close them
// before deleting the namespaces.
package probe
