package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Pod annotations the plugin reads.
const (
	// AnnotationIPAddrs asks for exact addresses: a JSON list, e.g. ["10.65.0.9"].
	AnnotationIPAddrs = "tabby.dev/ipAddrs"
	// AnnotationIPv4Pools limits the choice of pools: a JSON list of IPPool names or
	// CIDRs, e.g. ["pool-a", "10.65.0.0/16"].
	AnnotationIPv4Pools = "tabby.dev/ipv4pools"
)

// podIPAM is what a pod's annotations ask of IPAM.
type podIPAM struct {
	IP    netip.Addr // zero: any
	Pools []string   // empty: every pool that selects the node
}

// parseIPAMAnnotations reads AnnotationIPAddrs and AnnotationIPv4Pools; every error is
// CNI code 105 and names the annotation and its value.
func parseIPAMAnnotations(ann map[string]string) (podIPAM, error) {
	var out podIPAM
	addrs, hasAddrs := ann[AnnotationIPAddrs]
	pools, hasPools := ann[AnnotationIPv4Pools]
	if hasAddrs && hasPools {
		return out, badAnnotation(AnnotationIPAddrs, addrs,
			fmt.Errorf("cannot be combined with %s: an exact address already picks its pool", AnnotationIPv4Pools))
	}
	if hasAddrs {
		var list []string
		if err := json.Unmarshal([]byte(addrs), &list); err != nil {
			return out, badAnnotation(AnnotationIPAddrs, addrs, errors.New(`want a JSON list of addresses, e.g. ["10.65.0.9"]`))
		}
		if len(list) != 1 {
			return out, badAnnotation(AnnotationIPAddrs, addrs, fmt.Errorf("want exactly one IPv4 address, got %d", len(list)))
		}
		ip, err := netip.ParseAddr(strings.TrimSpace(list[0]))
		if err != nil {
			return out, badAnnotation(AnnotationIPAddrs, addrs, fmt.Errorf("%q is not an IP address", list[0]))
		}
		if !ip.Unmap().Is4() {
			return out, badAnnotation(AnnotationIPAddrs, addrs, fmt.Errorf("%s is not an IPv4 address: only IPv4 is supported", ip))
		}
		out.IP = ip.Unmap()
	}
	if hasPools {
		var list []string
		if err := json.Unmarshal([]byte(pools), &list); err != nil {
			return out, badAnnotation(AnnotationIPv4Pools, pools, errors.New(`want a JSON list of IPPool names or CIDRs, e.g. ["default-pool"]`))
		}
		for _, p := range list {
			p = strings.TrimSpace(p)
			if p == "" {
				return out, badAnnotation(AnnotationIPv4Pools, pools, errors.New("an empty pool name"))
			}
			if strings.Contains(p, "/") {
				pfx, err := netip.ParsePrefix(p)
				if err != nil {
					return out, badAnnotation(AnnotationIPv4Pools, pools, fmt.Errorf("%q is not a CIDR", p))
				}
				if !pfx.Addr().Is4() {
					return out, badAnnotation(AnnotationIPv4Pools, pools, fmt.Errorf("%s is not an IPv4 CIDR", p))
				}
			}
			out.Pools = append(out.Pools, p)
		}
	}
	return out, nil
}

func badAnnotation(key, value string, err error) error {
	return newErr(CodeBadAnnotation, "invalid pod annotation "+key,
		fmt.Errorf("annotation %s: %q: %w", key, value, err))
}
