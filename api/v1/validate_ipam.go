package v1

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

func validateIPPool(o *IPPool) field.ErrorList {
	p := field.NewPath("spec")
	var errs field.ErrorList
	if o.Spec.CIDR == "" {
		return append(errs, field.Required(p.Child("cidr"), "e.g. 10.244.0.0/16"))
	}
	pfx, e := validateCIDR(p.Child("cidr"), o.Spec.CIDR, false)
	errs = append(errs, e...)
	if len(e) == 0 {
		lo, hi := 20, 32
		if pfx.Addr().Is6() {
			lo, hi = 116, 128
		}
		bs := o.Spec.BlockSize
		switch {
		case bs < lo || bs > hi:
			errs = append(errs, field.Invalid(p.Child("blockSize"), bs, fmt.Sprintf("must be %d-%d for an IPv%d pool", lo, hi, map[bool]int{true: 6, false: 4}[pfx.Addr().Is6()])))
		case bs < pfx.Bits():
			errs = append(errs, field.Invalid(p.Child("blockSize"), bs, fmt.Sprintf("blocks of /%d do not fit in the pool's /%d", bs, pfx.Bits())))
		}
		if pfx.Addr().IsLoopback() || pfx.Addr().IsMulticast() || pfx.Addr().IsLinkLocalUnicast() {
			errs = append(errs, field.Invalid(p.Child("cidr"), o.Spec.CIDR, "loopback, multicast and link-local ranges cannot be pools"))
		}
	}
	errs = append(errs, validateSelector(p.Child("nodeSelector"), o.Spec.NodeSelector)...)
	seen := map[IPPoolAllowedUse]bool{}
	for i, u := range o.Spec.AllowedUses {
		switch u {
		case IPPoolAllowedUseWorkload, IPPoolAllowedUseTunnel, IPPoolAllowedUseLoadBalancer:
		default:
			errs = append(errs, field.NotSupported(p.Child("allowedUses").Index(i), u, []string{"Workload", "Tunnel", "LoadBalancer"}))
		}
		if seen[u] {
			errs = append(errs, field.Duplicate(p.Child("allowedUses").Index(i), u))
		}
		seen[u] = true
	}
	if seen[IPPoolAllowedUseLoadBalancer] && len(seen) > 1 {
		errs = append(errs, field.Invalid(p.Child("allowedUses"), o.Spec.AllowedUses, "LoadBalancer cannot be combined with other uses"))
	}
	return errs
}

func validateIPAMConfiguration(o *IPAMConfiguration) field.ErrorList {
	var errs field.ErrorList
	if o.Name != "default" {
		errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), o.Name, `the one IPAMConfiguration is named "default"`))
	}
	if o.Spec.MaxBlocksPerHost < 0 {
		errs = append(errs, field.Invalid(field.NewPath("spec", "maxBlocksPerHost"), o.Spec.MaxBlocksPerHost, "must be 0 (no limit) or more"))
	}
	return errs
}

func validateIPReservation(o *IPReservation) field.ErrorList {
	p := field.NewPath("spec", "reservedCIDRs")
	if len(o.Spec.ReservedCIDRs) == 0 {
		return field.ErrorList{field.Required(p, "list at least one address or CIDR")}
	}
	return validateNets(p, o.Spec.ReservedCIDRs)
}

func validateIPAMBlock(o *IPAMBlock) field.ErrorList {
	p := field.NewPath("spec")
	pfx, errs := validateCIDR(p.Child("cidr"), o.Spec.CIDR, false)
	if len(errs) > 0 {
		return errs
	}
	size := 1 << (pfx.Addr().BitLen() - pfx.Bits())
	if pfx.Addr().BitLen()-pfx.Bits() > 16 {
		return append(errs, field.Invalid(p.Child("cidr"), o.Spec.CIDR, "a block holds at most 65536 addresses"))
	}
	if len(o.Spec.Allocations) != size {
		errs = append(errs, field.Invalid(p.Child("allocations"), len(o.Spec.Allocations), fmt.Sprintf("a /%d block has %d allocation slots", pfx.Bits(), size)))
	}
	for i, a := range o.Spec.Allocations {
		if a < -1 || a >= len(o.Spec.Attributes) {
			errs = append(errs, field.Invalid(p.Child("allocations").Index(i), a, "names no attribute (-1 means free)"))
		}
	}
	for i, u := range o.Spec.Unallocated {
		if u < 0 || u >= size {
			errs = append(errs, field.Invalid(p.Child("unallocated").Index(i), u, "outside the block"))
		}
	}
	if o.Spec.Affinity != nil && *o.Spec.Affinity != "" && !strings.HasPrefix(*o.Spec.Affinity, "host:") {
		errs = append(errs, field.Invalid(p.Child("affinity"), *o.Spec.Affinity, `must be "host:<node>"`))
	}
	return errs
}

func validateBlockAffinity(o *BlockAffinity) field.ErrorList {
	p := field.NewPath("spec")
	_, errs := validateCIDR(p.Child("cidr"), o.Spec.CIDR, false)
	if o.Spec.Node == "" {
		errs = append(errs, field.Required(p.Child("node"), ""))
	}
	switch o.Spec.State {
	case BlockAffinityConfirmed, BlockAffinityPending, BlockAffinityPendingDeletion:
	default:
		errs = append(errs, field.NotSupported(p.Child("state"), o.Spec.State, []string{"confirmed", "pending", "pendingDeletion"}))
	}
	return errs
}
