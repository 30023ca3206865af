// Package policy compiles network policy into lookup tables whose per-packet cost does
// not depend on the number of rules, and evaluates packets against them exactly as the
// eBPF TC programs will. It is pure: no kernel, no BPF, no I/O.
//
// # Inputs
//
// [Input] holds Kubernetes networking.k8s.io/v1 NetworkPolicies, Tabby NetworkPolicies
// and GlobalNetworkPolicies, NetworkSets and GlobalNetworkSets, namespace labels,
// service-account labels and the endpoints (namespace, name, addresses, labels, service
// account, named ports). [Compile] validates everything (Tabby objects with api/v1's
// Validate) and fails with an error wrapping [ErrInvalid] or [ErrUnsupported]; it never
// compiles half a policy, so the caller keeps its last good output.
//
// # Semantics
//
// Each endpoint is judged per direction: ingress (the endpoint is the destination, the
// peer the source) and egress (the endpoint is the source, the peer the destination). A
// packet between two endpoints must be allowed by the source's egress and by the
// destination's ingress. A packet's port is always its destination port.
//
// Policies selecting an endpoint in a direction are evaluated in order: lower Order
// first, Tabby policies without an order last, Kubernetes NetworkPolicies at order 1000
// (as in Calico), ties by name ("gnp <name>", "knp <ns>/<name>", "np <ns>/<name>").
// Within a policy, rules are evaluated in their order. The first rule that matches
// decides:
//   - Allow: allowed; Deny: denied.
//   - Pass: the rest of the tier is skipped and the endpoint's profile decides; Tabby
//     has one tier and the namespace profile (kns.<namespace>) allows, so Pass allows,
//     with reason "pass".
//   - Log: no verdict; evaluation goes on. The decision finally taken (a later rule's,
//     or the default) records the first Log rule that matched (Decision.Log,
//     LogRuleID), so the datapath can report the packet in the same single lookup.
//
// If no policy selects the endpoint in that direction the packet is allowed (reason
// "no-policy"). If some policy selects it but no rule decides, it is denied (reason
// "end-of-tier"): this is the Kubernetes default deny once a pod is selected.
//
// A policy's direction types are its Types / policyTypes; when absent they default to
// Ingress, plus Egress when it has egress rules (Kubernetes and Tabby alike). A policy
// with Egress in its types and no egress rules denies all egress of what it selects.
//
// Kubernetes NetworkPolicy, exactly:
//   - spec.podSelector selects pods of the policy's namespace; {} selects them all.
//   - Each ingress (egress) rule allows traffic from (to) any of its peers on any of its
//     ports. Empty or absent from/to means every address, in the cluster or not; empty
//     or absent ports means every port of every protocol (ICMP included).
//   - A peer with only podSelector means pods of the policy's namespace; only
//     namespaceSelector means every pod of the selected namespaces; both mean pods
//     matching podSelector in namespaces matching namespaceSelector. Selector peers
//     never match addresses that are not endpoints.
//   - ipBlock matches every address in cidr and in none of except, endpoints included.
//   - A port's protocol defaults to TCP. A numeric port with endPort is the inclusive
//     range port..endPort; a port without a number means all ports of the protocol.
//   - A named port resolves at the destination: for ingress against the selected pod,
//     for egress against each peer pod (an address that is no endpoint has no named
//     ports). A name resolves only to a named port of the same protocol; a pod without
//     it does not match that port entry.
//
// Tabby rules (Calico v3 fields): protocol / notProtocol; source and destination with
// selector, notSelector, namespaceSelector, nets, notNets, serviceAccounts; destination
// ports / notPorts (numbers, "a:b" ranges, names); ipVersion. Empty fields match all.
// The peer side (source for ingress, destination for egress) is matched per packet; the
// local side is resolved at compile time against the endpoint itself, and must hold for
// every address of the endpoint. A selector in a namespaced policy sees endpoints and
// NetworkSets of its namespace; with namespaceSelector, those of the selected
// namespaces; in a GlobalNetworkPolicy without namespaceSelector it sees all endpoints,
// all NetworkSets and GlobalNetworkSets. A selected network set contributes its nets:
// any address inside them matches. serviceAccounts matches endpoints by service-account
// name and/or the account's labels (Input.ServiceAccounts). Not yet supported (error
// wrapping ErrUnsupported): source ports, named notPorts on the peer side.
//
// ICMP (and ICMPv6): icmp {type} matches every code of the type, {type, code} that code
// only; notICMP the opposite; protocol must be ICMP (ICMPv6). Wherever a destination
// port goes, an ICMP packet's is ICMPPort(type, code) = type<<8 | code, so icmp {type}
// is a port block of 8 bits, {type, code} one port, and notICMP works as notPorts.
//
// # Output: classes, ipcache, policy tables
//
// Peer classes. Every rule's peer condition becomes a matcher (selector scope, CIDRs,
// named-port resolution, ...). The identities a peer address can have are each endpoint
// address, and for other addresses the longest CIDR mentioned anywhere that holds them
// (0.0.0.0/0 and ::/0 always count). Prefixes nest, so "address in C" for any mentioned
// C is known from that longest prefix alone; an ipBlock except is just a longer prefix
// with its own identity, no range splitting needed. Identities on which every matcher
// agrees share a class. [Compiled.IPCache] maps each endpoint /32 (/128) and each
// mentioned CIDR to its class: an LPM trie gives any address its class in one lookup.
//
// Policy tables. For each endpoint and direction, [DirTable] holds a default decision
// and LPM entries over the key {class u32, protocol u8, port u16} (the BPF key also
// carries the endpoint id and direction, always fully matched):
//   - LevelClass (prefix 32): any protocol and port of the class;
//   - LevelProto (prefix 40): one protocol, any port;
//   - LevelPort (prefix 40+PortBits): one protocol and an aligned block of ports.
//
// Each entry holds the first-match [Decision] (verdict, reason, deciding rule id into
// [Compiled.Rules] for counters and explain) for the packets it covers that no longer
// entry covers. Port ranges are split into at most 30 aligned power-of-two blocks, so a
// range costs entries, never lookups. Entries equal to what the next shorter prefix (or
// the default) would give are left out.
//
// # Lookups
//
// [Evaluator.Verdict] does what the BPF program does, per direction: read the endpoint's
// config (selected? default decision) — one lookup, and if not selected the verdict is
// allow; else the peer's class from the ipcache LPM — one lookup; then the policy LPM
// with {class, proto, port} — one lookup; no entry means the default. That is three map
// lookups whatever the number of rules, policies or CIDRs. Protocols without ports use
// port 0, except ICMP and ICMPv6, which use ICMPPort(type, code).
//
// # Exact-match layout
//
// The ebpf/ datapath reads a hash map, not an LPM trie, for policy: key {endpoint,
// direction, proto (0 = any), port (0 = any), class (or ClassAny)}, probing
// (proto, port), (proto, any), (any, any) for the class and then for ClassAny: at most
// six probes, still independent of the rules. [Compiled.HashEntries] expands the LPM
// tables into that layout (a port block becomes one entry per port; port 0 being the
// wildcard, a TCP/UDP/SCTP packet to port 0 gets its protocol's decision), with a cap
// per table (error wrapping [ErrTooLarge]); [HashEvaluator] mirrors those probes. For
// ICMP the port probe is two, [HashICMPExact] (type and code) then [HashICMPType]:
// at most eight probes; type 255 has no encoding and gets ICMP's protocol decision.
// [DatapathRuleID] shifts rule ids by one, since the datapath reserves 0 for defaults;
// [DatapathLogRuleID] likewise for the Log rule of a decision (0: none).
package policy
