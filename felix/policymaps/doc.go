// Package policymaps makes the ebpf/ datapath's maps hold exactly what a compiled
// policy says.
//
// It owns two things: the translation from felix/policy's output ([policy.Compiled]:
// ipcache and exact-match hash entries from [policy.Compiled.HashEntries], plus the
// endpoints' host-side ifindex, IPv4 addresses and MAC) into the datapath's map
// entries, and the diff that writes only what changed. Verdicts are translated
// (policy.Allow/Deny to ebpf.Allow/Deny), rule ids shifted by one
// ([policy.DatapathRuleID]; 0 is the datapath's default rule), a Log rule matched
// before the decision becomes the value's log rule id ([policy.DatapathLogRuleID]),
// ICMP type and code ride in the port field as [policy.HashEntries] encodes them, and
// IPv6 prefixes and
// addresses are skipped (the datapath is IPv4-only) and counted in [Stats].
//
// A [Writer] owns tabby_ipcache, tabby_policy and tabby_endpoints completely: after a
// successful [Writer.Sync] they hold the desired entries and nothing else. It
// remembers what it wrote, so the next Sync costs the change, not the policy. On its
// first Sync (a new agent finding maps pinned by the previous one) and after any failed
// write, it dumps the pinned maps and diffs against what they really hold.
//
// It does not load, attach or detach programs (felix does), nor touch conntrack or
// counters.
package policymaps
