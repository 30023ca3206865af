// Package ipam is Tabby's address allocator: Calico's block-affinity model over the
// datastore. A node claims blocks of an IPPool (blockSize, /26 by default) by affinity,
// hands out /32s from its own blocks first, claims a new block when they are full, and
// borrows single addresses from other nodes' blocks only when no pool that selects it
// has a free block (and IPAMConfiguration.strictAffinity is off).
//
// Every write is compare-and-swap on the object's resourceVersion; a lost race re-reads
// and retries. A block is claimed by creating its IPAMBlock object, which only one
// writer can do, so no block ever has two affine nodes and no address is handed out
// twice. Each allocation carries a handle (pod: namespace/name + container id; VM:
// domain UUID + MAC) and attributes saying who asked and when; IPAMHandle objects index
// allocations by handle for release.
//
// It imports api/v1, api/v1/selector and datastore; it does no kernel I/O.
package ipam
