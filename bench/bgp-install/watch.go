package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tabbynet/tabby/test/netnode"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// namePrefix starts every name the benchmark gives a namespace, file or directory.
const namePrefix = "tbench-"

// Kernel route protocols.
const (
	protoLearned = netlink.RouteProtocol(117) // felix's BGP-learned routes
	protoZebra   = netlink.RouteProtocol(186) // RTPROT_BGP: zebra's BGP routes
)

// prefixSet is the benchmark's n /32s from first.
type prefixSet struct {
	first uint32
	n     int
}

func newPrefixSet(base netip.Addr, n int) prefixSet {
	b := base.As4()
	return prefixSet{first: uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]), n: n}
}

func (s prefixSet) at(i int) netip.Prefix { return prefixAt(s.first, i) }

// index is the position of dst in the set, or -1.
func (s prefixSet) index(dst *netlinkDst) int {
	if dst == nil || dst.bits != 32 {
		return -1
	}
	i := int64(dst.addr) - int64(s.first)
	if i < 0 || i >= int64(s.n) {
		return -1
	}
	return int(i)
}

// netlinkDst is a route's IPv4 destination.
type netlinkDst struct {
	addr uint32
	bits int
}

func dstOf(r *netlink.Route) *netlinkDst {
	if r.Dst == nil {
		return nil
	}
	ip4 := r.Dst.IP.To4()
	if ip4 == nil {
		return nil
	}
	bits, _ := r.Dst.Mask.Size()
	return &netlinkDst{addr: uint32(ip4[0])<<24 | uint32(ip4[1])<<16 | uint32(ip4[2])<<8 | uint32(ip4[3]), bits: bits}
}

// arrivals counts the set's prefixes as they show up in a namespace's kernel as routes
// of one protocol: a netlink route subscription, stamped by a goroutine that does
// nothing else. Only new routes count (the table must hold none of them at the start).
type arrivals struct {
	ns    string
	set   prefixSet
	proto netlink.RouteProtocol

	mu    sync.Mutex
	seen  []bool
	count int
	times arrivalTimes
	lost  error // the subscription failed: events may be missing
	full  chan struct{}
	stop  context.CancelFunc
}

// subscribe starts counting in the named namespace until close.
func subscribe(ctx context.Context, ns string, proto netlink.RouteProtocol, set prefixSet) (*arrivals, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer h.Close()
	ctx, cancel := context.WithCancel(ctx)
	a := &arrivals{ns: ns, set: set, proto: proto, seen: make([]bool, set.n), full: make(chan struct{}), stop: cancel}
	ch := make(chan netlink.RouteUpdate, 1<<16)
	done := make(chan struct{})
	go func() { <-ctx.Done(); close(done) }()
	err = netlink.RouteSubscribeWithOptions(ch, done, netlink.RouteSubscribeOptions{
		Namespace:              &h,
		ReceiveBufferSize:      256 << 20,
		ReceiveBufferForceSize: true,
		ErrorCallback: func(err error) {
			if ctx.Err() != nil { // closing the subscription reports an error too
				return
			}
			a.mu.Lock()
			if a.lost == nil {
				a.lost = fmt.Errorf("route subscription in %s: %w", ns, err)
			}
			a.mu.Unlock()
		},
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("subscribe to routes in %s: %w", ns, err)
	}
	go func() {
		for u := range ch {
			if u.Type != syscall.RTM_NEWROUTE || u.Protocol != proto {
				continue
			}
			i := set.index(dstOf(&u.Route))
			if i < 0 {
				continue
			}
			now := time.Now()
			a.mu.Lock()
			if !a.seen[i] {
				a.seen[i] = true
				a.count++
				if a.count == 1 {
					a.times.first = now
				}
				for k := range a.times.quarter {
					if a.count == (k+1)*set.n/4 && a.times.quarter[k].IsZero() {
						a.times.quarter[k] = now
					}
				}
				if a.count == set.n {
					a.times.last = now
					close(a.full)
				}
			}
			a.mu.Unlock()
		}
	}()
	return a, nil
}

func (a *arrivals) close() { a.stop() }

// arrivalTimes are when the first route, a quarter, half and three quarters of them,
// and the last one arrived.
type arrivalTimes struct {
	first   time.Time
	quarter [3]time.Time
	last    time.Time
	polled  bool // last is from a table dump (the subscription lost events; quarters may be missing)
}

// wait returns when every prefix of the set arrived. If the subscription lost events
// it falls back to dumping the table every 100 ms (polled; last is the dump that found
// them all).
func (a *arrivals) wait(ctx context.Context, h *netlink.Handle, timeout time.Duration) (arrivalTimes, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-a.full:
			a.mu.Lock()
			defer a.mu.Unlock()
			return a.times, nil
		case <-ctx.Done():
			return arrivalTimes{}, ctx.Err()
		case <-tick.C:
		}
		a.mu.Lock()
		lost, count, times := a.lost, a.count, a.times
		a.mu.Unlock()
		if lost != nil {
			n, err := countRoutes(h, a.proto, a.set)
			if err != nil {
				return arrivalTimes{}, err
			}
			if n >= a.set.n {
				times.last, times.polled = time.Now(), true
				return times, nil
			}
		}
		if time.Now().After(deadline) {
			return arrivalTimes{}, fmt.Errorf("%d of %d routes (protocol %d) in %s after %v (subscription: %v)",
				count, a.set.n, a.proto, a.ns, timeout, lost)
		}
	}
}

// countRoutes counts the set's routes of protocol proto in h's main table.
func countRoutes(h *netlink.Handle, proto netlink.RouteProtocol, set prefixSet) (int, error) {
	var n int
	var err error
	for range 5 {
		n = 0
		err = h.RouteListFilteredIter(netlink.FAMILY_V4, &netlink.Route{Protocol: proto, Table: unix.RT_TABLE_MAIN},
			netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE, func(r netlink.Route) bool {
				if set.index(dstOf(&r)) >= 0 {
					n++
				}
				return true
			})
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		return 0, fmt.Errorf("list routes: %w", err)
	}
	return n, nil
}

// waitCount polls (every 100 ms, for timeout) until countRoutes is want.
func waitCount(ctx context.Context, h *netlink.Handle, proto netlink.RouteProtocol, set prefixSet, want int, timeout time.Duration) error {
	return netnode.Poll(ctx, timeout, 100*time.Millisecond, func() error {
		n, err := countRoutes(h, proto, set)
		if err != nil {
			return err
		}
		if n != want {
			return fmt.Errorf("%d routes of protocol %d in the range, want %d", n, proto, want)
		}
		return nil
	})
}

// openNetlink is a netlink handle inside the named namespace, closed by cl.
func openNetlink(ns string, cl *netnode.Cleanup) (*netlink.Handle, error) {
	nsh, err := netns.GetFromName(ns)
	if err != nil {
		return nil, fmt.Errorf("open namespace %s: %w", ns, err)
	}
	defer nsh.Close()
	h, err := netlink.NewHandleAt(nsh)
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", ns, err)
	}
	cl.Add("close the netlink handle in "+ns, func() error { h.Close(); return nil })
	return h, nil
}

// cpuTimes is the CPU time (user + system) of each process in some namespaces, by
// "<command>" (summed over processes of the same name).
type cpuTimes map[string]time.Duration

// clockTick is the unit of /proc/<pid>/stat's times (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// nsProc is a process inside one of the benchmark's namespaces.
type nsProc struct {
	pid  int
	comm string
	cpu  time.Duration // user + system so far
}

// nsProcs lists the processes whose network namespace is one of namespaces.
func nsProcs(namespaces ...string) ([]nsProc, error) {
	want := map[uint64]bool{}
	for _, ns := range namespaces {
		var st syscall.Stat_t
		if err := syscall.Stat(netnode.NSPath(ns), &st); err != nil {
			return nil, fmt.Errorf("stat namespace %s: %w", ns, err)
		}
		want[st.Ino] = true
	}
	procs, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	var out []nsProc
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		var st syscall.Stat_t
		if syscall.Stat(filepath.Join("/proc", p.Name(), "ns", "net"), &st) != nil || !want[st.Ino] {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", p.Name(), "stat"))
		if err != nil {
			continue // gone
		}
		// pid (comm) state ppid ... utime(14) stime(15): comm may hold blanks.
		s := string(b)
		lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if lp < 0 || rp < lp {
			continue
		}
		f := strings.Fields(s[rp+1:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		out = append(out, nsProc{pid: pid, comm: s[lp+1 : rp], cpu: time.Duration(ut+stime) * clockTick})
	}
	return out, nil
}

// nsCPU reads the CPU time so far of every process whose network namespace is one of
// namespaces.
func nsCPU(namespaces ...string) (cpuTimes, error) {
	ps, err := nsProcs(namespaces...)
	if err != nil {
		return nil, err
	}
	self := ""
	if exe, err := os.Executable(); err == nil {
		self = filepath.Base(exe)
		self = self[:min(len(self), 15)] // the kernel's comm
	}
	out := cpuTimes{}
	for _, p := range ps {
		if p.comm == self {
			p.comm = "speaker" // this program as the reference speaker
		}
		out[p.comm] += p.cpu
	}
	return out, nil
}

// selfCPU is this process's CPU time so far (user + system, every thread).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// since is c minus before, per command.
func (c cpuTimes) since(before cpuTimes) cpuTimes {
	out := cpuTimes{}
	for k, v := range c {
		out[k] = v - before[k]
	}
	return out
}

func (c cpuTimes) total() time.Duration {
	var t time.Duration
	for _, v := range c {
		t += v
	}
	return t
}

// String lists the processes by name, e.g. "bgpd 1.23s + zebra 0.40s".
func (c cpuTimes) String() string {
	names := make([]string, 0, len(c))
	for k := range c {
		names = append(names, k)
	}
	slices.Sort(names)
	parts := make([]string, 0, len(names))
	for _, k := range names {
		parts = append(parts, fmt.Sprintf("%s %.2fs", k, c[k].Seconds()))
	}
	return strings.Join(parts, " + ")
}
