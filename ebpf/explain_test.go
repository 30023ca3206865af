package ebpf

import (
	"errors"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// conntrackLen counts the tracked flows.
func conntrackLen(t *testing.T, d *Datapath) int {
	t.Helper()
	var k tabbyCtKey
	var v tabbyCtValue
	n := 0
	it := d.objs.TabbyConntrack.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// noDropEvent fails unless the ring holds no event.
func noDropEvent(t *testing.T, r *DropReader, what string) {
	t.Helper()
	r.SetDeadline(time.Now().Add(20 * time.Millisecond))
	ev, err := r.Read()
	if err == nil {
		t.Fatalf("%s: unexpected drop event %+v", what, ev)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: read drop event: %v", what, err)
	}
}

func TestExplainAgreesWithRunAndHasNoSideEffects(t *testing.T) {
	d := setup(t)
	setIPCache(t, d, "10.1.0.0/16", classDB)
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: tcp, Port: 80, Peer: classDB},
		PolicyValue{Verdict: Allow, RuleID: 100})
	setPolicy(t, d, PolicyKey{Direction: Ingress, Proto: udp, Peer: ClassAny},
		PolicyValue{Verdict: Deny, RuleID: 101})
	setPolicy(t, d, PolicyKey{Direction: Egress, Proto: tcp, Port: 443, Peer: ClassAny},
		PolicyValue{Verdict: Allow, RuleID: 102})
	r, err := d.NewDropReader()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	cases := []struct {
		name  string
		dir   Direction
		p     pkt
		stage Stage
		rule  uint32
		class uint32
	}{
		{"allowed by rule", Ingress, in("10.1.2.3", tcp, 40000, 80), StagePolicy, 100, classDB},
		{"default deny", Ingress, in("10.1.2.3", tcp, 40001, 81), StageDefault, 0, classDB},
		{"deny rule", Ingress, in("192.168.1.1", udp, 40002, 53), StagePolicy, 101, ClassWorld},
		{"egress allowed", Egress, out("8.8.8.8", tcp, 40003, 443), StagePolicy, 102, ClassWorld},
		{"egress default", Egress, out("8.8.8.8", tcp, 40004, 80), StageDefault, 0, ClassWorld},
		{"spoofed source", Egress, pkt{src: "10.9.9.9", dst: "8.8.8.8", proto: tcp, sport: 1, dport: 443}, StageSpoof, 0, 0},
		{"spoofed MAC", Egress, pkt{srcMAC: peerMAC, src: wlIP, dst: "8.8.8.8", proto: tcp, sport: 2, dport: 443}, StageSpoof, 0, 0},
		{"not IPv4", Ingress, pkt{ethType: 0x86dd}, StagePassThrough, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ct := conntrackLen(t, d)
			cnt, err := d.RuleCounter(c.rule)
			if err != nil {
				t.Fatal(err)
			}
			ex, err := d.Explain(c.dir, LoopbackIfindex, c.p.frame())
			if err != nil {
				t.Fatalf("Explain: %v", err)
			}
			t.Logf("%+v", ex)
			if ex.Stage != c.stage || ex.RuleID != c.rule {
				t.Errorf("stage %v rule %d, want %v rule %d", ex.Stage, ex.RuleID, c.stage, c.rule)
			}
			if (c.stage == StagePolicy || c.stage == StageDefault) && ex.PeerClass != c.class {
				t.Errorf("peer class %d, want %d", ex.PeerClass, c.class)
			}
			if c.stage != StagePassThrough && ex.Endpoint != epID {
				t.Errorf("endpoint %d, want %d", ex.Endpoint, epID)
			}
			// No side effects.
			if n := conntrackLen(t, d); n != ct {
				t.Errorf("conntrack went from %d to %d flows", ct, n)
			}
			if cnt2, _ := d.RuleCounter(c.rule); cnt2 != cnt {
				t.Errorf("counter of rule %d went from %+v to %+v", c.rule, cnt, cnt2)
			}
			noDropEvent(t, r, "after explain")

			// The real run agrees.
			got, err := d.RunPacket(c.dir, c.p.frame())
			if err != nil {
				t.Fatal(err)
			}
			if got != ex.Result {
				t.Fatalf("RunPacket = %v, explain said %v", got, ex.Result)
			}
			if (ex.Verdict == Allow) != (got == Pass) {
				t.Errorf("verdict %d with result %v", ex.Verdict, got)
			}
			if got == Drop {
				r.SetDeadline(time.Now().Add(time.Second))
				ev, err := r.Read()
				if err != nil {
					t.Fatalf("drop event: %v", err)
				}
				if ev.RuleID != ex.RuleID || ev.Direction != c.dir {
					t.Errorf("drop event %+v, explain said rule %d", ev, ex.RuleID)
				}
			}
		})
	}

	// Explain ignores conntrack: a flow the real run allowed and tracked is explained
	// as a new flow (a reply is judged by policy, not passed as established).
	p := out("8.8.8.8", tcp, 40100, 443)
	mustRun(t, d, Egress, p, Pass)
	mustRun(t, d, Ingress, p.reply(), Pass) // established
	ex, err := d.Explain(Ingress, LoopbackIfindex, p.reply().frame())
	if err != nil {
		t.Fatal(err)
	}
	if ex.Stage != StageDefault || ex.Result != Drop {
		t.Errorf("reply explained as %+v, want it judged as a new flow", ex)
	}
}

func TestExplainInterfaceOfNamespace(t *testing.T) {
	d := loadTest(t)
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := netns.New()
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "texp0"}, PeerName: "texp1"}); err != nil {
			errc <- err
			return
		}
		l, err := netlink.LinkByName("texp0")
		if err != nil {
			errc <- err
			return
		}
		idx := l.Attrs().Index
		ep := Endpoint{ID: 9, IngressDefault: Allow, EgressDefault: Deny,
			Addrs: []netip.Addr{netip.MustParseAddr(wlIP)}}
		if err := d.SetEndpoint(idx, ep); err != nil {
			errc <- err
			return
		}
		defer func() { _ = d.DeleteEndpoint(idx) }()
		got, err := d.LookupEndpoint(idx)
		if err != nil || got.ID != 9 || len(got.Addrs) != 1 || got.Addrs[0] != netip.MustParseAddr(wlIP) {
			errc <- errors.Join(err, errors.New("LookupEndpoint does not give back the endpoint"))
			return
		}
		ex, err := d.Explain(Ingress, idx, in("10.1.2.3", tcp, 1, 80).frame())
		if err != nil {
			errc <- err
			return
		}
		if ex.Endpoint != 9 || ex.Stage != StageDefault || ex.Verdict != Allow {
			errc <- errors.New("ingress on the veth was not its endpoint's default allow")
			return
		}
		// The loopback interface has no endpoint.
		ex, err = d.Explain(Ingress, LoopbackIfindex, in("10.1.2.3", tcp, 1, 80).frame())
		if err != nil {
			errc <- err
			return
		}
		if ex.Stage != StageNoEndpoint || ex.Result != Drop {
			errc <- errors.New("loopback without endpoint not explained as no-endpoint")
			return
		}
		if _, err := d.Explain(Ingress, 9999, in("10.1.2.3", tcp, 1, 80).frame()); err == nil {
			errc <- errors.New("explain on a missing interface did not fail")
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}
