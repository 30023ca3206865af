package cni

import (
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
	"go.uber.org/zap/zaptest"
)

// fakeAgent serves GET /status on a unix socket from status(n), n counting calls.
func fakeAgent(t *testing.T, status func(n int) localapi.Status) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != localapi.PathStatus {
			http.NotFound(w, r)
			return
		}
		_ = json.NewEncoder(w).Encode(status(int(calls.Add(1))))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sock
}

func waitCall(t *testing.T, sock string, timeout time.Duration) *call {
	return &call{conf: &NetConf{AgentSocket: sock, PolicySetupTimeout: &Duration{timeout}}, log: zaptest.NewLogger(t)}
}

func endpointStatus(iface, ip string, enforced bool, msg string) localapi.Status {
	return localapi.Status{Policy: &localapi.PolicyStatus{Enabled: true}, Felix: localapi.FelixStatus{
		Endpoints: []localapi.Endpoint{{Namespace: "ns", Name: "wep", Interface: iface, IPs: []string{ip},
			Programmed: true, PolicyEnforced: enforced, PolicyMessage: msg}}}}
}

func TestWaitPolicy(t *testing.T) {
	ip := netip.MustParseAddr("10.65.0.7")
	t.Run("enforced after a while", func(t *testing.T) {
		sock := fakeAgent(t, func(n int) localapi.Status {
			switch {
			case n < 3:
				return localapi.Status{Policy: &localapi.PolicyStatus{Enabled: true}} // not known yet
			case n < 5: // an earlier pod of the same name, enforced
				return endpointStatus("caliold", "10.65.0.9/32", true, "")
			case n < 7:
				return endpointStatus("calinew", "10.65.0.7/32", false, "programs not attached")
			}
			return endpointStatus("calinew", "10.65.0.7", true, "") // as felix reports it
		})
		c := waitCall(t, sock, 10*time.Second)
		if err := c.waitPolicy("ns", "wep", "calinew", ip); err != nil {
			t.Fatalf("waitPolicy: %v", err)
		}
	})
	t.Run("policy off", func(t *testing.T) {
		sock := fakeAgent(t, func(int) localapi.Status {
			return localapi.Status{Policy: &localapi.PolicyStatus{Enabled: false}}
		})
		if err := waitCall(t, sock, 10*time.Second).waitPolicy("ns", "wep", "calinew", ip); err != nil {
			t.Fatalf("waitPolicy with policy off: %v", err)
		}
	})
	t.Run("not enforced in time", func(t *testing.T) {
		sock := fakeAgent(t, func(int) localapi.Status {
			return endpointStatus("calinew", "10.65.0.7/32", false, "interface calinew not found")
		})
		err := waitCall(t, sock, 200*time.Millisecond).waitPolicy("ns", "wep", "calinew", ip)
		if err == nil || CNIError(err).Code != CodeDataplane || !strings.Contains(err.Error(), "interface calinew not found") {
			t.Fatalf("waitPolicy = %v; want code %d naming the agent's reason", err, CodeDataplane)
		}
	})
	t.Run("agent not running", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "nobody.sock")
		err := waitCall(t, sock, 200*time.Millisecond).waitPolicy("ns", "wep", "calinew", ip)
		if err == nil || CNIError(err).Code != CodeTryAgainLater {
			t.Fatalf("waitPolicy = %v; want code %d", err, CodeTryAgainLater)
		}
	})
	t.Run("no wait", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "nobody.sock")
		if err := waitCall(t, sock, 0).waitPolicy("ns", "wep", "calinew", ip); err != nil {
			t.Fatalf("policy_setup_timeout 0: %v", err)
		}
	})
}
