package ipam

import (
	"errors"
	"net/netip"
	"time"

	"go.uber.org/zap"
)

// Errors every failure wraps one of, so callers (the CNI plugin, tabbyctl) can map them.
var (
	// ErrNoFreeAddress: every block the node may use is full and no new block can be
	// claimed (pool exhausted, maxBlocksPerHost reached, or strictAffinity forbids
	// borrowing).
	ErrNoFreeAddress = errors.New("no free address")
	// ErrNoPool: no enabled IPPool selects the node (or none of the requested pools does).
	ErrNoPool = errors.New("no usable IP pool")
	// ErrAddressInUse: a static address is already allocated.
	ErrAddressInUse = errors.New("address in use")
	// ErrNotInPool: a static address is outside every pool, or reserved.
	ErrNotInPool = errors.New("address not in any usable pool")
	// ErrNotAllocated: a release named an address that is not allocated.
	ErrNotAllocated = errors.New("address not allocated")
)

// Attribute keys IPAM sets on every allocation (AllocationAttribute.Secondary).
const (
	AttrNode      = "node"
	AttrTimestamp = "timestamp"
	AttrType      = "type" // pod or vm
	AttrNamespace = "namespace"
	AttrPod       = "pod"
	AttrContainer = "containerID"
	AttrDomain    = "domain"
	AttrMAC       = "mac"
)

// Labels IPAM puts on the objects it creates, so lists can be narrowed.
const (
	LabelNode = "tabby.dev/node"
)

// Request asks for one address.
type Request struct {
	// HandleID names the owner: see PodHandle and VMHandle.
	HandleID string
	// Node that will use the address (its affine blocks are tried first).
	Node string
	// Attrs are recorded with the allocation (namespace, pod, containerID, ...).
	Attrs map[string]string
	// Pools limits the choice to these IPPools, by name or CIDR; empty means every
	// enabled pool whose nodeSelector selects the node.
	Pools []string
	// IP requests this exact address; the zero value means any.
	IP netip.Addr
}

// Allocation is an address handed out.
type Allocation struct {
	IP    netip.Addr
	Block netip.Prefix
	Pool  string
	// Borrowed is true when the block is affine to another node (or to none).
	Borrowed bool
}

// Options tune an Allocator.
type Options struct {
	Logger *zap.Logger
	// Now is the clock (tests set it); default time.Now.
	Now func() time.Time
	// MaxRetries bounds compare-and-swap retries of one operation (default 100).
	MaxRetries int
	// CacheTTL bounds how stale pools, configuration, reservations and node labels may be
	// (default DefaultCacheTTL; negative: read them on every request).
	CacheTTL time.Duration
}

// PodHandle is the handle of a pod's allocation: namespace/name and sandbox container.
func PodHandle(namespace, pod, containerID string) string {
	return "pod." + namespace + "." + pod + "." + containerID
}

// VMHandle is the handle of a libvirt guest interface's allocation: it survives reboots,
// agent restarts and host changes.
func VMHandle(domainUUID, mac string) string {
	return "vm." + domainUUID + "." + mac
}
