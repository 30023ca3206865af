package ebpf

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
)

// Stage says which step of the program decided a packet in Explain.
type Stage uint8

const (
	// StagePassThrough: not IPv4, passed untouched.
	StagePassThrough Stage = 1
	// StageMalformed: a truncated or bad IPv4 header, dropped.
	StageMalformed Stage = 2
	// StageNoEndpoint: the program is attached but the interface has no endpoint.
	StageNoEndpoint Stage = 3
	// StageSpoof: the source IP or MAC is not the endpoint's (egress only).
	StageSpoof Stage = 4
	// StagePolicy: a policy entry matched; RuleID names it.
	StagePolicy Stage = 5
	// StageDefault: no policy entry matched; the endpoint's default decided.
	StageDefault Stage = 6
	// StageDHCP: a DHCP exchange between the workload and the host (requests to port
	// 67, replies from 169.254.1.1:67 to port 68): always allowed.
	StageDHCP Stage = 7
)

func (s Stage) String() string {
	switch s {
	case StagePassThrough:
		return "pass-through"
	case StageMalformed:
		return "malformed"
	case StageNoEndpoint:
		return "no-endpoint"
	case StageSpoof:
		return "spoof"
	case StagePolicy:
		return "policy"
	case StageDefault:
		return "default"
	case StageDHCP:
		return "dhcp"
	}
	return fmt.Sprintf("stage(%d)", uint8(s))
}

// Explanation is what the program decided for one packet in Explain.
type Explanation struct {
	// Result is what the program returned (Pass or Drop).
	Result  Result
	Verdict Verdict
	Stage   Stage
	// RuleID is the deciding policy entry's rule id (StagePolicy); 0 otherwise.
	RuleID uint32
	// PeerClass is the peer's class from the ipcache (StagePolicy, StageDefault).
	PeerClass uint32
	// Endpoint is the endpoint id configured on the interface (0: none).
	Endpoint uint32
}

// Explain-mode words of bpf/tabby.c (EXPLAIN_MAGIC0/1, EXPLAIN_DONE).
const (
	explainMagic0 = 0x7ab0e7a1
	explainMagic1 = 0x5ca1ab1e
	explainDone   = 0xd0e7a1ed
)

// skbContext is struct __sk_buff up to the end of cb: what BPF_PROG_TEST_RUN accepts
// as ctx_in for a TC program (mark, priority, ingress_ifindex, ifindex and cb may be
// set; the rest must be zero) and gives back as ctx_out.
type skbContext struct {
	Len            uint32
	PktType        uint32
	Mark           uint32
	QueueMapping   uint32
	Protocol       uint32
	VlanPresent    uint32
	VlanTCI        uint32
	VlanProto      uint32
	Priority       uint32
	IngressIfindex uint32
	Ifindex        uint32
	TCIndex        uint32
	CB             [5]uint32
}

// skbContextOut receives ctx_out: the kernel copies its whole struct __sk_buff (192
// bytes today) and fails with ENOSPC if the buffer is smaller, so leave room to grow.
type skbContextOut struct {
	skbContext
	_ [256 - 68]byte
}

// ErrNoExplainMode: the loaded program predates explain mode (it left the context as
// it was).
var ErrNoExplainMode = errors.New("the loaded program has no explain mode")

// Explain runs the loaded (and pinned, and attached) program of dir on frame in its
// explain mode, as if the frame went through interface ifindex (looked up in the
// calling thread's network namespace: call it from the namespace the interface lives
// in; ifindex <= 1 means the loopback interface). The program takes its normal path
// for a new flow (parse, anti-spoof, ipcache and policy lookups, endpoint default) but
// has no side effect: no conntrack lookup or entry, no counter, no drop event.
func (d *Datapath) Explain(dir Direction, ifindex int, frame []byte) (Explanation, error) {
	p, err := d.program(dir)
	if err != nil {
		return Explanation{}, err
	}
	if err := d.check(); err != nil {
		return Explanation{}, err
	}
	in := skbContext{CB: [5]uint32{explainMagic0, explainMagic1}}
	if ifindex > 1 {
		in.Ifindex = uint32(ifindex)
	}
	var out skbContextOut
	ret, err := p.Run(&ebpf.RunOptions{Data: frame, Context: in, ContextOut: &out})
	if err != nil {
		return Explanation{}, fmt.Errorf("explain %v on interface %d: %w", dir, ifindex, wrapNotSupported(err))
	}
	if out.CB[0] != explainDone {
		return Explanation{}, fmt.Errorf("explain %v: %w", dir, ErrNoExplainMode)
	}
	return Explanation{
		Result:    Result(int32(ret)),
		Verdict:   Verdict(out.CB[1] & 0xff),
		Stage:     Stage(out.CB[1] >> 8 & 0xff),
		RuleID:    out.CB[2],
		PeerClass: out.CB[3],
		Endpoint:  out.CB[4],
	}, nil
}

// LookupEndpoint returns the endpoint configured on interface ifindex; ErrNotFound
// if there is none.
func (d *Datapath) LookupEndpoint(ifindex int) (Endpoint, error) {
	if err := d.check(); err != nil {
		return Endpoint{}, err
	}
	var v tabbyEndpoint
	err := d.objs.TabbyEndpoints.Lookup(uint32(ifindex), &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Endpoint{}, fmt.Errorf("endpoint of interface %d: %w", ifindex, ErrNotFound)
	}
	if err != nil {
		return Endpoint{}, fmt.Errorf("endpoint lookup ifindex %d: %w", ifindex, err)
	}
	ep := Endpoint{ID: v.Id, IngressDefault: Verdict(v.IngressDefault), EgressDefault: Verdict(v.EgressDefault)}
	if v.Mac != [6]uint8{} {
		ep.MAC = net.HardwareAddr(append([]byte(nil), v.Mac[:]...))
	}
	for i := 0; i < int(v.N_ipv4) && i < MaxEndpointAddrs; i++ {
		ep.Addrs = append(ep.Addrs, wordIPv4(v.Ipv4[i]))
	}
	return ep, nil
}
