package policymaps

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"

	ciliumebpf "github.com/cilium/ebpf"
	"github.com/tabbynet/tabby/ebpf"
	"github.com/tabbynet/tabby/felix/policy"
)

// Pinned map names under the datapath's pin directory (ebpf.Load pins maps by name).
const (
	ipcacheMap   = "tabby_ipcache"
	policyMap    = "tabby_policy"
	endpointsMap = "tabby_endpoints"
)

// The raw layouts of ebpf/bpf/tabby.c's keys and values. The ebpf package keeps its
// generated types unexported and has no dump API, so they are mirrored here; a layout
// change there makes the size check in dump fail rather than misread.
type rawIPCacheKey struct {
	Prefixlen uint32
	Addr      uint32 // network byte order, read as a native word
}

type rawPolicyKey struct {
	Endpoint  uint32
	Direction uint8
	Proto     uint8
	Port      uint16
	Peer      uint32
}

type rawPolicyValue struct {
	Verdict   uint8
	Pad       [3]uint8
	RuleID    uint32
	LogRuleID uint32
}

type rawEndpoint struct {
	ID             uint32
	IngressDefault uint8
	EgressDefault  uint8
	MAC            [6]uint8
	IPv4           [ebpf.MaxEndpointAddrs]uint32
	NIPv4          uint32
}

// capacities are the maps' max entries (0: unknown, not checked).
type capacities struct {
	ipcache, policy, endpoints int
}

func (c capacities) check(want *state) error {
	for _, m := range []struct {
		name     string
		n, limit int
	}{
		{ipcacheMap, len(want.ipcache), c.ipcache},
		{policyMap, len(want.policy), c.policy},
		{endpointsMap, len(want.endpoints), c.endpoints},
	} {
		if m.limit > 0 && m.n > m.limit {
			return fmt.Errorf("%s: %d entries, the map holds %d: %w", m.name, m.n, m.limit, policy.ErrTooLarge)
		}
	}
	return nil
}

func openPinned(dir, name string, keySize, valueSize int) (*ciliumebpf.Map, error) {
	m, err := ciliumebpf.LoadPinnedMap(filepath.Join(dir, name), &ciliumebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("open pinned %s: %w", name, err)
	}
	if int(m.KeySize()) != keySize || int(m.ValueSize()) != valueSize {
		_ = m.Close()
		return nil, fmt.Errorf("pinned %s: key/value size %d/%d, want %d/%d: %w", name, m.KeySize(),
			m.ValueSize(), keySize, valueSize, ErrInvalid)
	}
	return m, nil
}

// dump reads the three maps pinned under dir.
func dump(dir string) (*state, capacities, error) {
	s := newState()
	var caps capacities

	m, err := openPinned(dir, ipcacheMap, binary.Size(rawIPCacheKey{}), 4)
	if err != nil {
		return nil, caps, err
	}
	caps.ipcache = int(m.MaxEntries())
	var ik rawIPCacheKey
	var class uint32
	it := m.Iterate()
	for it.Next(&ik, &class) {
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], ik.Addr)
		p := netip.PrefixFrom(netip.AddrFrom4(b), int(ik.Prefixlen))
		if p.IsValid() {
			s.ipcache[p.Masked()] = class
		}
	}
	err = it.Err()
	_ = m.Close()
	if err != nil {
		return nil, caps, fmt.Errorf("dump %s: %w", ipcacheMap, err)
	}

	m, err = openPinned(dir, policyMap, binary.Size(rawPolicyKey{}), binary.Size(rawPolicyValue{}))
	if err != nil {
		return nil, caps, err
	}
	caps.policy = int(m.MaxEntries())
	var pk rawPolicyKey
	var pv rawPolicyValue
	it = m.Iterate()
	for it.Next(&pk, &pv) {
		k := ebpf.PolicyKey{Endpoint: pk.Endpoint, Direction: ebpf.Direction(pk.Direction), Proto: pk.Proto,
			Port: pk.Port, Peer: pk.Peer}
		s.policy[k] = ebpf.PolicyValue{Verdict: ebpf.Verdict(pv.Verdict), RuleID: pv.RuleID, LogRuleID: pv.LogRuleID}
	}
	err = it.Err()
	_ = m.Close()
	if err != nil {
		return nil, caps, fmt.Errorf("dump %s: %w", policyMap, err)
	}

	m, err = openPinned(dir, endpointsMap, 4, binary.Size(rawEndpoint{}))
	if err != nil {
		return nil, caps, err
	}
	caps.endpoints = int(m.MaxEntries())
	var ifindex uint32
	var re rawEndpoint
	it = m.Iterate()
	for it.Next(&ifindex, &re) {
		s.endpoints[int(ifindex)] = fromRaw(re)
	}
	err = it.Err()
	_ = m.Close()
	if err != nil {
		return nil, caps, fmt.Errorf("dump %s: %w", endpointsMap, err)
	}
	return s, caps, nil
}

// fromRaw decodes an endpoint value; what the Writer would not have written (too many
// addresses) decodes to a value no desired one equals, so it gets rewritten.
func fromRaw(re rawEndpoint) endpointValue {
	v := endpointValue{ID: re.ID, IngressDefault: ebpf.Verdict(re.IngressDefault),
		EgressDefault: ebpf.Verdict(re.EgressDefault), MAC: re.MAC, HasMAC: re.MAC != [6]byte{}}
	n := int(re.NIPv4)
	if n > ebpf.MaxEndpointAddrs {
		v.N = -1
		n = ebpf.MaxEndpointAddrs
	} else {
		v.N = n
	}
	for i := 0; i < n; i++ {
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], re.IPv4[i])
		v.Addrs[i] = netip.AddrFrom4(b)
	}
	return v
}
