package vmendpoint

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/tabbynet/tabby/ipam"
)

// fakeActivity holds each tap's first and last packet times.
type fakeActivity struct {
	mu   sync.Mutex
	sent map[string][2]time.Time
}

func (f *fakeActivity) set(tap string, first, last time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sent == nil {
		f.sent = map[string][2]time.Time{}
	}
	f.sent[tap] = [2]time.Time{first, last}
}

func (f *fakeActivity) Sent(tap string) (time.Time, time.Time, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sent[tap]
	if !ok {
		return time.Time{}, time.Time{}, fmt.Errorf("no programs on %s", tap)
	}
	return s[0], s[1], nil
}

// TestLiveMigrationHandover: the destination's endpoint waits on standby (policed, not
// routed, the address not adopted) while the guest runs on the source; when the
// source pauses the guest for the last pages it hands over (the address, the live
// endpoint, its last packet) and waits on standby itself; when the guest runs on the
// destination, the destination measures the blackout from the two nodes' packet times
// and removes the handover's annotations.
func TestLiveMigrationHandover(t *testing.T) {
	store := newStore(t)
	act1, act2 := &fakeActivity{}, &fakeActivity{}
	reg := prometheus.NewRegistry()
	h1 := startWith(t, store, newFake(), "node-1", ReconcilerConfig{Activity: act1})
	h2 := startWith(t, store, newFake(), "node-2", ReconcilerConfig{Activity: act2, Registry: reg})
	xml := func(tap string) string { return domXML("a", uuidA, true, "", nic{macA1, tap}) }

	h1.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, Running: true, XML: xml("vnet0")}, EventStarted)
	src := h1.wantTaps(uuidA, "vnet0")["vnet0"]
	ip := h1.held(uuidA, macA1)[0]
	owner := func() string {
		info, err := h1.ipam.Lookup(context.Background(), ip)
		if err != nil {
			t.Fatal(err)
		}
		return info.Attrs[ipam.AttrNode]
	}

	// Incoming: paused on node-2. Its endpoint waits on standby with the same address.
	h2.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, MigrationPaused: true, XML: xml("vnet3")}, EventStarted)
	ws := h2.wantTaps(uuidA, "vnet0", "vnet3")
	if dst := ws["vnet3"]; !dst.Spec.Standby || dst.Spec.Node != "node-2" || dst.Spec.IPNetworks[0] != src.Spec.IPNetworks[0] {
		t.Fatalf("destination endpoint: %+v, want node-2 on standby with %s", dst.Spec, src.Spec.IPNetworks[0])
	}
	if ws["vnet0"].Spec.Standby || owner() != "node-1" {
		t.Fatalf("while the guest runs on node-1: source standby %v, allocation node %q", ws["vnet0"].Spec.Standby, owner())
	}

	// The source pauses the guest for the last pages: it hands over.
	last := time.Date(2026, 11, 25, 4, 0, 0, 0, time.UTC)
	act1.set("vnet0", last.Add(-time.Minute), last)
	act2.set("vnet3", time.Time{}, time.Time{})
	h1.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, MigrationPaused: true, MigratingOut: true, XML: xml("vnet0")}, EventOther)
	eventually(t, "the handover", func() error {
		ws := h2.weps(uuidA)
		d, s := ws["vnet3"], ws["vnet0"]
		switch {
		case d == nil || s == nil:
			return fmt.Errorf("endpoints %v", ws)
		case d.Spec.Standby || !s.Spec.Standby:
			return fmt.Errorf("destination standby %v, source standby %v", d.Spec.Standby, s.Spec.Standby)
		case d.Annotations[AnnotationLastSent] != last.Format(time.RFC3339Nano) || d.Annotations[AnnotationMigratedFrom] != "node-1":
			return fmt.Errorf("destination annotations %v", d.Annotations)
		case owner() != "node-2":
			return fmt.Errorf("allocation node %q", owner())
		}
		return nil
	})
	handedAt := time.Now()
	// node-2 syncs again, the guest still paused (it looks like the source did before
	// the handover, but has no outgoing job): nothing moves back.
	h2.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, MigrationPaused: true, XML: xml("vnet3")}, EventOther)
	eventually(t, "node-2 synced again", func() error {
		for _, d := range h2.w.Status().Domains {
			if d.LastSync.After(handedAt) {
				return nil
			}
		}
		return fmt.Errorf("no sync since the handover")
	})
	if ws := h2.weps(uuidA); ws["vnet3"].Spec.Standby || !ws["vnet0"].Spec.Standby || owner() != "node-2" {
		t.Fatalf("after node-2 synced again: destination standby %v, source standby %v, allocation node %q; want it to stay node-2's",
			ws["vnet3"].Spec.Standby, ws["vnet0"].Spec.Standby, owner())
	}

	// The guest resumes on node-2 and sends: the blackout is measured, the
	// annotations go.
	act2.set("vnet3", last.Add(420*time.Millisecond), last.Add(time.Second))
	h2.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, Running: true, XML: xml("vnet3")}, EventResumed)
	var ms float64
	eventually(t, "the blackout measured", func() error {
		for _, d := range h2.w.Status().Domains {
			if m := d.Migration; m != nil && m.BlackoutMillis != nil {
				if m.From != "node-1" {
					return fmt.Errorf("migration %+v: want from node-1", m)
				}
				ms = *m.BlackoutMillis
				return nil
			}
		}
		return fmt.Errorf("domains %+v", h2.w.Status().Domains)
	})
	if ms != 420 {
		t.Errorf("blackout %v ms, want 420", ms)
	}
	eventually(t, "the handover's annotations removed", func() error {
		if d := h2.weps(uuidA)["vnet3"]; d == nil || d.Spec.Standby || len(d.Annotations) != 0 {
			return fmt.Errorf("destination endpoint %+v", d)
		}
		return nil
	})
	if err := testutil.CollectAndCompare(reg, strings.NewReader(`
# HELP tabby_vm_migrations_total Live migrations to this node that the agent took over; result measured or unmeasured (no blackout figure).
# TYPE tabby_vm_migrations_total counter
tabby_vm_migrations_total{result="measured"} 1
`), "tabby_vm_migrations_total"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(reg, "tabby_vm_migration_blackout_seconds"); n != 1 {
		t.Errorf("blackout histogram: %d series", n)
	}

	// The source's QEMU stops (migrated): nothing of it is left, and the address
	// stays node-2's.
	h1.fake.set(Domain{UUID: uuidA, Name: "a", XML: domXML("a", uuidA, false, "", nic{macA1, ""})}, EventStoppedMigrated)
	h1.fake.undefine(uuidA)
	h1.wantTaps(uuidA, "vnet3")
	if got := h2.held(uuidA, macA1); len(got) != 1 || got[0] != ip || owner() != "node-2" {
		t.Fatalf("after the source left: held %v, allocation node %q; want %s on node-2", got, owner(), ip)
	}
}

// TestMigrationFailsAfterHandover: the guest resumes on the source after the handover
// (the migration failed at the end): the source takes its endpoint back, with the
// address, and the destination's endpoint goes.
func TestMigrationFailsAfterHandover(t *testing.T) {
	store := newStore(t)
	h1 := startWith(t, store, newFake(), "node-1", ReconcilerConfig{Activity: &fakeActivity{}})
	h2 := startWith(t, store, newFake(), "node-2", ReconcilerConfig{Activity: &fakeActivity{}})
	xml := func(tap string) string { return domXML("a", uuidA, true, "", nic{macA1, tap}) }
	h1.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, Running: true, XML: xml("vnet0")}, EventStarted)
	h1.wantTaps(uuidA, "vnet0")
	h2.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, MigrationPaused: true, XML: xml("vnet3")}, EventStarted)
	h2.wantTaps(uuidA, "vnet0", "vnet3")
	h1.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, MigrationPaused: true, MigratingOut: true, XML: xml("vnet0")}, EventOther)
	eventually(t, "the handover", func() error {
		if s := h1.weps(uuidA)["vnet0"]; s == nil || !s.Spec.Standby {
			return fmt.Errorf("source endpoint %+v", s)
		}
		return nil
	})
	h1.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, Running: true, XML: xml("vnet0")}, EventResumed)
	ws := h1.wantTaps(uuidA, "vnet0")
	if ws["vnet0"].Spec.Standby {
		t.Fatal("the source's endpoint stays on standby while the guest runs there")
	}
	eventually(t, "the allocation back on node-1", func() error {
		info, err := h1.ipam.Lookup(context.Background(), h1.held(uuidA, macA1)[0])
		if err != nil {
			return err
		}
		if n := info.Attrs[ipam.AttrNode]; n != "node-1" {
			return fmt.Errorf("allocation node %q", n)
		}
		return nil
	})
}
