package agent

import (
	"net/http"
	"sync"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/vmendpoint"
)

// VMWatcher is what GET /vms needs of the libvirt watcher; *vmendpoint.Watcher has
// it, tests give a fake. An agent without one (--vm-endpoints=false) reports VM
// endpoints disabled.
type VMWatcher interface {
	Status() vmendpoint.Status
}

var _ VMWatcher = (*vmendpoint.Watcher)(nil)

// vmHolder holds the agent's VMWatcher, set by Options.VMs or SetVMWatcher.
type vmHolder struct {
	mu sync.Mutex
	w  VMWatcher
}

// SetVMWatcher hands the agent the libvirt watcher it reports on GET /vms and in
// /status (nil: VM endpoints are off). It may be called at any time.
func (a *Agent) SetVMWatcher(w VMWatcher) {
	a.vms.mu.Lock()
	defer a.vms.mu.Unlock()
	a.vms.w = w
}

// registerVMAPI adds GET /vms to the local API.
func (a *Agent) registerVMAPI(mux *http.ServeMux) {
	mux.HandleFunc("GET "+localapi.PathVMs, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, a.vmStatus())
	})
}

// vmStatus converts the watcher's status (disabled when there is no watcher).
func (a *Agent) vmStatus() *localapi.VMStatus {
	a.vms.mu.Lock()
	w := a.vms.w
	a.vms.mu.Unlock()
	if w == nil {
		return &localapi.VMStatus{Domains: []localapi.VMDomain{}}
	}
	return vmStatusOut(w.Status())
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func vmStatusOut(s vmendpoint.Status) *localapi.VMStatus {
	out := &localapi.VMStatus{Enabled: s.Enabled, URI: s.URI, Connected: s.Connected, Error: s.Error,
		Since: timePtr(s.Since), LastResync: timePtr(s.LastResync), Reconnects: s.Reconnects,
		Domains: make([]localapi.VMDomain, 0, len(s.Domains))}
	for _, d := range s.Domains {
		state := localapi.VMStateShutOff
		switch {
		case d.Standby:
			state = localapi.VMStateStandby
		case d.Active:
			state = localapi.VMStateRunning
		}
		od := localapi.VMDomain{Name: d.Name, UUID: d.UUID, State: state, Problems: d.Problems,
			LastError: d.Error, LastSync: timePtr(d.LastSync), Endpoints: make([]localapi.VMEndpoint, 0, len(d.Endpoints))}
		if m := d.Migration; m != nil {
			od.Migration = &localapi.VMMigration{From: m.From, Resumed: m.Resumed, LastSentThere: timePtr(m.LastSentThere),
				FirstSentHere: timePtr(m.FirstSentHere), BlackoutMillis: m.BlackoutMillis, Error: m.Error}
		}
		for _, e := range d.Endpoints {
			od.Endpoints = append(od.Endpoints, localapi.VMEndpoint{Namespace: e.Namespace, Name: e.Name,
				Tap: e.Tap, MAC: e.MAC, IP: e.IP})
		}
		out.Domains = append(out.Domains, od)
	}
	return out
}
