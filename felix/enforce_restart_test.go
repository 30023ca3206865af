package felix_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix/internal/nettest"
)

// Phases of the restart test.
const (
	phaseOld     = iota // the first felix runs
	phaseDown           // no felix
	phasePartial        // the second felix runs, its IPAMBlock watch held back
	phaseNew            // the second felix runs, all synced
	phases
)

var phaseNames = [phases]string{"old agent", "no agent", "new agent syncing", "new agent synced"}

// tpRecorder counts probe outcomes and attachment checks per phase.
type tpRecorder struct {
	mu     sync.Mutex
	phase  int
	counts map[string]*[phases]int // "<prober> ok" / "<prober> bad" -> per phase
	bad    []string                // what went wrong, with the phase
}

func (r *tpRecorder) setPhase(p int) {
	r.mu.Lock()
	r.phase = p
	r.mu.Unlock()
}

func (r *tpRecorder) record(name string, ok bool, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	key := name + " ok"
	if !ok {
		key = name + " bad"
		if len(r.bad) < 20 {
			r.bad = append(r.bad, fmt.Sprintf("%s: %s: %s", phaseNames[r.phase], name, why))
		}
	}
	if r.counts[key] == nil {
		r.counts[key] = new([phases]int)
	}
	r.counts[key][r.phase]++
}

// atLeast says what has run fewer than n times (ok or not) in phase p.
func (r *tpRecorder) atLeast(names []string, p, n int) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, name := range names {
		c := 0
		for _, k := range []string{name + " ok", name + " bad"} {
			if r.counts[k] != nil {
				c += r.counts[k][p]
			}
		}
		if c < n {
			return fmt.Sprintf("%s ran %d times in phase %q, want %d", name, c, phaseNames[p], n)
		}
	}
	return ""
}

func (r *tpRecorder) summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	for k, c := range r.counts {
		fmt.Fprintf(&b, "%s: %v; ", k, *c)
	}
	return b.String()
}

// TestTabbyRestartKeepsEnforcing: with an allowed and a denied flow (TCP and UDP each)
// probed continuously on new flows, felix stops and a new felix starts over the same
// pin dir. No allowed probe may fail and no denied one get through, in any phase; the
// programs stay attached throughout (the same TCX links), and the new agent replaces
// them (new program ids on the same links). The new felix's IPAMBlock watch is held
// back, so its first synced apply (a full one) comes after the policy is programmed,
// as when a datastore is slow after a restart.
func TestTabbyRestartKeepsEnforcing(t *testing.T) {
	c := newTPCluster(t)
	ns := c.namespace("tprst", nil)
	a := c.addPod("a", ns, "10.93.0.1", map[string]string{"app": "a"})
	b := c.addPod("b", ns, "10.93.0.2", map[string]string{"app": "b"})
	c.tcpServe(b, 80)
	c.tcpServe(b, 81)
	c.udpServe(b, 7000)
	denied := c.udpServe(b, 7001)
	old := c.startFelix()
	c.put(tpNP(ns, "b", nil, "app == 'b'", tpIngress, []v1.Rule{
		{Action: v1.ActionAllow, Protocol: tpProto("TCP"), Source: v1.EntityRule{Selector: "app == 'a'"},
			Destination: v1.EntityRule{Ports: tpPorts("80")}},
		{Action: v1.ActionAllow, Protocol: tpProto("UDP"), Source: v1.EntityRule{Selector: "app == 'a'"},
			Destination: v1.EntityRule{Ports: tpPorts("7000")}},
	}, nil))
	c.sync("b admits a on tcp 80 and udp 7000 only")
	c.check("before the restart", tpTCPTo(a, b, 80, true), tpUDPTo(a, b, 7000, true),
		tpTCPTo(a, b, 81, false), tpUDPTo(a, b, 7001, false))

	// The links and programs on both interfaces before the restart.
	type hooks struct{ in, eg []tpHook }
	attached := func(p *tpPod) (hooks, error) {
		in, eg, err := c.tcx(p.idx)
		return hooks{in, eg}, err
	}
	before := map[string]hooks{}
	for _, p := range []*tpPod{a, b} {
		h, err := attached(p)
		if err != nil {
			t.Fatal(err)
		}
		if len(h.in) != 1 || len(h.eg) != 1 || h.in[0].link == 0 || h.eg[0].link == 0 {
			t.Fatalf("%s: want one TCX link on each hook, have %+v %+v", p.host, h.in, h.eg)
		}
		before[p.name] = h
	}

	rec := &tpRecorder{counts: map[string]*[phases]int{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	loop := func(name string, probe func() (bool, string)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ok, why := probe()
				rec.record(name, ok, why)
			}
		}()
	}
	loop("tcp allowed", func() (bool, string) {
		if err := tpTCP(a, b.ip, 80); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	loop("udp allowed", func() (bool, string) {
		if _, err := tpUDP(a, "", b.ip, 7000); err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	loop("tcp denied", func() (bool, string) {
		if tpTCP(a, b.ip, 81) == nil {
			return false, "a -> b:81 connected"
		}
		return true, ""
	})
	loop("udp denied", func() (bool, string) {
		tok, err := tpUDP(a, "", b.ip, 7001)
		if err == nil {
			return false, "a -> b:7001 echoed"
		}
		if _, got := denied.received(tok); got {
			return false, "a -> b:7001 reached b"
		}
		return true, ""
	})
	// Attachments: one Tabby program on each hook of both interfaces, always on the
	// link that was there before the restart.
	loop("attached", func() (bool, string) {
		for _, p := range []*tpPod{a, b} {
			h, err := attached(p)
			if err != nil {
				return false, err.Error()
			}
			if len(h.in) != 1 || len(h.eg) != 1 {
				return false, fmt.Sprintf("%s: ingress %v egress %v", p.host, h.in, h.eg)
			}
			if h.in[0].link != before[p.name].in[0].link || h.eg[0].link != before[p.name].eg[0].link {
				return false, fmt.Sprintf("%s: links %d %d, were %d %d (detached and attached again)", p.host,
					h.in[0].link, h.eg[0].link, before[p.name].in[0].link, before[p.name].eg[0].link)
			}
		}
		return true, ""
	})
	probers := []string{"tcp allowed", "udp allowed", "tcp denied", "udp denied", "attached"}
	defer func() {
		close(stop)
		wg.Wait()
	}()
	waitPhase := func(p int) {
		t.Helper()
		nettest.Eventually(t, 30*time.Second, "probes in phase "+phaseNames[p], func() string {
			return rec.atLeast(probers, p, 3)
		})
	}

	waitPhase(phaseOld)
	old.stop()
	rec.setPhase(phaseDown)
	waitPhase(phaseDown)

	gate := &gatedStore{Store: c.s, kind: datastore.KindIPAMBlock, open: make(chan struct{})}
	var openOnce sync.Once
	openGate := func() { openOnce.Do(func() { close(gate.open) }) }
	t.Cleanup(openGate)
	rec.setPhase(phasePartial)
	nf := c.startFelixOn(gate, false)
	ctx := ctxFor(t, 30*time.Second)
	for _, p := range []*tpPod{a, b} {
		if err := nf.f.WaitPolicyProgrammed(ctx, p.ns, p.name); err != nil {
			t.Fatal(err)
		}
	}
	waitPhase(phasePartial)
	openGate()
	rec.setPhase(phaseNew)
	nettest.Eventually(t, 30*time.Second, "new felix ready", func() string {
		if !nf.f.Ready() {
			return "not ready"
		}
		return ""
	})
	waitPhase(phaseNew)
	for _, p := range []*tpPod{a, b} {
		if err := nf.f.WaitPolicyProgrammed(ctx, p.ns, p.name); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	stop = make(chan struct{}) // for the deferred close

	// The new agent's programs replaced the old ones, on the same links.
	for _, p := range []*tpPod{a, b} {
		h, err := attached(p)
		if err != nil {
			t.Fatal(err)
		}
		was := before[p.name]
		if len(h.in) != 1 || len(h.eg) != 1 {
			t.Errorf("%s after the restart: ingress %v egress %v", p.host, h.in, h.eg)
			continue
		}
		if h.in[0].prog == was.in[0].prog || h.eg[0].prog == was.eg[0].prog {
			t.Errorf("%s: programs %d %d still the old agent's (%d %d): not replaced", p.host,
				h.in[0].prog, h.eg[0].prog, was.in[0].prog, was.eg[0].prog)
		}
	}
	t.Logf("probes per phase %v: %s", phaseNames, rec.summary())
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, why := range rec.bad {
		t.Errorf("during the restart: %s", why)
	}
	c.check("after the restart", tpTCPTo(a, b, 80, true), tpUDPTo(a, b, 7000, true),
		tpTCPTo(a, b, 81, false), tpUDPTo(a, b, 7001, false))
}
