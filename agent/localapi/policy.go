package localapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Paths of the policy tools: POST PathPolicyExplain with an ExplainRequest answers an
// Explanation; GET PathPolicyDrops streams DropEvents as NDJSON (one JSON object a
// line, flushed per event) until the client goes away.
const (
	PathPolicyExplain = "/policy/explain"
	PathPolicyDrops   = "/policy/drops"
)

// ExplainRequest asks what the node's datapath does with a new flow.
type ExplainRequest struct {
	// From is an endpoint "namespace/name" (WorkloadEndpoint or pod name) or an IPv4
	// address.
	From string `json:"from"`
	// To is an endpoint of this node, "namespace/name".
	To string `json:"to"`
	// Protocol is TCP, UDP, SCTP or ICMP; Port the destination port (none for ICMP).
	Protocol string `json:"protocol"`
	Port     uint16 `json:"port,omitempty"`
}

// PolicyRule names the policy rule behind a datapath rule id.
type PolicyRule struct {
	// ID is the datapath's rule id (0 is reserved for endpoint defaults).
	ID uint32 `json:"id"`
	// Kind is K8sNetworkPolicy, NetworkPolicy or GlobalNetworkPolicy.
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// Direction (ingress or egress) and Index locate the rule in the policy.
	Direction string `json:"direction"`
	Index     int    `json:"index"`
	Action    string `json:"action"`
}

// ExplainStep is what one program (a direction at one endpoint) decided.
type ExplainStep struct {
	// Direction is ingress (at the destination) or egress (at the source).
	Direction string `json:"direction"`
	Endpoint  string `json:"endpoint"`
	Interface string `json:"interface,omitempty"`
	Allowed   bool   `json:"allowed"`
	// Stage is the program's deciding step: policy (a rule), default (no rule matched:
	// the endpoint's default), spoof, no-endpoint, malformed or pass-through.
	Stage     string      `json:"stage"`
	RuleID    uint32      `json:"ruleID"`
	PeerClass uint32      `json:"peerClass"`
	Rule      *PolicyRule `json:"rule,omitempty"`
	// SelectedBy names the policies selecting the endpoint in this direction
	// ("Kind namespace/name"), for a default deny.
	SelectedBy []string `json:"selectedBy,omitempty"`
	Reason     string   `json:"reason"`
}

// Explanation is the answer of POST /policy/explain.
type Explanation struct {
	Allowed bool `json:"allowed"`
	// From is the source endpoint ("" for an address that is no endpoint).
	From     string `json:"from,omitempty"`
	FromIP   string `json:"fromIP"`
	To       string `json:"to"`
	ToIP     string `json:"toIP"`
	Protocol string `json:"protocol"`
	Port     uint16 `json:"port"`
	// Egress is absent when the source is not an endpoint of this node.
	Egress  *ExplainStep `json:"egress,omitempty"`
	Ingress ExplainStep  `json:"ingress"`
	Notes   []string     `json:"notes,omitempty"`
}

// DropEvent is one line of GET /policy/drops: a packet the datapath dropped, or (Log)
// a new flow a Log rule matched (reason "log"; the flow may have been allowed).
type DropEvent struct {
	Time time.Time `json:"time"`
	// Endpoint is the local endpoint whose program dropped it, on Interface.
	Endpoint  string `json:"endpoint"`
	Interface string `json:"interface"`
	Direction string `json:"direction"`
	// Peer is the other side's address; PeerEndpoint its endpoint when known.
	Peer         string      `json:"peer"`
	PeerEndpoint string      `json:"peerEndpoint,omitempty"`
	Src          string      `json:"src"`
	Dst          string      `json:"dst"`
	Protocol     string      `json:"protocol"`
	SrcPort      uint16      `json:"srcPort"`
	DstPort      uint16      `json:"dstPort"`
	Reason       string      `json:"reason"`
	RuleID       uint32      `json:"ruleID"`
	Rule         *PolicyRule `json:"rule,omitempty"`
	Log          bool        `json:"log,omitempty"`
}

// ExplainPolicy calls POST /policy/explain.
func (c *Client) ExplainPolicy(ctx context.Context, req ExplainRequest) (*Explanation, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode explain request: %w", err)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://tabby-node"+PathPolicyExplain, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request %s: %w", PathPolicyExplain, err)
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := c.do(c.hc, hreq)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var ex Explanation
	if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&ex); err != nil {
		return nil, fmt.Errorf("tabby-node on %s: decode POST %s: %w", c.socket, PathPolicyExplain, err)
	}
	return &ex, nil
}

// PolicyDrops calls GET /policy/drops and calls fn for every event until ctx ends
// (then it returns nil), fn returns an error (returned) or the agent closes the stream.
// The stream is not bounded by the client's timeout.
func (c *Client) PolicyDrops(ctx context.Context, fn func(DropEvent) error) error {
	hreq, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://tabby-node"+PathPolicyDrops, nil)
	if err != nil {
		return fmt.Errorf("build request %s: %w", PathPolicyDrops, err)
	}
	resp, err := c.do(&http.Client{Transport: c.hc.Transport}, hreq)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev DropEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("tabby-node on %s: decode drop event: %w", c.socket, err)
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("tabby-node on %s: read GET %s: %w", c.socket, PathPolicyDrops, err)
	}
	return fmt.Errorf("tabby-node on %s: GET %s: the agent closed the stream", c.socket, PathPolicyDrops)
}

// do sends req with hc and turns a non-200 answer into an error (its body's Error).
func (c *Client) do(hc *http.Client, req *http.Request) (*http.Response, error) {
	what := req.Method + " " + req.URL.Path
	resp, err := hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, fmt.Errorf("%w: %w", ErrNotRunning, op)
		}
		return nil, fmt.Errorf("tabby-node on %s: %s: %w", c.socket, what, err)
	}
	if resp.StatusCode == http.StatusOK {
		return resp, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	var e Error
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return nil, &APIError{Status: resp.StatusCode, Msg: fmt.Sprintf("tabby-node on %s: %s: %s: %s", c.socket, what, resp.Status, e.Error)}
	}
	return nil, &APIError{Status: resp.StatusCode, Msg: fmt.Sprintf("tabby-node on %s: %s: %s", c.socket, what, resp.Status)}
}

// APIError is an answer other than 200 OK from the agent.
type APIError struct {
	Status int // the HTTP status code
	Msg    string
}

func (e *APIError) Error() string { return e.Msg }
