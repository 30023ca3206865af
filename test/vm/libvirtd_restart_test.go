package vm

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/test/fabric"
	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/vmguest"
	"libvirt.org/go/libvirt"
)

// TestLibvirtdRestart: libvirtd stops (SIGTERM, then SIGKILL) and comes back under a
// guest on node A that a pod on node B pings every 20 ms. The guest's QEMU keeps
// running, the pings keep being answered, the WorkloadEndpoint is never deleted or
// rewritten, tabby-node's watcher reports the lost connection, reconnects and
// resyncs, and a metadata change made on the new connection is applied. The test
// restarts a libvirtd of its own (vmguest.PrivateLibvirtd), never the shared one.
func TestLibvirtdRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: root, libvirt, QEMU, a kube-apiserver, cnitool and network namespaces")
	}
	testStart := time.Now()
	t.Cleanup(func() { t.Logf("test with teardown took %v", time.Since(testStart).Round(time.Millisecond)) })
	w := newPrivateWorld(t)
	ctx := netnode.Context(t, 10*time.Minute)
	t.Logf("private libvirtd pid %d at %s", w.priv.PID, w.uri)

	tap := "tapr" + w.id
	w.vmArgs = []string{"--vm-endpoints=true", "--vm-tap-prefix=" + tap, "--libvirt-uri=" + w.uri, "--policy=true"}
	if err := w.a.Start(w.vmArgs...); err != nil {
		t.Fatal(err)
	}
	if err := w.b.Start("--policy=true"); err != nil {
		t.Fatal(err)
	}
	waitAgent(t, w.a)
	waitAgent(t, w.b)
	client, err := w.b.AddPodSpec(ctx, fabric.PodSpec{Namespace: w.ns, Name: "client", Labels: map[string]string{"app": "client"}})
	if err != nil {
		t.Fatal(err)
	}

	name := "tabby-vmr-" + w.id
	mac := fmt.Sprintf("52:54:00:%s:%s:%s", w.id[0:2], w.id[2:4], w.id[4:6])
	meta := func(extra string) string {
		return fmt.Sprintf(`<tabby:endpoint xmlns:tabby="https://tabby.dev/xmlns/vm/1.0" namespace="%s"><tabby:label key="app" value="vm"/>%s</tabby:endpoint>`, w.ns, extra)
	}
	d := vmguest.DefineT(t, w.conn, vmguest.Options{Name: name, MAC: mac, Tap: tap, Metadata: meta(""), Artifacts: w.art})
	// Runs before the domain's cleanup: a test that failed with libvirtd down brings it
	// back, so the guest is destroyed and undefined the ordinary way.
	t.Cleanup(func() {
		if w.priv.PID != 0 {
			return
		}
		if err := w.priv.Start(context.Background()); err != nil {
			t.Errorf("restart the private libvirtd for the cleanup: %v", err)
			return
		}
		if err := w.reconnect(d); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	wep, vmNet := w.startOnNodeA(t, ctx, d, name, tap)
	vmIP := vmNet.Addr()
	if addr, _, err := d.WaitDHCP(ctx, 0, bootTimeout); err != nil || addr != vmNet.String() {
		t.Fatalf("guest's DHCP: %s, %v; want %s", addr, err, vmNet)
	}
	w.waitEnforced(t, wep.Name)
	waitFor(t, "ping from the client to the guest", 90*time.Second, func() error { return client.Ping(ctx, vmIP, 1) })
	qemu := w.priv.QEMUPid(name)
	if qemu == 0 {
		t.Fatalf("no QEMU pid for %s under the private libvirtd", name)
	}
	st0 := w.vmStatus(t)
	if !st0.Connected || st0.URI != w.uri {
		t.Fatalf("watcher before the restarts: connected %v to %q (%s), want connected to %q", st0.Connected, st0.URI, st0.Error, w.uri)
	}
	t.Logf("guest %s (QEMU pid %d): endpoint %s %s; watcher reconnects %d", name, qemu, wep.Name, vmNet, st0.Reconnects)

	// Every change of the guest's endpoint from now until the metadata change.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	events, err := w.store.Watch(wctx, datastore.KindWorkloadEndpoint, datastore.WatchOptions{ListOptions: datastore.ListOptions{Namespace: w.ns}})
	if err != nil {
		t.Fatal(err)
	}
	var (
		evMu    sync.Mutex
		changes []string
		synced  = make(chan struct{})
		watched = make(chan struct{})
	)
	go func() {
		defer close(watched)
		for ev := range events {
			if ev.Type == datastore.Synced {
				close(synced)
				continue
			}
			e, ok := ev.Object.(*v1.WorkloadEndpoint)
			if !ok || e.Name != wep.Name {
				continue
			}
			if ev.Type == datastore.Added && e.UID == wep.UID && e.ResourceVersion == wep.ResourceVersion {
				continue // the initial list
			}
			evMu.Lock()
			changes = append(changes, fmt.Sprintf("%s %s uid %s rv %s %v at %s", ev.Type, e.Name, e.UID, e.ResourceVersion,
				e.Spec.IPNetworks, time.Now().Format("15:04:05.000")))
			evMu.Unlock()
		}
	}()
	select {
	case <-synced:
	case <-time.After(waitTimeout):
		t.Fatal("the WorkloadEndpoint watch did not sync")
	}

	p, err := startPing(client.Netns, vmIP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.kill)
	waitReplies := func(what string, n int) {
		t.Helper()
		base := p.replies()
		waitFor(t, what, waitTimeout, func() error {
			if got := p.replies() - base; got < n {
				return fmt.Errorf("%d replies of %d", got, n)
			}
			return nil
		})
	}
	waitReplies("the continuous ping answered", 5)

	reconnects := st0.Reconnects
	var lastResync time.Time
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		killAt := time.Now()
		if err := w.priv.Stop(sig); err != nil {
			t.Fatal(err)
		}
		// Down: the watcher says so, the guest runs, its traffic flows, its endpoint stays.
		var down *localapi.VMStatus
		waitFor(t, fmt.Sprintf("the watcher disconnected after %v", sig), waitTimeout, func() error {
			down = w.vmStatus(t)
			if down.Connected || down.Reconnects <= reconnects {
				return fmt.Errorf("connected %v, reconnects %d (was %d)", down.Connected, down.Reconnects, reconnects)
			}
			return nil
		})
		lostAt := time.Since(killAt)
		waitReplies(fmt.Sprintf("50 pings answered with libvirtd down (%v)", sig), 50)
		if got, err := w.guestWEP(name); err != nil || got.UID != wep.UID || got.ResourceVersion != wep.ResourceVersion {
			t.Errorf("with libvirtd down (%v) the endpoint is %v, %v; want uid %s rv %s", sig, got, err, wep.UID, wep.ResourceVersion)
		}
		if pid := w.priv.QEMUPid(name); pid != qemu {
			t.Fatalf("with libvirtd down (%v) the guest's QEMU pid is %d, want %d still running", sig, pid, qemu)
		}

		startAt := time.Now()
		if err := w.priv.Start(ctx); err != nil {
			t.Fatal(err)
		}
		started := time.Since(startAt)
		var up *localapi.VMStatus
		waitFor(t, fmt.Sprintf("the watcher reconnected and resynced after %v", sig), waitTimeout, func() error {
			up = w.vmStatus(t)
			switch {
			case !up.Connected:
				return fmt.Errorf("not connected: %s", up.Error)
			case up.Since == nil || up.Since.Before(startAt):
				return fmt.Errorf("connected since %v, before the restart at %v", up.Since, startAt)
			case up.LastResync == nil || up.LastResync.Before(*up.Since):
				return fmt.Errorf("last resync %v, not since the reconnect at %v", up.LastResync, up.Since)
			}
			return nil
		})
		// Reconnects counts every failed session, the lost connection and each refused
		// attempt while libvirtd was down (vmendpoint's TestDisconnected relies on it):
		// at least one more than before the signal, and none since the reconnect.
		if up.Reconnects < down.Reconnects {
			t.Errorf("after %v: reconnects %d, less than the %d seen while down", sig, up.Reconnects, down.Reconnects)
		}
		reconnects, lastResync = up.Reconnects, *up.LastResync
		ds := findVM(up, name)
		if ds == nil || ds.State != localapi.VMStateRunning || len(ds.Endpoints) != 1 || ds.Endpoints[0].IP != vmIP.String() || ds.LastError != "" {
			t.Errorf("after %v the watcher reports the guest as %+v; want running with endpoint %s, no error", sig, ds, vmIP)
		}
		if pid := w.priv.QEMUPid(name); pid != qemu {
			t.Fatalf("after %v and a restart the guest's QEMU pid is %d, want %d", sig, pid, qemu)
		}
		if err := w.reconnect(d); err != nil {
			t.Fatal(err)
		}
		if st, err := d.State(); err != nil || st != libvirt.DOMAIN_RUNNING {
			t.Errorf("after %v the restarted libvirtd says the guest is in state %d, %v; want running", sig, st, err)
		}
		t.Logf("RESTART %v: watcher saw it down %v after the signal; libvirtd back in %v; watcher connected %v after the start (resync at +%v); reconnects %d",
			sig, lostAt.Round(time.Millisecond), started.Round(time.Millisecond), up.Since.Sub(startAt).Round(time.Millisecond),
			up.LastResync.Sub(startAt).Round(time.Millisecond), up.Reconnects)
		waitReplies(fmt.Sprintf("50 pings answered after the restart (%v)", sig), 50)
	}

	// The endpoint never changed: the watch saw nothing, and it is the same object.
	stopWatch()
	<-watched
	evMu.Lock()
	if len(changes) > 0 {
		t.Errorf("the guest's WorkloadEndpoint changed across the libvirtd restarts:\n%s", strings.Join(changes, "\n"))
	}
	evMu.Unlock()
	if got, err := w.guestWEP(name); err != nil || got.UID != wep.UID || got.ResourceVersion != wep.ResourceVersion {
		t.Errorf("after the restarts the endpoint is %v, %v; want uid %s rv %s", got, err, wep.UID, wep.ResourceVersion)
	}

	// A live metadata change made on the restarted libvirtd reaches the endpoint: the
	// watcher's event subscription works on the new connection.
	changeAt := time.Now()
	// virsh adds the prefix and namespace to the element it is given (docs/vm.md).
	if _, err := netnode.Run(ctx, "virsh", "-c", w.uri, "metadata", name, "https://tabby.dev/xmlns/vm/1.0", "--key", "tabby", "--live",
		"--set", fmt.Sprintf(`<endpoint namespace="%s"><label key="app" value="vm"/><label key="tier" value="restarted"/></endpoint>`, w.ns)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the metadata change applied to the endpoint", waitTimeout, func() error {
		got, err := w.guestWEP(name)
		if err != nil {
			return err
		}
		if got.Labels["tier"] != "restarted" || got.Labels["app"] != "vm" {
			return fmt.Errorf("labels %v", got.Labels)
		}
		if got.UID != wep.UID || got.Spec.IPNetworks[0] != vmNet.String() {
			return fmt.Errorf("endpoint uid %s %v, want uid %s with %s", got.UID, got.Spec.IPNetworks, wep.UID, vmNet)
		}
		return nil
	})
	t.Logf("metadata change applied in %v", time.Since(changeAt).Round(time.Millisecond))
	// By the metadata-change event on the watcher's new connection, not by a resync
	// (every 5 minutes).
	if st := w.vmStatus(t); st.LastResync == nil || !st.LastResync.Equal(lastResync) || st.Reconnects != reconnects {
		t.Errorf("the metadata change came with a resync at %v (last was %v) or a reconnect (%d, was %d): the event subscription of the new connection is not proven",
			st.LastResync, lastResync, st.Reconnects, reconnects)
	}

	waitReplies("50 pings answered at the end", 50)
	sent, received, err := p.stop()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("LOSS across two libvirtd restarts (SIGTERM, SIGKILL): %d of %d pings lost (seqs %v)", sent-received, sent, p.lostSeqs())
	if sent-received > 3 {
		t.Errorf("%d of %d pings lost across the libvirtd restarts, want at most 3:\n%s", sent-received, sent, p.output())
	}
}

// vmStatus is node A's GET /vms; t fails when it cannot be read.
func (w *world) vmStatus(t *testing.T) *localapi.VMStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := w.apiA.VMs(ctx)
	if err != nil {
		t.Fatalf("GET /vms on %s: %v", w.a.Name, err)
	}
	return st
}

func findVM(st *localapi.VMStatus, name string) *localapi.VMDomain {
	for i := range st.Domains {
		if st.Domains[i].Name == name {
			return &st.Domains[i]
		}
	}
	return nil
}

// reconnect replaces w.conn (dead after a libvirtd restart) with a new connection to
// w.uri and rebinds d to it.
func (w *world) reconnect(d *vmguest.Domain) error {
	conn, err := libvirt.NewConnect(w.uri)
	if err != nil {
		return fmt.Errorf("connect to %s again: %w", w.uri, err)
	}
	_, _ = w.conn.Close() // dead: its error says nothing
	w.conn = conn
	return d.Rebind(conn)
}
