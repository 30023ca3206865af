package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/tabbynet/tabby/agent/localapi"
	"go.uber.org/zap"
)

// healthHandler serves /livez (the process answers) and /readyz (the datastore is
// reachable, the node registered and the dataplane ready).
func (a *Agent) healthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /livez", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if reasons := a.notReady(); len(reasons) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + strings.Join(reasons, "; ") + "\n"))
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// metricsHandler serves the registry in the Prometheus text format on /metrics.
func metricsHandler(reg *prometheus.Registry, log *zap.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		Registry:      reg,
		ErrorLog:      zap.NewStdLog(log),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	return mux
}

// localAPIHandler serves the local API on the unix socket: GET /status, /endpoints,
// /routes, /bgp/peers, /policy, /vms and /logs, JSON.
func (a *Agent) localAPIHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+localapi.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.status(r.Context()))
	})
	mux.HandleFunc("GET "+localapi.PathEndpoints, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, localapi.EndpointList{Endpoints: endpointsOut(a.dp.Status().Endpoints)})
	})
	mux.HandleFunc("GET "+localapi.PathRoutes, func(w http.ResponseWriter, _ *http.Request) {
		rs, err := a.dp.Routes()
		if err != nil {
			a.log.Warn("list routes for the local API", zap.Error(err))
			writeJSON(w, http.StatusInternalServerError, localapi.Error{Error: "list routes: " + err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, localapi.RouteList{Routes: routesOut(rs)})
	})
	mux.HandleFunc("GET "+localapi.PathBGPPeers, a.serveBGPPeers)
	mux.HandleFunc("GET "+localapi.PathPolicy, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, policyOut(a.dp.Status().Policy))
	})
	a.registerPolicyAPI(mux) // POST /policy/explain, GET /policy/drops (policyapi.go)
	a.registerVMAPI(mux)     // GET /vms (vmapi.go)
	a.registerDiagsAPI(mux)  // GET /logs (diags.go)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case localapi.PathStatus, localapi.PathEndpoints, localapi.PathRoutes, localapi.PathBGPPeers, localapi.PathPolicy, localapi.PathVMs:
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, http.StatusMethodNotAllowed, localapi.Error{Error: "method " + r.Method + " not allowed: use GET"})
			return
		}
		writeJSON(w, http.StatusNotFound, localapi.Error{Error: "no such endpoint " + r.Method + " " + r.URL.Path +
			": use GET " + localapi.PathStatus + ", " + localapi.PathEndpoints + ", " + localapi.PathRoutes + ", " + localapi.PathBGPPeers + ", " + localapi.PathPolicy + ", " + localapi.PathVMs + " or " + localapi.PathLogs})
	})
	return mux
}

// status builds the answer of GET /status.
func (a *Agent) status(ctx context.Context) localapi.Status {
	now := a.now()
	up := now.Sub(a.start)
	fs := a.dp.Status()
	st := a.snapshot()
	out := localapi.Status{
		Node:          a.cfg.NodeName,
		Version:       a.version,
		StartTime:     a.start,
		Uptime:        up.Round(time.Second).String(),
		UptimeSeconds: up.Seconds(),
		NotReady:      a.notReady(),
		NodeIP:        st.nodeIP.String(),
		NodeIPSource:  st.nodeIPSource,
		Registered:    st.registered,
		Datastore:     localapi.DatastoreStatus{Reachable: st.reachable, LastCheck: st.lastCheck, Error: st.storeErr},
		HealthAddr:    st.healthAddr,
		MetricsAddr:   st.metricsAddr,
		Felix: localapi.FelixStatus{InSync: fs.InSync, LastError: fs.LastError,
			Endpoints: endpointsOut(fs.Endpoints),
			Routes:    localapi.RouteCounts{Local: fs.Routes.Local, Blackhole: fs.Routes.Blackhole, Learned: fs.Routes.Learned}},
	}
	if !st.nodeIP.IsValid() {
		out.NodeIP = ""
	}
	out.Ready = len(out.NotReady) == 0
	bs, err := a.bgpStatus(ctx)
	if err != nil {
		bs = localapi.BGPStatus{Enabled: true, Peers: []localapi.BGPPeer{}, Problems: []string{"list BGP peers: " + err.Error()}}
	}
	out.BGP = &bs
	out.Policy = policyOut(fs.Policy)
	out.VMs = a.vmStatus()
	if !fs.LastApply.IsZero() {
		t := fs.LastApply
		out.Felix.LastApply = &t
	}
	return out
}

func endpointsOut(in []EndpointStatus) []localapi.Endpoint {
	out := make([]localapi.Endpoint, 0, len(in))
	for _, e := range in {
		ips := e.IPs
		if ips == nil {
			ips = []string{}
		}
		out = append(out, localapi.Endpoint{Namespace: e.Namespace, Name: e.Name, Workload: e.Workload,
			Interface: e.Interface, IPs: ips, Programmed: e.Programmed, Message: e.Message,
			PolicyEnforced: e.PolicyProgrammed, PolicyMessage: e.PolicyMessage})
	}
	return out
}

// policyOut converts felix's policy status (nil when policy is off).
func policyOut(p *PolicyStatus) *localapi.PolicyStatus {
	if p == nil {
		return &localapi.PolicyStatus{Sources: []localapi.PolicySource{}}
	}
	out := &localapi.PolicyStatus{Enabled: p.Enabled, Programmed: p.Programmed, Error: p.Error,
		Sources: make([]localapi.PolicySource, 0, len(p.Sources)), Enforced: p.Enforced,
		NotEnforced: p.NotEnforced, Rules: p.Rules}
	for _, s := range p.Sources {
		out.Sources = append(out.Sources, localapi.PolicySource{Kind: s.Kind, Namespace: s.Namespace,
			Name: s.Name, ResourceVersion: s.ResourceVersion})
	}
	return out
}

func routesOut(in []RouteInfo) []localapi.Route {
	out := make([]localapi.Route, 0, len(in))
	for _, r := range in {
		out = append(out, localapi.Route{Dst: r.Dst, Dev: r.Dev, Via: r.Via, Protocol: protocolNumber(r.Protocol), Kind: r.Kind})
	}
	return out
}

// protocolNumber is a route protocol number from felix's rendering of it (a number, or
// its decimal string); 0 when it is neither.
func protocolNumber[T any](p T) int {
	n, err := strconv.Atoi(fmt.Sprint(p))
	if err != nil {
		return 0
	}
	return n
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(localapi.Error{Error: "encode: " + err.Error()})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(b, '\n'))
}
