// Package routes owns Tabby's kernel routes to workloads: the route protocol numbers
// that mark every route Tabby writes (ProtocolLocal for a local workload's /32,
// ProtocolLearned for routes learned over BGP), and the code that writes, deletes and
// lists a local workload's /32 route (scope link, out of the workload's host-side
// interface, main table).
//
// The CNI plugin calls it when it wires a pod, so that route-writing code lives in one
// place; felix's route reconciler reuses it to repair drift. Every function works on
// a caller-supplied *netlink.Handle (one persistent handle per network namespace, never
// the package-level netlink functions on a hot path) and touches only routes that carry
// Tabby's protocol numbers.
//
// It imports vishvananda/netlink only; it is kernel I/O and nothing else.
package routes
