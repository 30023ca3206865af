package ipam

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/big"
	"net/netip"
	"strings"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// AnnotationEmptySince marks when a block last became empty, for the grace period
// before it goes back to the pool.
const AnnotationEmptySince = "tabby.dev/empty-since"

// BlockName is the IPAMBlock object name of a block: 10.65.0.0/26 -> 10-65-0-0-26.
func BlockName(cidr netip.Prefix) string {
	s := cidr.String()
	return strings.NewReplacer(".", "-", ":", "-", "/", "-").Replace(s)
}

// AffinityName is the BlockAffinity object name of node's claim on a block.
func AffinityName(node string, cidr netip.Prefix) string {
	return objectName(node + "-" + BlockName(cidr))
}

// HandleName is the IPAMHandle object name of a handle ID: the ID itself when it is a
// valid object name, else a hash of it.
func HandleName(handleID string) string {
	return objectName(handleID)
}

func objectName(s string) string {
	low := strings.ToLower(s)
	if low == s && len(validation.IsDNS1123Subdomain(s)) == 0 {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return "h-" + hex.EncodeToString(sum[:16])
}

// blockSize is the number of addresses in a block.
func blockSize(cidr netip.Prefix) int { return 1 << (cidr.Addr().BitLen() - cidr.Bits()) }

// addrAt is the address of ordinal i of a block.
func addrAt(cidr netip.Prefix, i int) netip.Addr {
	n := new(big.Int).SetBytes(cidr.Addr().AsSlice())
	n.Add(n, big.NewInt(int64(i)))
	b := n.Bytes()
	buf := make([]byte, cidr.Addr().BitLen()/8)
	copy(buf[len(buf)-len(b):], b)
	a, _ := netip.AddrFromSlice(buf)
	return a
}

// ordinalOf is the ordinal of addr in a block, or -1.
func ordinalOf(cidr netip.Prefix, addr netip.Addr) int {
	if !cidr.Contains(addr) {
		return -1
	}
	base := new(big.Int).SetBytes(cidr.Addr().AsSlice())
	n := new(big.Int).SetBytes(addr.AsSlice())
	return int(n.Sub(n, base).Int64())
}

// newBlock is an empty block affine to node ("" for none).
func newBlock(cidr netip.Prefix, node string, strict bool, now time.Time) *v1.IPAMBlock {
	size := blockSize(cidr)
	b := &v1.IPAMBlock{Spec: v1.IPAMBlockSpec{
		CIDR:           cidr.String(),
		Allocations:    make([]int, size),
		Unallocated:    make([]int, size),
		Attributes:     []v1.AllocationAttribute{},
		StrictAffinity: strict,
	}}
	for i := range size {
		b.Spec.Unallocated[i] = i
		b.Spec.Allocations[i] = -1
	}
	b.Name = BlockName(cidr)
	if node != "" {
		aff := "host:" + node
		b.Spec.Affinity = &aff
		t := metaTime(now)
		b.Spec.AffinityClaimTime = &t
		b.Labels = map[string]string{LabelNode: node}
	}
	return b
}

// blockCIDR parses a block's CIDR.
func blockCIDR(b *v1.IPAMBlock) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(b.Spec.CIDR)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("block %s: bad cidr %q: %w", b.Name, b.Spec.CIDR, err)
	}
	return p, nil
}

// affineNode is the node a block is affine to, or "".
func affineNode(b *v1.IPAMBlock) string {
	if b.Spec.Affinity == nil {
		return ""
	}
	return strings.TrimPrefix(*b.Spec.Affinity, "host:")
}

// inUse counts a block's allocated addresses.
func inUse(b *v1.IPAMBlock) int {
	n := 0
	for _, a := range b.Spec.Allocations {
		if a >= 0 {
			n++
		}
	}
	return n
}

// takeOrdinal allocates ordinal ord (which must be free) to a new attribute.
func takeOrdinal(b *v1.IPAMBlock, ord int, handleID string, attrs map[string]string) {
	for i, u := range b.Spec.Unallocated {
		if u == ord {
			b.Spec.Unallocated = append(b.Spec.Unallocated[:i:i], b.Spec.Unallocated[i+1:]...)
			break
		}
	}
	h := handleID
	b.Spec.Attributes = append(b.Spec.Attributes, v1.AllocationAttribute{HandleID: &h, Secondary: attrs})
	b.Spec.Allocations[ord] = len(b.Spec.Attributes) - 1
	b.Spec.SequenceNumber++
	delete(b.Annotations, AnnotationEmptySince)
}

// freeOrdinal picks the first free ordinal that is not reserved, or -1.
func freeOrdinal(b *v1.IPAMBlock, cidr netip.Prefix, reserved func(netip.Addr) bool) int {
	for _, u := range b.Spec.Unallocated {
		if !isFree(b, u) {
			continue
		}
		if reserved != nil && reserved(addrAt(cidr, u)) {
			continue
		}
		return u
	}
	return -1
}

// isFree says whether ordinal ord is unallocated.
func isFree(b *v1.IPAMBlock, ord int) bool {
	return ord >= 0 && ord < len(b.Spec.Allocations) && b.Spec.Allocations[ord] < 0
}

// handleAt is the handle that holds ordinal ord, or "".
func handleAt(b *v1.IPAMBlock, ord int) (string, map[string]string) {
	if isFree(b, ord) || ord < 0 || ord >= len(b.Spec.Allocations) {
		return "", nil
	}
	idx := b.Spec.Allocations[ord]
	if idx >= len(b.Spec.Attributes) {
		return "", nil
	}
	a := b.Spec.Attributes[idx]
	if a.HandleID == nil {
		return "", a.Secondary
	}
	return *a.HandleID, a.Secondary
}

// releaseOrdinals frees the given ordinals, drops their attributes and renumbers the
// rest; it marks the block empty-since now when nothing is left.
func releaseOrdinals(b *v1.IPAMBlock, ords []int, now time.Time) {
	if len(ords) == 0 {
		return
	}
	drop := map[int]bool{}
	for _, o := range ords {
		if isFree(b, o) {
			continue
		}
		drop[b.Spec.Allocations[o]] = true
		b.Spec.Allocations[o] = -1
		b.Spec.Unallocated = append(b.Spec.Unallocated, o)
	}
	// Compact the attributes and renumber the references.
	newIdx := make([]int, len(b.Spec.Attributes))
	kept := b.Spec.Attributes[:0:0]
	for i, a := range b.Spec.Attributes {
		if drop[i] {
			newIdx[i] = -1
			continue
		}
		newIdx[i] = len(kept)
		kept = append(kept, a)
	}
	b.Spec.Attributes = kept
	for i, a := range b.Spec.Allocations {
		if a >= 0 {
			b.Spec.Allocations[i] = newIdx[a]
		}
	}
	b.Spec.SequenceNumber++
	if inUse(b) == 0 {
		if b.Annotations == nil {
			b.Annotations = map[string]string{}
		}
		b.Annotations[AnnotationEmptySince] = now.UTC().Format(time.RFC3339Nano)
	}
}

// ordinalsOfHandle lists the ordinals a handle holds in a block.
func ordinalsOfHandle(b *v1.IPAMBlock, handleID string) []int {
	var out []int
	for i := range b.Spec.Allocations {
		if h, _ := handleAt(b, i); h == handleID && !isFree(b, i) {
			out = append(out, i)
		}
	}
	return out
}

func metaTime(t time.Time) metav1.Time { return metav1.NewTime(t.UTC()) }
