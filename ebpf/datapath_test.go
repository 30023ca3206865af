package ebpf

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	ciliumebpf "github.com/cilium/ebpf"
	"github.com/tabbynet/tabby/ebpf/ebpftest"
	"golang.org/x/sys/unix"
)

const (
	wlIP    = "10.0.0.1"
	epID    = 7
	tcp     = unix.IPPROTO_TCP
	udp     = unix.IPPROTO_UDP
	icmp    = unix.IPPROTO_ICMP
	sctp    = unix.IPPROTO_SCTP
	classDB = 5
	classFE = 6
)

// setup loads a datapath whose loopback endpoint defaults to deny both ways.
func setup(t *testing.T) *Datapath {
	t.Helper()
	d := loadTest(t)
	ep := Endpoint{ID: epID, IngressDefault: Deny, EgressDefault: Deny, MAC: wlMAC,
		Addrs: []netip.Addr{netip.MustParseAddr(wlIP)}}
	if err := d.SetEndpoint(LoopbackIfindex, ep); err != nil {
		t.Fatal(err)
	}
	return d
}

func setPolicy(t *testing.T, d *Datapath, k PolicyKey, v PolicyValue) {
	t.Helper()
	k.Endpoint = epID
	if err := d.SetPolicy(k, v); err != nil {
		t.Fatal(err)
	}
}

func setIPCache(t *testing.T, d *Datapath, prefix string, class uint32) {
	t.Helper()
	if err := d.SetIPCache(netip.MustParsePrefix(prefix), class); err != nil {
		t.Fatal(err)
	}
}

// in is a packet entering the workload from src.
func in(src string, proto uint8, sport, dport uint16) pkt {
	return pkt{srcMAC: peerMAC, src: src, dst: wlIP, proto: proto, sport: sport, dport: dport}
}

// out is a packet the workload sends to dst.
func out(dst string, proto uint8, sport, dport uint16) pkt {
	return pkt{src: wlIP, dst: dst, proto: proto, sport: sport, dport: dport}
}

func TestAllowByRuleDenyByDefault(t *testing.T) {
	d := setup(t)
	setIPCache(t, d, "10.1.0.0/16", classDB)
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: tcp, Port: 80, Peer: classDB},
		PolicyValue{Verdict: Allow, RuleID: 100})

	mustRun(t, d, Ingress, in("10.1.2.3", tcp, 40000, 80), Pass)
	mustRun(t, d, Ingress, in("10.1.2.3", tcp, 40001, 81), Drop)    // other port
	mustRun(t, d, Ingress, in("10.1.2.3", udp, 40002, 80), Drop)    // other protocol
	mustRun(t, d, Ingress, in("192.168.1.1", tcp, 40003, 80), Drop) // world
	mustRun(t, d, Egress, out("10.1.2.3", tcp, 40004, 80), Drop)    // other direction
	mustRun(t, d, Ingress, in("10.1.2.3", sctp, 40005, 80), Drop)   // SCTP parsed, no rule
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: sctp, Port: 80, Peer: classDB},
		PolicyValue{Verdict: Allow, RuleID: 101})
	mustRun(t, d, Ingress, in("10.1.2.3", sctp, 40006, 80), Pass)
}

func TestWildcardsAndSpecificity(t *testing.T) {
	d := setup(t)
	setIPCache(t, d, "10.1.0.0/16", classDB)
	// Any UDP port from classDB; but port 53 is denied explicitly.
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: udp, Peer: classDB},
		PolicyValue{Verdict: Allow, RuleID: 1})
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: udp, Port: 53, Peer: classDB},
		PolicyValue{Verdict: Deny, RuleID: 2})
	mustRun(t, d, Ingress, in("10.1.0.9", udp, 1000, 5000), Pass)
	mustRun(t, d, Ingress, in("10.1.0.9", udp, 1001, 6000), Pass)
	mustRun(t, d, Ingress, in("10.1.0.9", udp, 1002, 53), Drop)
	mustRun(t, d, Ingress, in("10.1.0.9", tcp, 1003, 5000), Drop)

	// Any protocol from any peer, egress; ICMP has no port and matches it.
	setPolicy(t, d, PolicyKey{Direction: Egress, Peer: ClassAny}, PolicyValue{Verdict: Allow, RuleID: 3})
	mustRun(t, d, Egress, out("8.8.8.8", icmp, 0, 0), Pass)
	mustRun(t, d, Egress, out("10.1.0.9", tcp, 1004, 443), Pass)
	// A class-specific deny wins over the any-peer allow.
	setPolicy(t, d, PolicyKey{Direction: Egress, Proto: tcp, Port: 22, Peer: classDB},
		PolicyValue{Verdict: Deny, RuleID: 4})
	mustRun(t, d, Egress, out("10.1.0.9", tcp, 1005, 22), Drop)
	mustRun(t, d, Egress, out("8.8.8.8", tcp, 1006, 22), Pass)
}

func TestIPCacheLongestPrefix(t *testing.T) {
	d := setup(t)
	setIPCache(t, d, "10.1.0.0/16", classDB)
	setIPCache(t, d, "10.1.7.0/24", classFE)
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: tcp, Port: 443, Peer: classFE},
		PolicyValue{Verdict: Allow, RuleID: 10})
	mustRun(t, d, Ingress, in("10.1.7.20", tcp, 2000, 443), Pass) // in the /24: classFE
	mustRun(t, d, Ingress, in("10.1.8.20", tcp, 2001, 443), Drop) // only the /16: classDB

	if err := d.DeleteIPCache(netip.MustParsePrefix("10.1.7.0/24")); err != nil {
		t.Fatal(err)
	}
	mustRun(t, d, Ingress, in("10.1.7.20", tcp, 2002, 443), Drop)
	err := d.DeleteIPCache(netip.MustParsePrefix("10.1.7.0/24"))
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
	if err := d.SetIPCache(netip.MustParsePrefix("fd00::/64"), 1); !errors.Is(err, ErrInvalid) {
		t.Fatalf("IPv6 prefix: %v, want ErrInvalid", err)
	}
}

func TestAntiSpoof(t *testing.T) {
	d := setup(t)
	if err := d.SetEndpoint(LoopbackIfindex, Endpoint{ID: epID, IngressDefault: Deny, EgressDefault: Allow,
		MAC: wlMAC, Addrs: []netip.Addr{netip.MustParseAddr(wlIP)}}); err != nil {
		t.Fatal(err)
	}
	r := dropReader(t, d)
	mustRun(t, d, Egress, out("10.9.9.9", tcp, 3000, 80), Pass)
	spoofed := pkt{src: "10.0.0.99", dst: "10.9.9.9", proto: tcp, sport: 3001, dport: 80}
	mustRun(t, d, Egress, spoofed, Drop)
	ev := nextDrop(t, r)
	if ev.Reason != DropSpoof || ev.Src != netip.MustParseAddr("10.0.0.99") || ev.Direction != Egress {
		t.Fatalf("drop event %+v, want spoof from 10.0.0.99", ev)
	}
	wrongMAC := out("10.9.9.9", tcp, 3002, 80)
	wrongMAC.srcMAC = peerMAC
	mustRun(t, d, Egress, wrongMAC, Drop)
	if ev := nextDrop(t, r); ev.Reason != DropSpoof {
		t.Fatalf("drop event %+v, want spoof", ev)
	}
	dhcp := pkt{src: "0.0.0.0", dst: "255.255.255.255", proto: udp, sport: 68, dport: 67}
	mustRun(t, d, Egress, dhcp, Pass)
	// Traffic into the workload is not subject to the source check.
	mustRun(t, d, Ingress, in("10.0.0.99", tcp, 3003, 80), Drop)
	if ev := nextDrop(t, r); ev.Reason != DropDefault {
		t.Fatalf("drop event %+v, want default-deny", ev)
	}
}

func TestConntrackReplyPasses(t *testing.T) {
	d := setup(t)
	setPolicy(t, d, PolicyKey{Direction: Egress, Proto: tcp, Port: 5432, Peer: ClassAny},
		PolicyValue{Verdict: Allow, RuleID: 20})
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: udp, Port: 53, Peer: ClassAny},
		PolicyValue{Verdict: Allow, RuleID: 21})

	// Egress connection allowed; its reply passes although ingress is default deny.
	syn := out("10.2.0.5", tcp, 45000, 5432)
	mustRun(t, d, Egress, syn, Pass)
	mustRun(t, d, Ingress, syn.reply(), Pass)
	mustRun(t, d, Egress, syn, Pass)
	// The same peer opening its own connection is evaluated, and denied.
	mustRun(t, d, Ingress, in("10.2.0.5", tcp, 5432, 45001), Drop)

	// Ingress flow allowed; the workload's answer passes although egress is deny.
	q := in("10.3.0.1", udp, 33000, 53)
	mustRun(t, d, Ingress, q, Pass)
	ans := out("10.3.0.1", udp, 53, 33000)
	mustRun(t, d, Egress, ans, Pass)
	mustRun(t, d, Egress, out("10.3.0.1", udp, 53, 33001), Drop)

	// Only the first packet is counted: established traffic skips policy.
	c, err := d.RuleCounter(20)
	if err != nil {
		t.Fatal(err)
	}
	if c.Packets != 1 {
		t.Fatalf("rule 20 counted %d packets, want 1", c.Packets)
	}
	// Flushing conntrack makes the reply a new, denied flow.
	if err := d.FlushConntrack(); err != nil {
		t.Fatal(err)
	}
	mustRun(t, d, Ingress, syn.reply(), Drop)
}

func TestCountersAndDropEvents(t *testing.T) {
	d := setup(t)
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: tcp, Port: 80, Peer: ClassAny},
		PolicyValue{Verdict: Allow, RuleID: 30})
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: tcp, Port: 23, Peer: ClassAny},
		PolicyValue{Verdict: Deny, RuleID: 31})
	r := dropReader(t, d)

	var bytes uint64
	for i := range 3 {
		p := in("10.4.0.1", tcp, uint16(50000+i), 80)
		p.payload = 10 * i
		bytes += uint64(len(p.frame()))
		mustRun(t, d, Ingress, p, Pass)
	}
	if c, err := d.RuleCounter(30); err != nil || c != (Counter{Packets: 3, Bytes: bytes}) {
		t.Fatalf("rule 30: %+v, %v; want 3 packets, %d bytes", c, err, bytes)
	}
	mustRun(t, d, Ingress, in("10.4.0.1", tcp, 50010, 23), Drop)
	mustRun(t, d, Ingress, in("10.4.0.1", tcp, 50011, 23), Drop)
	if c, _ := d.RuleCounter(31); c.Packets != 2 {
		t.Fatalf("rule 31: %+v, want 2 packets", c)
	}
	if c, _ := d.RuleCounter(999); c != (Counter{}) {
		t.Fatalf("unused rule: %+v, want zero", c)
	}
	want := DropEvent{Ifindex: LoopbackIfindex, Src: netip.MustParseAddr("10.4.0.1"),
		Dst: netip.MustParseAddr(wlIP), SrcPort: 50010, DstPort: 23, Proto: tcp,
		Reason: DropPolicy, Direction: Ingress, RuleID: 31}
	if ev := nextDrop(t, r); ev != want {
		t.Fatalf("drop event\n got %+v\nwant %+v", ev, want)
	}
	if ev := nextDrop(t, r); ev.SrcPort != 50011 {
		t.Fatalf("second drop event %+v", ev)
	}
}

func TestPassThroughAndNoEndpoint(t *testing.T) {
	d := setup(t)
	mustRun(t, d, Ingress, pkt{ethType: unix.ETH_P_IPV6}, Pass)
	mustRun(t, d, Egress, pkt{ethType: unix.ETH_P_ARP}, Pass)
	if err := d.DeleteEndpoint(LoopbackIfindex); err != nil {
		t.Fatal(err)
	}
	r := dropReader(t, d)
	mustRun(t, d, Egress, out("10.9.9.9", tcp, 1, 2), Drop)
	if ev := nextDrop(t, r); ev.Reason != DropNoEndpoint {
		t.Fatalf("drop event %+v, want no-endpoint", ev)
	}
	if err := d.DeleteEndpoint(LoopbackIfindex); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
}

func TestPinnedMapsSurviveReload(t *testing.T) {
	ebpftest.Require(t)
	dir := ebpftest.PinDir(t)
	d1, err := Load(Options{PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := d1.SetEndpoint(LoopbackIfindex, Endpoint{ID: 1, IngressDefault: Allow, EgressDefault: Allow,
		Addrs: []netip.Addr{netip.MustParseAddr(wlIP)}}); err != nil {
		t.Fatal(err)
	}
	if err := d1.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d1.SetIPCache(netip.MustParsePrefix("10.0.0.0/8"), 1); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
	d2, err := Load(Options{PinDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	mustRun(t, d2, Ingress, in("10.5.0.1", tcp, 1, 2), Pass) // endpoint from d1 still there
	if err := d2.Unpin(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir + "/tabby_policy"); !os.IsNotExist(err) {
		t.Fatalf("policy pin after Unpin: %v", err)
	}
}

func dropReader(t *testing.T, d *Datapath) *DropReader {
	t.Helper()
	r, err := d.NewDropReader()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func nextDrop(t *testing.T, r *DropReader) DropEvent {
	t.Helper()
	r.SetDeadline(time.Now().Add(2 * time.Second))
	ev, err := r.Read()
	if err != nil {
		t.Fatalf("read drop event: %v", err)
	}
	return ev
}

func TestIncompatiblePinnedMap(t *testing.T) {
	ebpftest.Require(t)
	dir := ebpftest.PinDir(t)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	// A map of the right name but another layout, as an older version might leave.
	m, err := ciliumebpf.NewMap(&ciliumebpf.MapSpec{Name: "tabby_policy", Type: ciliumebpf.Hash,
		KeySize: 8, ValueSize: 8, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Pin(dir + "/tabby_policy"); err != nil {
		t.Fatal(err)
	}
	_, err = Load(Options{PinDir: dir})
	if !errors.Is(err, ciliumebpf.ErrMapIncompatible) {
		t.Fatalf("Load over an incompatible pin: %v, want ErrMapIncompatible", err)
	}
}
