package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/tabbynet/tabby/bench/internal/benchutil"
	tebpf "github.com/tabbynet/tabby/ebpf"
	"github.com/tabbynet/tabby/test/netnode"
	"golang.org/x/sys/unix"
)

// Endpoint ids and peer classes of the two pods; decoy entries use classes from
// decoyClass up, which no address has.
const (
	epA, epB         = 1, 2
	classA, classB   = 11, 12
	decoyClass       = 100
	allowA, allowB   = 1, 2 // rule ids of the two allowing entries
	firstDecoyRuleID = 100
	probeDPort       = 5202 // the test-run packet's port: no entry matches it
)

// tabby is Tabby's datapath loaded under a private bpffs, with both programs at hand
// for their run statistics and BPF_PROG_TEST_RUN.
type tabby struct {
	d      *tebpf.Datapath
	t      *topo
	fromWl *ebpf.Program // TC ingress of the host veths (the pods' egress)
	toWl   *ebpf.Program // TC egress of the host veths (the pods' ingress)
	decoys int           // decoy entries per policed endpoint and direction
}

// loadTabby mounts a bpffs under dir, loads the datapath there and configures the two
// pods' endpoints, the ipcache and the two allowing entries (A egress to B:5201, B
// ingress from A on 5201). Everything is removed by cl.
func loadTabby(cl *netnode.Cleanup, dir string, t *topo) (*tabby, error) {
	mnt := filepath.Join(dir, "bpffs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return nil, fmt.Errorf("bpffs dir: %w", err)
	}
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		return nil, fmt.Errorf("mount bpffs: %w", err)
	}
	cl.Add("unmount "+mnt, func() error {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			return err
		}
		return nil
	})
	d, err := tebpf.Load(tebpf.Options{PinDir: filepath.Join(mnt, "tabby")})
	if err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	cl.Add("close the datapath", d.Close)
	cl.Add("unpin the datapath", d.Unpin)
	tb := &tabby{d: d, t: t}
	for name, p := range map[string]**ebpf.Program{"tabby_from_wl": &tb.fromWl, "tabby_to_wl": &tb.toWl} {
		prog, err := ebpf.LoadPinnedProgram(filepath.Join(d.PinDir(), "progs", name), nil)
		if err != nil {
			return nil, fmt.Errorf("load pinned %s: %w", name, err)
		}
		cl.Add("close "+name, prog.Close)
		*p = prog
	}
	cl.Add("detach the programs", tb.detach)

	a, b := netip.MustParseAddr(podAAddr), netip.MustParseAddr(podBAddr)
	eps := []struct {
		ifindex int
		ep      tebpf.Endpoint
	}{
		{t.ifA, tebpf.Endpoint{ID: epA, IngressDefault: tebpf.Deny, EgressDefault: tebpf.Deny, MAC: t.macA, Addrs: []netip.Addr{a}}},
		{t.ifB, tebpf.Endpoint{ID: epB, IngressDefault: tebpf.Deny, EgressDefault: tebpf.Deny, MAC: t.macB, Addrs: []netip.Addr{b}}},
		// BPF_PROG_TEST_RUN packets arrive on loopback: B's endpoint and policy again.
		{tebpf.LoopbackIfindex, tebpf.Endpoint{ID: epB, IngressDefault: tebpf.Deny, EgressDefault: tebpf.Deny, Addrs: []netip.Addr{b}}},
	}
	for _, e := range eps {
		if err := d.SetEndpoint(e.ifindex, e.ep); err != nil {
			return nil, fmt.Errorf("endpoint: %w", err)
		}
	}
	for p, c := range map[netip.Prefix]uint32{netip.PrefixFrom(a, 32): classA, netip.PrefixFrom(b, 32): classB} {
		if err := d.SetIPCache(p, c); err != nil {
			return nil, fmt.Errorf("ipcache: %w", err)
		}
	}
	for _, k := range []struct {
		key tebpf.PolicyKey
		id  uint32
	}{
		{tebpf.PolicyKey{Endpoint: epA, Direction: tebpf.Egress, Proto: unix.IPPROTO_TCP, Port: iperfPort, Peer: classB}, allowA},
		{tebpf.PolicyKey{Endpoint: epB, Direction: tebpf.Ingress, Proto: unix.IPPROTO_TCP, Port: iperfPort, Peer: classA}, allowB},
	} {
		if err := d.SetPolicy(k.key, tebpf.PolicyValue{Verdict: tebpf.Allow, RuleID: k.id}); err != nil {
			return nil, fmt.Errorf("allowing entry: %w", err)
		}
	}
	return tb, nil
}

// sweepMounts unmounts the bpffs of runs that were killed before they could tear
// down (a mount point under a run directory LeftByDeadRun names), so that SweepStale
// can remove their directories.
func sweepMounts() error {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return fmt.Errorf("read mounts: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || f[2] != "bpf" || filepath.Base(f[1]) != "bpffs" ||
			!netnode.LeftByDeadRun(namePrefix, filepath.Base(filepath.Dir(f[1]))) {
			continue
		}
		step("unmounting %s left by a killed run", f[1])
		if err := unix.Unmount(f[1], unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", f[1], err)
		}
	}
	return nil
}

// decoyKeys are the i-th decoy entries of A's egress and B's ingress: peers that
// exist nowhere, half of them on the iperf3 port, half on other ports.
func decoyKeys(i int) [2]tebpf.PolicyKey {
	port := uint16(iperfPort)
	if i%2 == 0 {
		port = uint16(1 + (i/2)%60000)
		if port >= iperfPort {
			port += 2 // neither the iperf3 port nor the probe's
		}
	}
	peer := uint32(decoyClass + i)
	return [2]tebpf.PolicyKey{
		{Endpoint: epA, Direction: tebpf.Egress, Proto: unix.IPPROTO_TCP, Port: port, Peer: peer},
		{Endpoint: epB, Direction: tebpf.Ingress, Proto: unix.IPPROTO_TCP, Port: port, Peer: peer},
	}
}

// setRules makes each policed endpoint direction hold n entries: the allowing one
// and n-1 decoys.
func (tb *tabby) setRules(n int) error {
	want := n - 1
	for i := tb.decoys; i < want; i++ {
		for j, k := range decoyKeys(i) {
			v := tebpf.PolicyValue{Verdict: tebpf.Allow, RuleID: uint32(firstDecoyRuleID + 2*i + j)}
			if err := tb.d.SetPolicy(k, v); err != nil {
				return fmt.Errorf("decoy entry: %w", err)
			}
		}
	}
	for i := tb.decoys - 1; i >= want; i-- {
		for _, k := range decoyKeys(i) {
			if err := tb.d.DeletePolicy(k); err != nil {
				return fmt.Errorf("decoy entry: %w", err)
			}
		}
	}
	tb.decoys = want
	return tb.d.FlushConntrack()
}

// attach puts both programs on both host veths (inside the node namespace) and
// returns the mode (TCX or classic TC).
func (tb *tabby) attach() (tebpf.AttachMode, error) {
	var mode tebpf.AttachMode
	err := tb.t.nd.Do(func() error {
		for _, ifi := range []int{tb.t.ifA, tb.t.ifB} {
			m, err := tb.d.Attach(ifi, tebpf.AttachOptions{})
			if err != nil {
				return fmt.Errorf("attach: %w", err)
			}
			mode = m
		}
		return nil
	})
	return mode, err
}

// detach takes the programs off both host veths.
func (tb *tabby) detach() error {
	return tb.t.nd.Do(func() error {
		for _, ifi := range []int{tb.t.ifA, tb.t.ifB} {
			if err := tb.d.Detach(ifi); err != nil {
				return fmt.Errorf("detach: %w", err)
			}
		}
		return nil
	})
}

// stats is both programs' run count and run time so far (needs ebpf.EnableStats).
func (tb *tabby) stats() (runs uint64, ns time.Duration, err error) {
	for _, p := range []*ebpf.Program{tb.fromWl, tb.toWl} {
		s, err := p.Stats()
		if err != nil {
			return 0, 0, fmt.Errorf("program stats: %w", err)
		}
		runs += s.RunCount
		ns += s.Runtime
	}
	return runs, ns, nil
}

// policyPathNs test-runs a new-flow packet into pod B that no entry allows (from pod
// A to port probeDPort) repeat times and returns the mean ns a run: the slowest path
// through the program (conntrack misses, six policy lookups, endpoint default, drop).
func (tb *tabby) policyPathNs(repeat int) (float64, error) {
	frame := synFrame(podAAddr, podBAddr, 40000, probeDPort)
	ret, per, err := tb.toWl.Benchmark(frame, repeat, nil)
	if err != nil {
		return 0, fmt.Errorf("test run: %w", err)
	}
	if tebpf.Result(int32(ret)) != tebpf.Drop {
		return 0, fmt.Errorf("test run: result %d, want drop", int32(ret))
	}
	return float64(per.Nanoseconds()), nil
}

// policyPathMedian is the median of rounds policyPathNs measures.
func (tb *tabby) policyPathMedian(rounds, repeat int) (float64, error) {
	var ds []time.Duration
	for range rounds {
		ns, err := tb.policyPathNs(repeat)
		if err != nil {
			return 0, err
		}
		ds = append(ds, time.Duration(ns))
	}
	return float64(benchutil.Percentile(ds, 50)), nil
}

// synFrame is an Ethernet + IPv4 + TCP SYN frame (checksums left zero: the program
// does not check them).
func synFrame(src, dst string, sport, dport uint16) []byte {
	b := make([]byte, 14+20+20)
	copy(b[0:6], []byte{0x02, 0, 0, 0, 0, 2})
	copy(b[6:12], []byte{0x02, 0, 0, 0, 0, 1})
	binary.BigEndian.PutUint16(b[12:], unix.ETH_P_IP)
	ip := b[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:], 40)
	ip[8] = 64
	ip[9] = unix.IPPROTO_TCP
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(ip[12:], s[:])
	copy(ip[16:], d[:])
	tcp := ip[20:]
	binary.BigEndian.PutUint16(tcp[0:], sport)
	binary.BigEndian.PutUint16(tcp[2:], dport)
	tcp[12] = 5 << 4
	tcp[13] = 0x02
	return b
}
