package ebpf

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// EndpointCounterKey names a per-endpoint counter: the host-side interface the
// program runs on (the tabby_endpoints key) and the policy direction.
type EndpointCounterKey struct {
	Ifindex   int
	Direction Direction
}

// EndpointCounter is what one endpoint's program did with its IPv4 packets in one
// direction, summed over CPUs: every packet counts once (established flows too),
// as allowed or denied.
type EndpointCounter struct {
	AllowedPackets, AllowedBytes uint64
	DeniedPackets, DeniedBytes   uint64
	// FirstAllowed and LastAllowed are when the first and the last allowed packet
	// passed (wall clock, converted from the kernel's monotonic clock); zero before
	// the first.
	FirstAllowed, LastAllowed time.Time
}

// EndpointCounter returns an interface's counter in dir; zero if it never counted.
func (d *Datapath) EndpointCounter(ifindex int, dir Direction) (EndpointCounter, error) {
	if err := d.check(); err != nil {
		return EndpointCounter{}, err
	}
	var per []tabbyEpCounter
	k := tabbyEpCounterKey{Ifindex: uint32(ifindex), Direction: uint8(dir)}
	err := d.objs.TabbyEpCounters.Lookup(k, &per)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return EndpointCounter{}, nil
	}
	if err != nil {
		return EndpointCounter{}, fmt.Errorf("endpoint counter %d %v: %w", ifindex, dir, err)
	}
	return sumEndpoint(per), nil
}

// EndpointCounters reads every per-endpoint counter.
func (d *Datapath) EndpointCounters() (map[EndpointCounterKey]EndpointCounter, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	out := map[EndpointCounterKey]EndpointCounter{}
	var k tabbyEpCounterKey
	var per []tabbyEpCounter
	it := d.objs.TabbyEpCounters.Iterate()
	for it.Next(&k, &per) {
		out[EndpointCounterKey{Ifindex: int(k.Ifindex), Direction: Direction(k.Direction)}] = sumEndpoint(per)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("endpoint counters: %w", err)
	}
	return out, nil
}

// DeleteEndpointCounters forgets an interface's counters (both directions), e.g.
// when its programs come off, so that a later interface with the same index starts
// from zero. Counters that were not there are no error.
func (d *Datapath) DeleteEndpointCounters(ifindex int) error {
	if err := d.check(); err != nil {
		return err
	}
	for _, dir := range []Direction{Ingress, Egress} {
		k := tabbyEpCounterKey{Ifindex: uint32(ifindex), Direction: uint8(dir)}
		if err := d.objs.TabbyEpCounters.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete endpoint counter %d %v: %w", ifindex, dir, err)
		}
	}
	return nil
}

func sumEndpoint(per []tabbyEpCounter) EndpointCounter {
	var c EndpointCounter
	var first, last uint64
	for _, p := range per {
		if p.FirstNs != 0 && (first == 0 || p.FirstNs < first) {
			first = p.FirstNs
		}
		last = max(last, p.LastNs)
		c.AllowedPackets += p.AllowedPackets
		c.AllowedBytes += p.AllowedBytes
		c.DeniedPackets += p.DeniedPackets
		c.DeniedBytes += p.DeniedBytes
	}
	if first != 0 {
		if boot, ok := monotonicZero(); ok {
			c.FirstAllowed, c.LastAllowed = boot.Add(time.Duration(first)), boot.Add(time.Duration(last))
		}
	}
	return c
}

// monotonicZero is the wall-clock time at which CLOCK_MONOTONIC (bpf_ktime_get_ns's
// clock) read zero, so that a kernel timestamp ns happened at monotonicZero()+ns.
func monotonicZero() (time.Time, bool) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return time.Time{}, false
	}
	return time.Now().Round(0).Add(-time.Duration(ts.Nano())), true
}

// RuleCounters reads every rule counter (rule 0: flows an endpoint default decided).
func (d *Datapath) RuleCounters() (map[uint32]Counter, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	out := map[uint32]Counter{}
	var id uint32
	var per []tabbyCounter
	it := d.objs.TabbyCounters.Iterate()
	for it.Next(&id, &per) {
		var c Counter
		for _, p := range per {
			c.Packets += p.Packets
			c.Bytes += p.Bytes
		}
		out[id] = c
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("rule counters: %w", err)
	}
	return out, nil
}

// DeleteRuleCounters forgets the counters of rule ids (when a rule id comes to name
// another rule); ids without a counter are no error.
func (d *Datapath) DeleteRuleCounters(ids ...uint32) error {
	if err := d.check(); err != nil {
		return err
	}
	for _, id := range ids {
		if err := d.objs.TabbyCounters.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete rule counter %d: %w", id, err)
		}
	}
	return nil
}
