package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Direction is a policy direction as seen by the workload.
type Direction uint8

const (
	// Ingress is traffic entering the workload (TC egress on the host-side interface).
	Ingress Direction = 0
	// Egress is traffic leaving the workload (TC ingress on the host-side interface).
	Egress Direction = 1
)

func (d Direction) String() string {
	switch d {
	case Ingress:
		return "ingress"
	case Egress:
		return "egress"
	}
	return fmt.Sprintf("direction(%d)", uint8(d))
}

// Verdict is what a rule or an endpoint default does with a new flow.
type Verdict uint8

const (
	// Allow passes the packet and opens a conntrack entry.
	Allow Verdict = 1
	// Deny drops the packet and emits a drop event.
	Deny Verdict = 2
)

// ClassWorld is the peer class of addresses the ipcache does not know.
const ClassWorld uint32 = 0

// ClassAny in a PolicyKey matches every peer class.
const ClassAny uint32 = 0xffffffff

// MaxEndpointAddrs is how many IPv4 addresses an endpoint may own.
const MaxEndpointAddrs = 4

// PolicyKey selects a policy entry. The program looks up, most specific first:
// (Proto, Port, class), (Proto, 0, class), (0, 0, class), then the same three
// with Peer = ClassAny; the first hit decides, otherwise the endpoint default.
// Port is the destination port in host order (0 = any); Proto 0 = any protocol.
// For ICMP the port probe is two: ICMPExactPort(type, code), then ICMPTypePort(type)
// (an ICMP packet of type 255, or a non-first fragment, skips both).
type PolicyKey struct {
	Endpoint  uint32
	Direction Direction
	Proto     uint8
	Port      uint16
	Peer      uint32
}

// ICMPExactPort is the PolicyKey port of one ICMP type and code: (type+1)<<8 | code.
func ICMPExactPort(typ, code uint8) uint16 { return (uint16(typ)+1)<<8 | uint16(code) }

// ICMPTypePort is the PolicyKey port of every code of an ICMP type: type+1.
func ICMPTypePort(typ uint8) uint16 { return uint16(typ) + 1 }

// PolicyValue is the decision for a PolicyKey; RuleID names the counter it bumps
// and shows up in drop events. Rule id 0 is reserved for endpoint defaults.
// LogRuleID, when not 0, is a Log rule that matched before the decision: the
// program bumps its counter and emits a DropLog event naming it (with the verdict
// that follows), then applies Verdict.
type PolicyValue struct {
	Verdict   Verdict
	RuleID    uint32
	LogRuleID uint32
}

// Endpoint configures one workload interface (keyed by the host-side ifindex).
type Endpoint struct {
	ID             uint32
	IngressDefault Verdict
	EgressDefault  Verdict
	// MAC, if set, must be the source of every frame from the workload.
	MAC net.HardwareAddr
	// Addrs are the workload's IPv4 addresses: packets from the workload with any
	// other source are dropped as spoofed (DHCP from 0.0.0.0 excepted).
	Addrs []netip.Addr
}

// Counter is a rule's packet and byte count, summed over CPUs.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// ipv4Word returns a in network byte order as the uint32 the kernel stores (the
// program compares raw header words; this package targets little-endian hosts).
func ipv4Word(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func wordIPv4(w uint32) netip.Addr {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], w)
	return netip.AddrFrom4(b)
}

func (d *Datapath) check() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	return nil
}

// SetIPCache maps an IPv4 prefix to a peer class id.
func (d *Datapath) SetIPCache(p netip.Prefix, class uint32) error {
	k, err := ipcacheKey(p)
	if err != nil {
		return err
	}
	if err := d.check(); err != nil {
		return err
	}
	if err := d.objs.TabbyIpcache.Put(k, class); err != nil {
		return fmt.Errorf("ipcache put %s: %w", p, err)
	}
	return nil
}

// DeleteIPCache removes a prefix; ErrNotFound if it was not there.
func (d *Datapath) DeleteIPCache(p netip.Prefix) error {
	k, err := ipcacheKey(p)
	if err != nil {
		return err
	}
	if err := d.check(); err != nil {
		return err
	}
	return deleteErr(d.objs.TabbyIpcache.Delete(k), "ipcache", p)
}

func ipcacheKey(p netip.Prefix) (tabbyIpcacheKey, error) {
	if !p.IsValid() || !p.Addr().Is4() {
		return tabbyIpcacheKey{}, fmt.Errorf("ipcache prefix %s: only IPv4: %w", p, ErrInvalid)
	}
	p = p.Masked()
	return tabbyIpcacheKey{Prefixlen: uint32(p.Bits()), Addr: ipv4Word(p.Addr())}, nil
}

// SetPolicy writes one policy entry.
func (d *Datapath) SetPolicy(k PolicyKey, v PolicyValue) error {
	if k.Direction != Ingress && k.Direction != Egress {
		return fmt.Errorf("policy key: %v: %w", k.Direction, ErrInvalid)
	}
	if v.Verdict != Allow && v.Verdict != Deny {
		return fmt.Errorf("policy verdict %d: %w", v.Verdict, ErrInvalid)
	}
	if err := d.check(); err != nil {
		return err
	}
	val := tabbyPolicyValue{Verdict: uint8(v.Verdict), RuleId: v.RuleID, LogRuleId: v.LogRuleID}
	if err := d.objs.TabbyPolicy.Put(policyKey(k), val); err != nil {
		return fmt.Errorf("policy put %+v: %w", k, err)
	}
	return nil
}

// DeletePolicy removes one policy entry; ErrNotFound if it was not there.
func (d *Datapath) DeletePolicy(k PolicyKey) error {
	if err := d.check(); err != nil {
		return err
	}
	return deleteErr(d.objs.TabbyPolicy.Delete(policyKey(k)), "policy", k)
}

func policyKey(k PolicyKey) tabbyPolicyKey {
	return tabbyPolicyKey{Endpoint: k.Endpoint, Direction: uint8(k.Direction), Proto: k.Proto,
		Port: k.Port, Peer: k.Peer}
}

// SetEndpoint configures the workload behind host-side interface ifindex.
// Until it is set, the attached program drops the interface's IPv4 traffic.
func (d *Datapath) SetEndpoint(ifindex int, ep Endpoint) error {
	if len(ep.Addrs) > MaxEndpointAddrs {
		return fmt.Errorf("endpoint %d: %d addresses, at most %d: %w", ep.ID, len(ep.Addrs),
			MaxEndpointAddrs, ErrInvalid)
	}
	v := tabbyEndpoint{Id: ep.ID, IngressDefault: uint8(ep.IngressDefault),
		EgressDefault: uint8(ep.EgressDefault), N_ipv4: uint32(len(ep.Addrs))}
	for i, a := range ep.Addrs {
		if !a.Is4() {
			return fmt.Errorf("endpoint %d address %s: only IPv4: %w", ep.ID, a, ErrInvalid)
		}
		v.Ipv4[i] = ipv4Word(a)
	}
	if len(ep.MAC) != 0 {
		if len(ep.MAC) != 6 {
			return fmt.Errorf("endpoint %d MAC %s: %w", ep.ID, ep.MAC, ErrInvalid)
		}
		copy(v.Mac[:], ep.MAC)
	}
	if err := d.check(); err != nil {
		return err
	}
	if err := d.objs.TabbyEndpoints.Put(uint32(ifindex), v); err != nil {
		return fmt.Errorf("endpoint put ifindex %d: %w", ifindex, err)
	}
	return nil
}

// DeleteEndpoint removes an interface's endpoint; ErrNotFound if it was not there.
func (d *Datapath) DeleteEndpoint(ifindex int) error {
	if err := d.check(); err != nil {
		return err
	}
	return deleteErr(d.objs.TabbyEndpoints.Delete(uint32(ifindex)), "endpoint", ifindex)
}

// RuleCounter returns a rule's counter (rule 0: flows decided by an endpoint
// default). A rule that never matched reads as zero.
func (d *Datapath) RuleCounter(ruleID uint32) (Counter, error) {
	if err := d.check(); err != nil {
		return Counter{}, err
	}
	var per []tabbyCounter
	err := d.objs.TabbyCounters.Lookup(ruleID, &per)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Counter{}, nil
	}
	if err != nil {
		return Counter{}, fmt.Errorf("counter %d: %w", ruleID, err)
	}
	var c Counter
	for _, p := range per {
		c.Packets += p.Packets
		c.Bytes += p.Bytes
	}
	return c, nil
}

// FlushConntrack forgets every tracked flow, so the next packet of each is
// evaluated against the current policy.
func (d *Datapath) FlushConntrack() error {
	if err := d.check(); err != nil {
		return err
	}
	var k tabbyCtKey
	var keys []tabbyCtKey
	it := d.objs.TabbyConntrack.Iterate()
	var v tabbyCtValue
	for it.Next(&k, &v) {
		keys = append(keys, k)
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("conntrack iterate: %w", err)
	}
	for _, k := range keys {
		if err := d.objs.TabbyConntrack.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("conntrack delete: %w", err)
		}
	}
	return nil
}

func deleteErr(err error, what string, key any) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("%s %v: %w", what, key, ErrNotFound)
	}
	return fmt.Errorf("%s delete %v: %w", what, key, err)
}
