package ctl_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tabbynet/tabby/agent/localapi"
)

// explainAgent answers POST /policy/explain with answer(req) and records the requests.
func explainAgent(t *testing.T, got *[]localapi.ExplainRequest, answer func(localapi.ExplainRequest) (int, any)) string {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+localapi.PathPolicyExplain, func(w http.ResponseWriter, r *http.Request) {
		var req localapi.ExplainRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			t.Error(err)
		}
		*got = append(*got, req)
		code, v := answer(req)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(v)
	})
	return fakeAgent(t, mux)
}

func deniedByRule() localapi.Explanation {
	return localapi.Explanation{From: "x/wep-a", FromIP: "10.0.0.1", To: "x/wep-c", ToIP: "10.0.0.3", Protocol: "TCP", Port: 81,
		Egress: &localapi.ExplainStep{Direction: "egress", Endpoint: "x/wep-a", Interface: "tea", Allowed: true, Stage: "default",
			Reason: "default allow: no policy selects the endpoint"},
		Ingress: localapi.ExplainStep{Direction: "ingress", Endpoint: "x/wep-c", Interface: "tec", Stage: "policy", RuleID: 4,
			Rule:   &localapi.PolicyRule{ID: 4, Kind: "NetworkPolicy", Namespace: "x", Name: "c-ingress", Direction: "ingress", Index: 0, Action: "Deny"},
			Reason: "deny: rule matched"}}
}

func TestPolicyExplain(t *testing.T) {
	var got []localapi.ExplainRequest
	sock := explainAgent(t, &got, func(req localapi.ExplainRequest) (int, any) {
		switch req.To {
		case "x/wep-c":
			return 200, deniedByRule()
		case "x/deny-all":
			return 200, localapi.Explanation{FromIP: "192.0.2.7", To: "x/deny-all", ToIP: "10.0.0.9", Protocol: "UDP", Port: 53,
				Ingress: localapi.ExplainStep{Direction: "ingress", Endpoint: "x/deny-all", Stage: "default",
					SelectedBy: []string{"K8sNetworkPolicy x/deny-all"}, Reason: "default deny: endpoint selected, no rule matched"},
				Notes: []string{"the source is no endpoint: only the destination's ingress applies"}}
		case "default/b":
			return 200, localapi.Explanation{Allowed: true, FromIP: "10.0.0.1", From: "default/a", To: "default/b", ToIP: "10.0.0.2",
				Protocol: "ICMP", Ingress: localapi.ExplainStep{Direction: "ingress", Endpoint: "default/b", Allowed: true,
					Stage: "default", Reason: "default allow: no policy selects the endpoint"}}
		}
		return 404, localapi.Error{Error: "explain: endpoint " + req.To + ": unknown endpoint"}
	})

	r := nodeCtl(t, "policy", "explain", "--socket", sock, "--from", "x/a", "--to", "x/wep-c:81/tcp")
	expectCode(t, r, 0)
	expectContains(t, "explain", r.stdout, "DENIED by NetworkPolicy x/c-ingress ingress rule 0 (Deny)\n",
		"From:     x/wep-a (10.0.0.1)", "To:       x/wep-c (10.0.0.3) TCP/81",
		"Egress:   allowed at x/wep-a (tea), stage default: default allow: no policy selects the endpoint",
		"Ingress:  denied at x/wep-c (tec), stage policy: NetworkPolicy x/c-ingress ingress rule 0 (Deny)")

	r = nodeCtl(t, "policy", "explain", "--socket", sock, "--from", "192.0.2.7", "--to", "x/deny-all:53/UDP")
	expectCode(t, r, 0)
	expectContains(t, "explain", r.stdout,
		"DENIED by K8sNetworkPolicy x/deny-all ingress (default deny: endpoint selected, no rule matched)\n",
		"Egress:   not evaluated on this node", "Note:     the source is no endpoint")

	// Namespace from -n, ICMP, yaml.
	r = nodeCtl(t, "policy", "explain", "--socket", sock, "-n", "default", "--from", "a", "--to", "b:icmp", "-o", "yaml")
	expectCode(t, r, 0)
	expectContains(t, "yaml", r.stdout, "allowed: true", "protocol: ICMP")

	r = nodeCtl(t, "policy", "explain", "--socket", sock, "--from", "x/a", "--to", "x/wep-c:81", "-o", "json")
	expectCode(t, r, 0)
	var ex localapi.Explanation
	if err := json.Unmarshal([]byte(r.stdout), &ex); err != nil {
		t.Fatal(err)
	}
	if ex.Ingress.Rule == nil || ex.Ingress.Rule.Name != "c-ingress" {
		t.Errorf("json: %+v", ex)
	}

	want := []localapi.ExplainRequest{
		{From: "x/a", To: "x/wep-c", Protocol: "TCP", Port: 81},
		{From: "192.0.2.7", To: "x/deny-all", Protocol: "UDP", Port: 53},
		{From: "default/a", To: "default/b", Protocol: "ICMP"},
		{From: "x/a", To: "x/wep-c", Protocol: "TCP", Port: 81},
	}
	if len(got) != len(want) {
		t.Fatalf("requests %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d: %+v, want %+v", i, got[i], want[i])
		}
	}

	// The agent's error: exit 1 with its message.
	r = nodeCtl(t, "policy", "explain", "--socket", sock, "--from", "x/a", "--to", "x/nobody:80/tcp")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "unknown endpoint")

	// Usage errors: exit 2, no request.
	n := len(got)
	for _, args := range [][]string{
		{"--from", "x/a"},
		{"--to", "x/b:80"},
		{"--from", "x/a", "--to", "x/b"},
		{"--from", "x/a", "--to", "x/b:http"},
		{"--from", "x/a", "--to", "x/b:80/gre"},
		{"--from", "x/a", "--to", "x/b:80", "-o", "wide"},
	} {
		r = nodeCtl(t, append([]string{"policy", "explain", "--socket", sock}, args...)...)
		expectCode(t, r, 2)
	}
	if len(got) != n {
		t.Errorf("usage errors reached the agent: %+v", got[n:])
	}

	// No agent: exit 1.
	r = nodeCtl(t, "policy", "explain", "--socket", sock+".none", "--from", "x/a", "--to", "x/b:80")
	expectCode(t, r, 1)
	expectContains(t, "stderr", r.stderr, "not running")
}

func TestPolicyDrops(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	events := []localapi.DropEvent{
		{Time: at, Endpoint: "x/wep-c", Interface: "tec", Direction: "ingress", Peer: "10.0.0.1", PeerEndpoint: "x/wep-a",
			Src: "10.0.0.1", Dst: "10.0.0.3", Protocol: "TCP", SrcPort: 40000, DstPort: 81, Reason: "policy", RuleID: 4,
			Rule: &localapi.PolicyRule{ID: 4, Kind: "NetworkPolicy", Namespace: "x", Name: "c-ingress", Direction: "ingress", Action: "Deny"}},
		{Time: at, Endpoint: "x/wep-b", Interface: "teb", Direction: "ingress", Peer: "192.0.2.7", Src: "192.0.2.7",
			Dst: "10.0.0.2", Protocol: "UDP", SrcPort: 5000, DstPort: 53, Reason: "default-deny"},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+localapi.PathPolicyDrops, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for _, ev := range events {
			_ = enc.Encode(ev)
			w.(http.Flusher).Flush()
		}
		<-r.Context().Done() // a live stream: the client ends it
	})
	sock := fakeAgent(t, mux)

	r := nodeCtl(t, "policy", "drops", "--socket", sock, "--count", "2")
	expectCode(t, r, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and 2 lines:\n%s", r.stdout)
	}
	expectContains(t, "drops", lines[1], "x/wep-c", "ingress", "x/wep-a (10.0.0.1)", "TCP/81", "policy",
		"NetworkPolicy x/c-ingress ingress rule 0 (Deny)")
	expectContains(t, "drops", lines[2], "x/wep-b", "192.0.2.7", "UDP/53", "default-deny")

	r = nodeCtl(t, "policy", "drops", "--socket", sock, "--count", "1", "-o", "json")
	expectCode(t, r, 0)
	var ev localapi.DropEvent
	if err := json.Unmarshal([]byte(strings.TrimSpace(r.stdout)), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.Endpoint != "x/wep-c" || ev.DstPort != 81 || ev.Rule == nil || ev.Rule.Name != "c-ingress" {
		t.Errorf("json event %+v", ev)
	}

	r = nodeCtl(t, "policy", "drops", "--socket", sock, "-o", "yaml")
	expectCode(t, r, 2)
	r = nodeCtl(t, "policy", "drops", "--socket", sock+".none")
	expectCode(t, r, 1)
}
