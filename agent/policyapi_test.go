package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix"
)

// explainDataplane is a fake dataplane with the policy tools.
type explainDataplane struct {
	fakeDataplane
	got    felix.ExplainRequest
	drops  chan felix.DropEvent
	subbed chan struct{}
	ended  chan struct{}
}

func (f *explainDataplane) ExplainPolicy(_ context.Context, req felix.ExplainRequest) (*felix.ExplainResult, error) {
	f.got = req
	switch req.To {
	case "x/nobody":
		return nil, fmt.Errorf("endpoint x/nobody: %w", felix.ErrUnknownEndpoint)
	case "x/off":
		return nil, felix.ErrPolicyDisabled
	}
	eg := felix.ExplainStep{Direction: "egress", Endpoint: "x/a", Allowed: true, Stage: "default",
		Reason: "default allow: no policy selects the endpoint"}
	return &felix.ExplainResult{From: "x/a", FromIP: "10.0.0.1", To: req.To, ToIP: "10.0.0.2", Protocol: req.Protocol,
		Port: req.Port, Egress: &eg, Ingress: felix.ExplainStep{Direction: "ingress", Endpoint: req.To, Stage: "policy",
			RuleID: 3, Rule: &felix.ExplainRule{ID: 3, Kind: "K8sNetworkPolicy", Namespace: "x", Name: "deny",
				Direction: "ingress", Index: 0, Action: "Deny"}, Reason: "deny: rule matched"}}, nil
}

func (f *explainDataplane) SubscribeDrops(ctx context.Context) (<-chan felix.DropEvent, error) {
	out := make(chan felix.DropEvent)
	close(f.subbed)
	go func() {
		defer close(out)
		defer close(f.ended)
		for {
			select {
			case ev := <-f.drops:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// serveLocalAPI serves a's local API on a unix socket and returns a client of it.
func serveLocalAPI(t *testing.T, a *Agent) *localapi.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(a.localAPIHandler())
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return localapi.NewClient(sock, 5*time.Second)
}

func newTestAgent(t *testing.T, dp Dataplane) *Agent {
	t.Helper()
	a, err := New(Options{Config: testConfig(t), Store: datastore.NewMemory(), Dataplane: dp,
		Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestPolicyExplainAPI(t *testing.T) {
	dp := &explainDataplane{}
	c := serveLocalAPI(t, newTestAgent(t, dp))
	ctx := context.Background()
	ex, err := c.ExplainPolicy(ctx, localapi.ExplainRequest{From: "x/a", To: "x/b", Protocol: "TCP", Port: 80})
	if err != nil {
		t.Fatal(err)
	}
	if dp.got != (felix.ExplainRequest{From: "x/a", To: "x/b", Protocol: "TCP", Port: 80}) {
		t.Errorf("felix got %+v", dp.got)
	}
	if ex.Allowed || ex.Egress == nil || !ex.Egress.Allowed || ex.Ingress.Rule == nil ||
		ex.Ingress.Rule.Name != "deny" || ex.Ingress.Stage != "policy" || ex.Port != 80 {
		t.Errorf("explanation %+v ingress %+v", ex, ex.Ingress)
	}
	for _, tc := range []struct {
		req  localapi.ExplainRequest
		code int
	}{
		{localapi.ExplainRequest{From: "x/a", To: "x/nobody", Protocol: "TCP", Port: 80}, http.StatusNotFound},
		{localapi.ExplainRequest{From: "x/a", To: "x/off", Protocol: "TCP", Port: 80}, http.StatusServiceUnavailable},
		{localapi.ExplainRequest{To: "x/b"}, http.StatusBadRequest},
	} {
		_, err := c.ExplainPolicy(ctx, tc.req)
		var ae *localapi.APIError
		if !errors.As(err, &ae) || ae.Status != tc.code {
			t.Errorf("%+v: %v, want status %d", tc.req, err, tc.code)
		}
	}

	// A dataplane without the policy tools answers 501.
	c2 := serveLocalAPI(t, newTestAgent(t, &fakeDataplane{}))
	_, err = c2.ExplainPolicy(ctx, localapi.ExplainRequest{From: "x/a", To: "x/b", Protocol: "TCP", Port: 80})
	var ae *localapi.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusNotImplemented {
		t.Errorf("fake without explain: %v", err)
	}
}

func TestPolicyDropsStream(t *testing.T) {
	dp := &explainDataplane{drops: make(chan felix.DropEvent), subbed: make(chan struct{}), ended: make(chan struct{})}
	c := serveLocalAPI(t, newTestAgent(t, dp))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := make(chan localapi.DropEvent)
	errc := make(chan error, 1)
	go func() {
		errc <- c.PolicyDrops(ctx, func(ev localapi.DropEvent) error {
			got <- ev
			return nil
		})
	}()
	<-dp.subbed
	for i := range 3 {
		// Each event arrives on its own: the stream flushes per event.
		dp.drops <- felix.DropEvent{Endpoint: "x/b", Peer: "10.0.0.1", Protocol: "TCP", DstPort: uint16(80 + i),
			Reason: "policy", RuleID: 3, Rule: &felix.ExplainRule{ID: 3, Kind: "NetworkPolicy", Namespace: "x", Name: "deny"}}
		select {
		case ev := <-got:
			if ev.Endpoint != "x/b" || ev.DstPort != uint16(80+i) || ev.Rule == nil || ev.Rule.Name != "deny" {
				t.Errorf("event %+v", ev)
			}
		case <-ctx.Done():
			t.Fatalf("event %d not streamed", i)
		}
	}
	cancel() // the client goes away: the subscription ends
	select {
	case <-dp.ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the subscription did not end when the client went away")
	}
	if err := <-errc; err != nil && !strings.Contains(err.Error(), "context canceled") {
		t.Errorf("PolicyDrops: %v", err)
	}
}
