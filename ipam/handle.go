package ipam

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// adjustHandle adds delta to the count of addresses handleID holds in block cidr,
// creating the IPAMHandle on first use and deleting it when nothing is held.
func (a *Allocator) adjustHandle(ctx context.Context, handleID string, cidr netip.Prefix, delta int) error {
	name := HandleName(handleID)
	key := cidr.String()
	if delta > 0 {
		// The common case (a new pod, a new VM interface) is a new handle: try that first
		// and save a round trip.
		h := &v1.IPAMHandle{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: v1.IPAMHandleSpec{HandleID: handleID, Block: map[string]int{key: delta}}}
		_, err := datastore.Create(ctx, a.s, h)
		if err == nil {
			return nil
		}
		if !errors.Is(err, datastore.ErrAlreadyExists) {
			return fmt.Errorf("create handle %s: %w", handleID, err)
		}
	}
	for attempt := 0; attempt < a.retries; attempt++ {
		h, err := datastore.Get[*v1.IPAMHandle](ctx, a.s, "", name)
		if errors.Is(err, datastore.ErrNotFound) {
			if delta < 0 {
				return nil
			}
			h = &v1.IPAMHandle{ObjectMeta: metav1.ObjectMeta{Name: name},
				Spec: v1.IPAMHandleSpec{HandleID: handleID, Block: map[string]int{key: delta}}}
			if _, err = datastore.Create(ctx, a.s, h); errors.Is(err, datastore.ErrAlreadyExists) {
				continue
			}
			if err != nil {
				return fmt.Errorf("create handle %s: %w", handleID, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read handle %s: %w", handleID, err)
		}
		if h.Spec.HandleID != handleID {
			return fmt.Errorf("handle object %s belongs to %q, not %q", name, h.Spec.HandleID, handleID)
		}
		if h.Spec.Block == nil {
			h.Spec.Block = map[string]int{}
		}
		h.Spec.Block[key] += delta
		if h.Spec.Block[key] <= 0 {
			delete(h.Spec.Block, key)
		}
		if len(h.Spec.Block) == 0 {
			err = a.s.Delete(ctx, datastore.KindIPAMHandle, "", name, datastore.DeleteOptions{ResourceVersion: h.ResourceVersion})
			if errors.Is(err, datastore.ErrNotFound) {
				return nil
			}
		} else {
			_, err = datastore.Update(ctx, a.s, h)
		}
		if errors.Is(err, datastore.ErrConflict) {
			continue
		}
		if err != nil {
			return fmt.Errorf("update handle %s: %w", handleID, err)
		}
		return nil
	}
	return fmt.Errorf("update handle %s: gave up after %d lost races", handleID, a.retries)
}

// AddressesOf lists the addresses a handle holds.
func (a *Allocator) AddressesOf(ctx context.Context, handleID string) ([]netip.Addr, error) {
	blocks, err := a.blocksOf(ctx, handleID)
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for _, cidr := range blocks {
		b, err := datastore.Get[*v1.IPAMBlock](ctx, a.s, "", BlockName(cidr))
		if errors.Is(err, datastore.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read block %s: %w", cidr, err)
		}
		for _, o := range ordinalsOfHandle(b, handleID) {
			out = append(out, addrAt(cidr, o))
		}
	}
	sortAddrs(out)
	return out, nil
}

// blocksOf lists the blocks a handle's object names (none when it does not exist).
func (a *Allocator) blocksOf(ctx context.Context, handleID string) ([]netip.Prefix, error) {
	h, err := datastore.Get[*v1.IPAMHandle](ctx, a.s, "", HandleName(handleID))
	if errors.Is(err, datastore.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read handle %s: %w", handleID, err)
	}
	var out []netip.Prefix
	for c := range h.Spec.Block {
		if cidr, err := netip.ParsePrefix(c); err == nil {
			out = append(out, cidr)
		}
	}
	return out, nil
}

// ReleaseHandle frees every address a handle holds and deletes the handle. Releasing a
// handle that does not exist is not an error (CNI DEL runs twice).
func (a *Allocator) ReleaseHandle(ctx context.Context, handleID string) ([]netip.Addr, error) {
	name := HandleName(handleID)
	var released []netip.Addr
	for attempt := 0; attempt < a.retries; attempt++ {
		h, err := datastore.Get[*v1.IPAMHandle](ctx, a.s, "", name)
		if errors.Is(err, datastore.ErrNotFound) {
			sortAddrs(released)
			return released, nil
		}
		if err != nil {
			return released, fmt.Errorf("read handle %s: %w", handleID, err)
		}
		for c := range h.Spec.Block {
			cidr, err := netip.ParsePrefix(c)
			if err != nil {
				continue
			}
			ips, err := a.releaseInBlock(ctx, cidr, func(b *v1.IPAMBlock) []int { return ordinalsOfHandle(b, handleID) })
			if err != nil {
				return released, err
			}
			released = append(released, ips...)
		}
		err = a.s.Delete(ctx, datastore.KindIPAMHandle, "", name, datastore.DeleteOptions{ResourceVersion: h.ResourceVersion})
		if err == nil || errors.Is(err, datastore.ErrNotFound) {
			sortAddrs(released)
			a.log.Sugar().Debugw("released handle", "handle", handleID, "addresses", len(released))
			return released, nil
		}
		if !errors.Is(err, datastore.ErrConflict) {
			return released, fmt.Errorf("delete handle %s: %w", handleID, err)
		}
		// The handle gained an allocation meanwhile: release that too.
	}
	return released, fmt.Errorf("release handle %s: gave up after %d lost races", handleID, a.retries)
}

// releaseInBlock frees the ordinals pick chooses in block cidr (CAS, retried).
func (a *Allocator) releaseInBlock(ctx context.Context, cidr netip.Prefix, pick func(*v1.IPAMBlock) []int) ([]netip.Addr, error) {
	for attempt := 0; attempt < a.retries; attempt++ {
		b, err := datastore.Get[*v1.IPAMBlock](ctx, a.s, "", BlockName(cidr))
		if errors.Is(err, datastore.ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read block %s: %w", cidr, err)
		}
		ords := pick(b)
		if len(ords) == 0 {
			return nil, nil
		}
		releaseOrdinals(b, ords, a.now())
		if _, err := datastore.Update(ctx, a.s, b); errors.Is(err, datastore.ErrConflict) {
			continue
		} else if err != nil {
			return nil, fmt.Errorf("update block %s: %w", cidr, err)
		}
		out := make([]netip.Addr, len(ords))
		for i, o := range ords {
			out[i] = addrAt(cidr, o)
		}
		return out, nil
	}
	return nil, fmt.Errorf("release in block %s: gave up after %d lost races", cidr, a.retries)
}

func sortAddrs(s []netip.Addr) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j].Less(s[j-1]); j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
