package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/felix"
	"go.uber.org/zap"
)

// PolicyExplainer is what the policy tools of the local API need of the dataplane;
// *felix.Felix has it. A Dataplane without it answers 501 on those paths.
type PolicyExplainer interface {
	// ExplainPolicy runs the attached programs in explain mode on a synthetic flow.
	ExplainPolicy(ctx context.Context, req felix.ExplainRequest) (*felix.ExplainResult, error)
	// SubscribeDrops streams drop events until ctx ends (the channel is then closed).
	SubscribeDrops(ctx context.Context) (<-chan felix.DropEvent, error)
}

var _ PolicyExplainer = (*felix.Felix)(nil)

// explainTimeout bounds one POST /policy/explain.
const explainTimeout = 10 * time.Second

// registerPolicyAPI adds POST /policy/explain and GET /policy/drops to the local API.
func (a *Agent) registerPolicyAPI(mux *http.ServeMux) {
	mux.HandleFunc("POST "+localapi.PathPolicyExplain, a.serveExplain)
	mux.HandleFunc("GET "+localapi.PathPolicyDrops, a.serveDrops)
}

func (a *Agent) explainer(w http.ResponseWriter) (PolicyExplainer, bool) {
	pe, ok := a.dp.(PolicyExplainer)
	if !ok {
		writeJSON(w, http.StatusNotImplemented, localapi.Error{Error: "this dataplane cannot explain policy"})
	}
	return pe, ok
}

// policyErrorStatus maps felix's errors to HTTP status codes.
func policyErrorStatus(err error) int {
	switch {
	case errors.Is(err, felix.ErrBadRequest):
		return http.StatusBadRequest
	case errors.Is(err, felix.ErrUnknownEndpoint):
		return http.StatusNotFound
	case errors.Is(err, felix.ErrPolicyDisabled), errors.Is(err, felix.ErrPolicyNotReady):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func (a *Agent) serveExplain(w http.ResponseWriter, r *http.Request) {
	pe, ok := a.explainer(w)
	if !ok {
		return
	}
	var req localapi.ExplainRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, localapi.Error{Error: "decode explain request: " + err.Error()})
		return
	}
	if req.From == "" || req.To == "" {
		writeJSON(w, http.StatusBadRequest, localapi.Error{Error: "explain request: from and to are required"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), explainTimeout)
	defer cancel()
	res, err := pe.ExplainPolicy(ctx, felix.ExplainRequest{From: req.From, To: req.To, Protocol: req.Protocol,
		Port: req.Port})
	if err != nil {
		code := policyErrorStatus(err)
		if code == http.StatusInternalServerError {
			a.log.Warn("explain policy for the local API", zap.Error(err))
		}
		writeJSON(w, code, localapi.Error{Error: "explain: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, explanationOut(res))
}

// serverStops maps each *http.Server serving drops to a channel closed when it shuts
// down, so that streams end with the server rather than hold its Shutdown up.
var serverStops sync.Map // *http.Server -> chan struct{}

func stopping(r *http.Request) <-chan struct{} {
	srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server)
	if !ok {
		return nil
	}
	ch := make(chan struct{})
	got, loaded := serverStops.LoadOrStore(srv, ch)
	if !loaded {
		srv.RegisterOnShutdown(func() {
			close(ch)
			serverStops.Delete(srv)
		})
	}
	return got.(chan struct{})
}

func (a *Agent) serveDrops(w http.ResponseWriter, r *http.Request) {
	pe, ok := a.explainer(w)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	events, err := pe.SubscribeDrops(ctx)
	if err != nil {
		writeJSON(w, policyErrorStatus(err), localapi.Error{Error: "drops: " + err.Error()})
		return
	}
	stop := stopping(r)
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	enc := json.NewEncoder(w)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			if err := enc.Encode(dropOut(ev)); err != nil {
				return // the client went away
			}
			if err := rc.Flush(); err != nil {
				return
			}
		case <-stop:
			return
		case <-ctx.Done():
			return
		}
	}
}

func ruleOut(r *felix.ExplainRule) *localapi.PolicyRule {
	if r == nil {
		return nil
	}
	return &localapi.PolicyRule{ID: r.ID, Kind: r.Kind, Namespace: r.Namespace, Name: r.Name,
		Direction: r.Direction, Index: r.Index, Action: r.Action}
}

func stepOut(s felix.ExplainStep) localapi.ExplainStep {
	return localapi.ExplainStep{Direction: s.Direction, Endpoint: s.Endpoint, Interface: s.Interface,
		Allowed: s.Allowed, Stage: s.Stage, RuleID: s.RuleID, PeerClass: s.PeerClass, Rule: ruleOut(s.Rule),
		SelectedBy: s.SelectedBy, Reason: s.Reason}
}

func explanationOut(r *felix.ExplainResult) localapi.Explanation {
	out := localapi.Explanation{Allowed: r.Allowed, From: r.From, FromIP: r.FromIP, To: r.To, ToIP: r.ToIP,
		Protocol: r.Protocol, Port: r.Port, Ingress: stepOut(r.Ingress), Notes: r.Notes}
	if r.Egress != nil {
		eg := stepOut(*r.Egress)
		out.Egress = &eg
	}
	return out
}

func dropOut(e felix.DropEvent) localapi.DropEvent {
	return localapi.DropEvent{Time: e.Time, Endpoint: e.Endpoint, Interface: e.Interface, Direction: e.Direction,
		Peer: e.Peer, PeerEndpoint: e.PeerEndpoint, Src: e.Src, Dst: e.Dst, Protocol: e.Protocol,
		SrcPort: e.SrcPort, DstPort: e.DstPort, Reason: e.Reason, RuleID: e.RuleID, Rule: ruleOut(e.Rule), Log: e.Log}
}
