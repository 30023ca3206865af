package localapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// ErrNotRunning says nobody answers on the socket: the agent is not running on this
// node (or listens on another socket).
var ErrNotRunning = errors.New("tabby-node is not running on this node")

// Client reads the local API over a unix socket.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client of the agent listening on socket ("" means
// DefaultSocket). Every request is bounded by timeout (0 means 10s) and by its ctx.
func NewClient(socket string, timeout time.Duration) *Client {
	if socket == "" {
		socket = DefaultSocket
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableKeepAlives: true,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr, Timeout: timeout}}
}

// Socket is the path the client dials.
func (c *Client) Socket() string { return c.socket }

// Status calls GET /status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var s Status
	if err := c.get(ctx, PathStatus, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Endpoints calls GET /endpoints.
func (c *Client) Endpoints(ctx context.Context) ([]Endpoint, error) {
	var l EndpointList
	if err := c.get(ctx, PathEndpoints, &l); err != nil {
		return nil, err
	}
	return l.Endpoints, nil
}

// Routes calls GET /routes.
func (c *Client) Routes(ctx context.Context) ([]Route, error) {
	var l RouteList
	if err := c.get(ctx, PathRoutes, &l); err != nil {
		return nil, err
	}
	return l.Routes, nil
}

// BGPPeers calls GET /bgp/peers.
func (c *Client) BGPPeers(ctx context.Context) (*BGPStatus, error) {
	var s BGPStatus
	if err := c.get(ctx, PathBGPPeers, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Policy calls GET /policy.
func (c *Client) Policy(ctx context.Context) (*PolicyStatus, error) {
	var s PolicyStatus
	if err := c.get(ctx, PathPolicy, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

func (c *Client) get(ctx context.Context, path string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://tabby-node"+path, nil)
	if err != nil {
		return fmt.Errorf("build request %s: %w", path, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("%w: %w", ErrNotRunning, op)
		}
		return fmt.Errorf("tabby-node on %s: GET %s: %w", c.socket, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("tabby-node on %s: read GET %s: %w", c.socket, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e Error
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return fmt.Errorf("tabby-node on %s: GET %s: %s: %s", c.socket, path, resp.Status, e.Error)
		}
		return fmt.Errorf("tabby-node on %s: GET %s: %s", c.socket, path, resp.Status)
	}
	if err := json.Unmarshal(body, into); err != nil {
		return fmt.Errorf("tabby-node on %s: decode GET %s: %w", c.socket, path, err)
	}
	return nil
}
