package bgp

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// wellKnownCommunities are the RFC 1997 / RFC 3765 names accepted in PathAttrs.
var wellKnownCommunities = map[string]uint32{
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
	"no-peer":             0xFFFFFF04,
}

// ParseCommunity checks one community value as PathAttrs.Communities takes it: "AA:NN"
// (two 16-bit numbers), "AA:NN:MM" (large: three 32-bit numbers) or a well-known name.
func ParseCommunity(s string) error {
	_, _, err := parseCommunity(s)
	return err
}

// parseCommunity returns a standard community (large == nil) or a large one.
func parseCommunity(s string) (std uint32, large *bgp.LargeCommunity, err error) {
	if v, ok := wellKnownCommunities[strings.ToLower(s)]; ok {
		return v, nil, nil
	}
	parts := strings.Split(s, ":")
	switch len(parts) {
	case 2:
		var n [2]uint64
		for i, p := range parts {
			if n[i], err = strconv.ParseUint(p, 10, 16); err != nil {
				return 0, nil, fmt.Errorf("community %q: %q is not a number in 0-65535", s, p)
			}
		}
		return uint32(n[0])<<16 | uint32(n[1]), nil, nil
	case 3:
		var n [3]uint64
		for i, p := range parts {
			if n[i], err = strconv.ParseUint(p, 10, 32); err != nil {
				return 0, nil, fmt.Errorf("large community %q: %q is not a number in 0-4294967295", s, p)
			}
		}
		return 0, bgp.NewLargeCommunity(uint32(n[0]), uint32(n[1]), uint32(n[2])), nil
	}
	return 0, nil, fmt.Errorf("community %q is not AA:NN, AA:NN:MM or a well-known name", s)
}

func parseCommunities(list []string) (std []uint32, large []*bgp.LargeCommunity, err error) {
	for _, c := range list {
		v, l, err := parseCommunity(c)
		if err != nil {
			return nil, nil, err
		}
		if l != nil {
			large = append(large, l)
		} else {
			std = append(std, v)
		}
	}
	return std, large, nil
}
