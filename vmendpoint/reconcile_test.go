package vmendpoint

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	uuidA = "aaaaaaaa-0000-0000-0000-000000000001"
	uuidB = "bbbbbbbb-0000-0000-0000-000000000002"
	macA1 = "52:54:00:00:0a:01"
	macA2 = "52:54:00:00:0a:02"
)

type harness struct {
	t     *testing.T
	store datastore.Store
	ipam  *ipam.Allocator
	fake  *fakeLibvirt
	dhcp  *fakeDHCP
	w     *Watcher
	stop  func()
}

func newStore(t *testing.T) datastore.Store {
	s := datastore.NewMemory()
	p := &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "vms"}, Spec: v1.IPPoolSpec{CIDR: "10.70.0.0/24", BlockSize: 26}}
	if _, err := s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return s
}

// start runs a Watcher for node over store and fake, stopped at the end of the test.
func start(t *testing.T, store datastore.Store, fake *fakeLibvirt, node string) *harness {
	t.Helper()
	return startWith(t, store, fake, node, ReconcilerConfig{})
}

// startWith is start with the reconciler's optional parts (Activity, Registry) from extra.
func startWith(t *testing.T, store datastore.Store, fake *fakeLibvirt, node string, extra ReconcilerConfig) *harness {
	t.Helper()
	log := zaptest.NewLogger(t).With(zap.String("node", node))
	al := ipam.New(store, ipam.Options{Logger: log, CacheTTL: -1})
	h := &harness{t: t, store: store, ipam: al, fake: fake, dhcp: &fakeDHCP{}}
	rec, err := NewReconciler(ReconcilerConfig{Options: Options{Node: node, DefaultNamespace: "default",
		TapPrefixes: []string{"tap", "vnet"}}, Store: store, IPAM: al, DHCP: h.dhcp, Logger: log,
		Activity: extra.Activity, Registry: extra.Registry})
	if err != nil {
		t.Fatal(err)
	}
	h.w, err = NewWatcher(WatcherConfig{Source: fake, Reconciler: rec, URI: "fake:///", Logger: log,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 40 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = h.w.Run(ctx)
	}()
	h.stop = func() { cancel(); <-done }
	t.Cleanup(h.stop)
	return h
}

// eventually waits, with a deadline, until cond returns nil.
func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		<-tick.C
	}
}

func (h *harness) weps(uuid string) map[string]*v1.WorkloadEndpoint {
	ws, err := datastore.List[*v1.WorkloadEndpoint](context.Background(), h.store, datastore.ListOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]*v1.WorkloadEndpoint{}
	for _, w := range ws {
		if w.Spec.ContainerID == uuid {
			out[w.Spec.InterfaceName] = w
		}
	}
	return out
}

func (h *harness) held(uuid, mac string) []netip.Addr {
	ips, err := h.ipam.AddressesOf(context.Background(), ipam.VMHandle(uuid, mac))
	if err != nil {
		h.t.Fatal(err)
	}
	return ips
}

// wantTaps waits until the domain's WorkloadEndpoints are on exactly these taps.
func (h *harness) wantTaps(uuid string, taps ...string) map[string]*v1.WorkloadEndpoint {
	h.t.Helper()
	var got map[string]*v1.WorkloadEndpoint
	eventually(h.t, fmt.Sprintf("WorkloadEndpoints of %s on %v", uuid, taps), func() error {
		got = h.weps(uuid)
		if len(got) != len(taps) {
			return fmt.Errorf("%d endpoints: %v", len(got), got)
		}
		for _, tap := range taps {
			if got[tap] == nil {
				return fmt.Errorf("none on %s", tap)
			}
		}
		return nil
	})
	return got
}

const labelsMeta = `<tabby:endpoint xmlns:tabby="https://tabby.dev/xmlns/vm/1.0"><tabby:label key="app" value="web"/></tabby:endpoint>`

// TestLifecycle: start -> endpoints with addresses and DHCP; stop -> endpoints gone,
// addresses held; start again -> the same addresses; undefine -> released.
func TestLifecycle(t *testing.T) {
	h := start(t, newStore(t), newFake(), "node-1")
	nics := []nic{{macA1, "vnet0"}, {macA2, "tap-a2"}}
	h.fake.set(Domain{UUID: uuidA, Name: "web", XML: domXML("web", uuidA, false, labelsMeta, nics...)}, EventDefined)
	h.fake.set(Domain{UUID: uuidA, Name: "web", Active: true, XML: domXML("web", uuidA, true, labelsMeta, nics...)}, EventStarted)
	weps := h.wantTaps(uuidA, "vnet0", "tap-a2")
	w := weps["vnet0"]
	if w.Name != "node-1-libvirt-web-vnet0" || w.Namespace != "default" || w.Spec.Orchestrator != "libvirt" ||
		w.Spec.Workload != "web" || w.Spec.Node != "node-1" || w.Spec.MAC != macA1 || len(w.Spec.IPNetworks) != 1 ||
		w.Labels["app"] != "web" || w.Labels[LabelOrchestrator] != "libvirt" || w.Spec.Profiles[0] != "kns.default" {
		t.Fatalf("WorkloadEndpoint %+v", w)
	}
	first := map[string]string{}
	for tap, w := range weps {
		first[tap] = w.Spec.IPNetworks[0]
		eventually(t, "DHCP on "+tap, func() error {
			c, ok := h.dhcp.get(tap)
			if !ok || c.Address.String() != w.Spec.IPNetworks[0] || c.MAC.String() != w.Spec.MAC || c.Hostname != "web" || c.Tap != tap {
				return fmt.Errorf("DHCP config %+v (%v)", c, ok)
			}
			return nil
		})
	}
	if first["vnet0"] == first["tap-a2"] {
		t.Fatalf("both taps got %s", first["vnet0"])
	}

	h.fake.set(Domain{UUID: uuidA, Name: "web", XML: domXML("web", uuidA, false, labelsMeta, nics...)}, EventStopped)
	h.wantTaps(uuidA)
	eventually(t, "DHCP removed", func() error {
		if _, ok := h.dhcp.get("vnet0"); ok {
			return errors.New("still serving vnet0")
		}
		return nil
	})
	if len(h.held(uuidA, macA1)) != 1 || len(h.held(uuidA, macA2)) != 1 {
		t.Fatal("a stopped domain lost its addresses")
	}

	// libvirt may name the taps differently at the next start: the address follows the MAC.
	nics2 := []nic{{macA1, "vnet7"}, {macA2, "tap-a2"}}
	h.fake.set(Domain{UUID: uuidA, Name: "web", Active: true, XML: domXML("web", uuidA, true, labelsMeta, nics2...)}, EventStarted)
	weps = h.wantTaps(uuidA, "vnet7", "tap-a2")
	if weps["vnet7"].Spec.IPNetworks[0] != first["vnet0"] || weps["tap-a2"].Spec.IPNetworks[0] != first["tap-a2"] {
		t.Fatalf("addresses changed across a restart: %v then %v %v", first, weps["vnet7"].Spec.IPNetworks, weps["tap-a2"].Spec.IPNetworks)
	}

	h.fake.undefine(uuidA) // a transient domain destroyed: gone at once
	h.wantTaps(uuidA)
	eventually(t, "handles released", func() error {
		if n := len(h.held(uuidA, macA1)) + len(h.held(uuidA, macA2)); n != 0 {
			return fmt.Errorf("%d addresses still held", n)
		}
		return nil
	})
	eventually(t, "status forgets the domain", func() error {
		if st := h.w.Status(); len(st.Domains) != 0 || !st.Connected {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

// TestFixedAddress: the metadata fixes the address of one NIC; changing it moves the
// allocation.
func TestFixedAddress(t *testing.T) {
	h := start(t, newStore(t), newFake(), "node-1")
	meta := func(ip string) string {
		return `<tabby:endpoint xmlns:tabby="https://tabby.dev/xmlns/vm/1.0" namespace="prod"><tabby:interface mac="` + macA1 + `" ip="` + ip + `"/></tabby:endpoint>`
	}
	h.fake.set(Domain{UUID: uuidA, Name: "db", Active: true, XML: domXML("db", uuidA, true, meta("10.70.0.200"), nic{macA1, "tap0"})}, EventStarted)
	w := h.wantTaps(uuidA, "tap0")["tap0"]
	if w.Spec.IPNetworks[0] != "10.70.0.200/32" || w.Namespace != "prod" {
		t.Fatalf("WorkloadEndpoint %s/%s %v", w.Namespace, w.Name, w.Spec.IPNetworks)
	}
	h.fake.set(Domain{UUID: uuidA, Name: "db", Active: true, XML: domXML("db", uuidA, true, meta("10.70.0.201"), nic{macA1, "tap0"})}, EventOther)
	eventually(t, "new fixed address", func() error {
		w := h.weps(uuidA)["tap0"]
		if w == nil || w.Spec.IPNetworks[0] != "10.70.0.201/32" {
			return fmt.Errorf("endpoint %v", w)
		}
		if held := h.held(uuidA, macA1); len(held) != 1 || held[0].String() != "10.70.0.201" {
			return fmt.Errorf("handle holds %v", held)
		}
		return nil
	})
}

// TestDisconnected: while libvirtd is down nothing changes; after it is back a resync
// catches up with what happened meanwhile (a domain undefined, another started).
func TestDisconnected(t *testing.T) {
	h := start(t, newStore(t), newFake(), "node-1")
	h.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, XML: domXML("a", uuidA, true, "", nic{macA1, "vnet0"})}, EventStarted)
	h.wantTaps(uuidA, "vnet0")

	h.fake.stopDaemon()
	eventually(t, "status disconnected", func() error {
		if st := h.w.Status(); st.Connected || !strings.Contains(st.Error, "connection refused") {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	before := h.fake.connectCount()
	// While down: A is undefined (no event reaches us), B starts.
	h.fake.undefine(uuidA)
	h.fake.set(Domain{UUID: uuidB, Name: "b", Active: true, XML: domXML("b", uuidB, true, "", nic{"52:54:00:00:0b:01", "vnet1"})}, EventStarted)
	// Several reconnect attempts fail, and A's endpoint and address stay.
	eventually(t, "reconnect attempts", func() error {
		if st := h.w.Status(); st.Reconnects < 3 {
			return fmt.Errorf("%d reconnects", st.Reconnects)
		}
		return nil
	})
	if len(h.weps(uuidA)) != 1 || len(h.held(uuidA, macA1)) != 1 {
		t.Fatal("a disconnected watcher changed the endpoints")
	}
	if h.fake.connectCount() != before {
		t.Fatal("connected while the daemon was down")
	}

	h.fake.startDaemon()
	h.wantTaps(uuidA)
	h.wantTaps(uuidB, "vnet1")
	eventually(t, "A's address released after the resync", func() error {
		if held := h.held(uuidA, macA1); len(held) != 0 {
			return fmt.Errorf("held %v", held)
		}
		return nil
	})
}

// TestRestartKeepsEverything: a new agent over the same datastore adopts the
// endpoints without rewriting them, and releases the address of a domain undefined
// while it was away (stopped, so it had no endpoint), but not another node's.
func TestRestartKeepsEverything(t *testing.T) {
	store := newStore(t)
	fake := newFake()
	h := start(t, store, fake, "node-1")
	h.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, XML: domXML("a", uuidA, true, "", nic{macA1, "vnet0"})}, EventStarted)
	h.fake.set(Domain{UUID: uuidB, Name: "b", Active: true, XML: domXML("b", uuidB, true, "", nic{macA2, "vnet1"})}, EventStarted)
	rv := h.wantTaps(uuidA, "vnet0")["vnet0"].ResourceVersion
	h.wantTaps(uuidB, "vnet1")
	h.fake.set(Domain{UUID: uuidB, Name: "b", XML: domXML("b", uuidB, false, "", nic{macA2, ""})}, EventStopped)
	h.wantTaps(uuidB)
	// Another node's VM handle, which this node must not touch.
	other := ipam.VMHandle("cccccccc-0000-0000-0000-000000000003", "52:54:00:00:0c:01")
	if _, err := h.ipam.Assign(context.Background(), ipam.Request{HandleID: other, Node: "node-2",
		Attrs: map[string]string{ipam.AttrNode: "node-2"}}); err != nil {
		t.Fatal(err)
	}
	h.stop()

	fake.undefine(uuidB)
	h2 := start(t, store, fake, "node-1")
	eventually(t, "resync after restart", func() error {
		if st := h2.w.Status(); st.LastResync.IsZero() {
			return errors.New("no resync yet")
		}
		return nil
	})
	if w := h2.weps(uuidA)["vnet0"]; w == nil || w.ResourceVersion != rv {
		t.Fatalf("endpoint rewritten or gone after a restart: %v", w)
	}
	if len(h2.held(uuidB, macA2)) != 0 {
		t.Fatal("the address of a domain undefined while the agent was away is still held")
	}
	if ips, _ := h2.ipam.AddressesOf(context.Background(), other); len(ips) != 1 {
		t.Fatal("another node's VM address was released")
	}
}

// TestMigratedAwayKeepsAddress: a domain that leaves by live migration, or runs on
// another node, keeps its address when it is undefined here.
func TestMigratedAwayKeepsAddress(t *testing.T) {
	h := start(t, newStore(t), newFake(), "node-1")
	h.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, XML: domXML("a", uuidA, true, "", nic{macA1, "vnet0"})}, EventStarted)
	h.wantTaps(uuidA, "vnet0")
	h.fake.set(Domain{UUID: uuidA, Name: "a", XML: domXML("a", uuidA, false, "", nic{macA1, ""})}, EventStoppedMigrated)
	h.fake.undefine(uuidA)
	h.wantTaps(uuidA)
	eventually(t, "domain forgotten", func() error {
		if st := h.w.Status(); len(st.Domains) != 0 {
			return fmt.Errorf("domains %+v", st.Domains)
		}
		return nil
	})
	if len(h.held(uuidA, macA1)) != 1 {
		t.Fatal("a domain that migrated away lost its address")
	}

	// B runs on node-2 too (its endpoint there names its UUID): undefining it here keeps
	// the address.
	h.fake.set(Domain{UUID: uuidB, Name: "b", Active: true, XML: domXML("b", uuidB, true, "", nic{macA2, "vnet1"})}, EventStarted)
	w := h.wantTaps(uuidB, "vnet1")["vnet1"].DeepCopy()
	w.ObjectMeta = metav1.ObjectMeta{Name: "node-2-libvirt-b-vnet5", Namespace: "default", Labels: w.Labels}
	w.Spec.Node, w.Spec.InterfaceName = "node-2", "vnet5"
	if _, err := h.store.Create(context.Background(), w); err != nil {
		t.Fatal(err)
	}
	h.fake.undefine(uuidB)
	eventually(t, "B's endpoint here deleted", func() error {
		if ws := h.weps(uuidB); len(ws) != 1 || ws["vnet5"] == nil {
			return fmt.Errorf("endpoints %v", ws)
		}
		return nil
	})
	if len(h.held(uuidB, macA2)) != 1 {
		t.Fatal("the address of a domain running on another node was released")
	}
}

// TestRetry: a failure (no pool yet, libvirt failing to read the domain) is reported
// in the status and retried with backoff until it works.
func TestRetry(t *testing.T) {
	store := datastore.NewMemory()
	h := start(t, store, newFake(), "node-1")
	h.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, XML: domXML("a", uuidA, true, "", nic{macA1, "vnet0"})}, EventStarted)
	eventually(t, "error in status", func() error {
		st := h.w.Status()
		if len(st.Domains) != 1 || !strings.Contains(st.Domains[0].Error, "no usable IP pool") {
			return fmt.Errorf("status %+v", st.Domains)
		}
		return nil
	})
	p := &v1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "late"}, Spec: v1.IPPoolSpec{CIDR: "10.71.0.0/24", BlockSize: 26}}
	if _, err := store.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	w := h.wantTaps(uuidA, "vnet0")["vnet0"]
	if !strings.HasPrefix(w.Spec.IPNetworks[0], "10.71.0.") {
		t.Fatalf("address %v", w.Spec.IPNetworks)
	}
	eventually(t, "error cleared", func() error {
		if st := h.w.Status(); len(st.Domains) != 1 || st.Domains[0].Error != "" || len(st.Domains[0].Endpoints) != 1 {
			return fmt.Errorf("status %+v", st.Domains)
		}
		return nil
	})

	h.fake.mu.Lock()
	h.fake.lookupFail[uuidB] = errors.New("internal error")
	h.fake.mu.Unlock()
	h.fake.set(Domain{UUID: uuidB, Name: "b", Active: true, XML: domXML("b", uuidB, true, "", nic{macA2, "vnet1"})}, EventStarted)
	eventually(t, "lookup error in status", func() error {
		for _, d := range h.w.Status().Domains {
			if d.UUID == uuidB && strings.Contains(d.Error, "internal error") {
				return nil
			}
		}
		return fmt.Errorf("status %+v", h.w.Status().Domains)
	})
	h.dhcp.mu.Lock()
	h.dhcp.fail = errors.New("dhcp socket busy")
	h.dhcp.mu.Unlock()
	h.fake.mu.Lock()
	delete(h.fake.lookupFail, uuidB)
	h.fake.mu.Unlock()
	h.wantTaps(uuidB, "vnet1")
	eventually(t, "DHCP error in status", func() error {
		for _, d := range h.w.Status().Domains {
			if d.UUID == uuidB && strings.Contains(d.Error, "dhcp on vnet1: dhcp socket busy") {
				return nil
			}
		}
		return fmt.Errorf("status %+v", h.w.Status().Domains)
	})
	h.dhcp.mu.Lock()
	h.dhcp.fail = nil
	h.dhcp.mu.Unlock()
	eventually(t, "DHCP retried", func() error {
		if _, ok := h.dhcp.get("vnet1"); !ok {
			return errors.New("not served")
		}
		return nil
	})
}

// TestMigratedHereAdoptsAddress: a domain that started on node-1 and now runs on node-2
// (same UUID and MAC) keeps its address there, and the allocation becomes node-2's, so
// that node-2 advertises the /32.
func TestMigratedHereAdoptsAddress(t *testing.T) {
	store := newStore(t)
	h1 := start(t, store, newFake(), "node-1")
	h1.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, XML: domXML("a", uuidA, true, "", nic{macA1, "vnet0"})}, EventStarted)
	h1.wantTaps(uuidA, "vnet0")
	held := h1.held(uuidA, macA1)
	if len(held) != 1 {
		t.Fatalf("node-1 holds %v", held)
	}
	h1.fake.set(Domain{UUID: uuidA, Name: "a", XML: domXML("a", uuidA, false, "", nic{macA1, ""})}, EventStoppedMigrated)
	h1.wantTaps(uuidA)

	h2 := start(t, store, newFake(), "node-2")
	h2.fake.set(Domain{UUID: uuidA, Name: "a", Active: true, XML: domXML("a", uuidA, true, "", nic{macA1, "vnet3"})}, EventStarted)
	w := h2.wantTaps(uuidA, "vnet3")["vnet3"]
	if w.Spec.Node != "node-2" || len(w.Spec.IPNetworks) != 1 || w.Spec.IPNetworks[0] != netip.PrefixFrom(held[0], 32).String() {
		t.Fatalf("endpoint on node-2: node %s, addresses %v; want %s", w.Spec.Node, w.Spec.IPNetworks, held[0])
	}
	eventually(t, "the allocation is node-2's", func() error {
		info, err := h2.ipam.Lookup(context.Background(), held[0])
		if err != nil {
			return err
		}
		if n := info.Attrs[ipam.AttrNode]; n != "node-2" {
			return fmt.Errorf("allocation of %s names node %q", held[0], n)
		}
		return nil
	})
}
