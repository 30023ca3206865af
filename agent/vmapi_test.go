package agent

import (
	"context"
	"encoding/json"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/vmendpoint"
)

// fakeVMs stands in for the libvirt watcher.
type fakeVMs struct {
	mu sync.Mutex
	st vmendpoint.Status
}

func (f *fakeVMs) Status() vmendpoint.Status {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st
}

func TestVMsAPI(t *testing.T) {
	ctx := context.Background()
	a := newTestAgent(t, &fakeDataplane{})
	c := serveLocalAPI(t, a)

	// No watcher: VM endpoints are off, and /status says so too.
	vs, err := c.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if vs.Enabled || vs.Connected || vs.Domains == nil || len(vs.Domains) != 0 {
		t.Errorf("without a watcher: %+v", vs)
	}
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.VMs == nil || st.VMs.Enabled {
		t.Errorf("status without a watcher: vms %+v", st.VMs)
	}

	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	fake := &fakeVMs{st: vmendpoint.Status{Enabled: true, URI: "qemu:///system", Connected: true, Since: since,
		LastResync: since, Reconnects: 1, Domains: []vmendpoint.DomainStatus{
			{UUID: "u-1", Name: "web-1", Active: true, LastSync: since, Problems: []string{"label tabby.dev/x: reserved"},
				Endpoints: []vmendpoint.EndpointStatus{{Namespace: "prod", Name: "node-1-libvirt-web--1-tap0",
					Tap: "tap0", MAC: "52:54:00:00:00:01", IP: "10.65.0.10/32"}}},
			{UUID: "u-2", Name: "db-1", Error: "ipam: pool full"},
		}}}
	a.SetVMWatcher(fake)
	vs, err = c.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := &localapi.VMStatus{Enabled: true, URI: "qemu:///system", Connected: true, Since: &since, LastResync: &since,
		Reconnects: 1, Domains: []localapi.VMDomain{
			{Name: "web-1", UUID: "u-1", State: "running", Problems: []string{"label tabby.dev/x: reserved"}, LastSync: &since,
				Endpoints: []localapi.VMEndpoint{{Namespace: "prod", Name: "node-1-libvirt-web--1-tap0", Tap: "tap0",
					MAC: "52:54:00:00:00:01", IP: "10.65.0.10/32"}}},
			{Name: "db-1", UUID: "u-2", State: "shut off", LastError: "ipam: pool full", Endpoints: []localapi.VMEndpoint{}},
		}}
	if !reflect.DeepEqual(vs, want) {
		g, _ := json.Marshal(vs)
		w, _ := json.Marshal(want)
		t.Errorf("GET /vms:\n got %s\nwant %s", g, w)
	}
	st, err = c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(st.VMs, want) {
		t.Errorf("status vms: %+v", st.VMs)
	}

	// A disconnected watcher says why; zero times are left out.
	fake.mu.Lock()
	fake.st = vmendpoint.Status{Enabled: true, URI: "qemu:///system", Error: "connect to qemu:///system: no libvirt"}
	fake.mu.Unlock()
	vs, err = c.VMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if vs.Connected || vs.Error == "" || vs.Since != nil || vs.LastResync != nil || len(vs.Domains) != 0 {
		t.Errorf("disconnected: %+v", vs)
	}
}

func TestVMsOption(t *testing.T) {
	fake := &fakeVMs{st: vmendpoint.Status{Enabled: true, URI: "test:///default", Connected: true}}
	a := newTestAgent(t, &fakeDataplane{})
	a.SetVMWatcher(nil)
	if a.vmStatus().Enabled {
		t.Error("nil watcher reported enabled")
	}
	b, err := New(Options{Config: testConfig(t), Store: a.store, Dataplane: &fakeDataplane{},
		Registry: prometheus.NewRegistry(), VMs: fake})
	if err != nil {
		t.Fatal(err)
	}
	if got := b.vmStatus(); !got.Enabled || got.URI != "test:///default" {
		t.Errorf("Options.VMs: %+v", got)
	}
}
