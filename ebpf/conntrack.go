package ebpf

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// Conntrack timeouts; the program applies the same ones when it looks a flow up.
const (
	ConntrackTimeoutTCP   = time.Hour
	ConntrackTimeoutOther = 2 * time.Minute
)

// SweepConntrack deletes the flows idle for longer than their timeout, which the
// program no longer honours, so the map holds live flows only (it is also an LRU, so
// it never fills up, but an expired entry would still evict a live one). It returns
// how many flows it kept and deleted.
func (d *Datapath) SweepConntrack() (kept, deleted int, err error) {
	if err := d.check(); err != nil {
		return 0, 0, err
	}
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil { // bpf_ktime_get_ns's clock
		return 0, 0, fmt.Errorf("conntrack sweep: clock: %w", err)
	}
	now := uint64(ts.Nano())
	var k tabbyCtKey
	var v tabbyCtValue
	var stale []tabbyCtKey
	it := d.objs.TabbyConntrack.Iterate()
	for it.Next(&k, &v) {
		timeout := uint64(ConntrackTimeoutOther)
		if k.Proto == unix.IPPROTO_TCP {
			timeout = uint64(ConntrackTimeoutTCP)
		}
		if now > v.LastSeenNs && now-v.LastSeenNs >= timeout {
			stale = append(stale, k)
		} else {
			kept++
		}
	}
	if err := it.Err(); err != nil {
		return kept, 0, fmt.Errorf("conntrack sweep: iterate: %w", err)
	}
	for _, k := range stale {
		// Skip a flow a packet has refreshed since it was read.
		if d.objs.TabbyConntrack.Lookup(k, &v) == nil && now-min(now, v.LastSeenNs) < uint64(ConntrackTimeoutOther) {
			kept++
			continue
		}
		if err := d.objs.TabbyConntrack.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return kept, deleted, fmt.Errorf("conntrack sweep: delete: %w", err)
		}
		deleted++
	}
	return kept, deleted, nil
}
