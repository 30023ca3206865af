package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"
)

// gobgp runs gobgpd with its API on a unix socket in the router's directory (the
// gobgp CLI reaches it from outside the namespace); neighbor changes rewrite the
// config and reload it (SIGHUP), prefixes go through the CLI.
type gobgp struct {
	r  *Router
	d  *daemon
	mu sync.Mutex // one reload at a time
}

func (g *gobgp) path(name string) string { return filepath.Join(g.r.dir, name) }

func (g *gobgp) target() string { return "unix://" + g.path("api.sock") }

func (g *gobgp) start(ctx context.Context) error {
	cfg := g.r.Config()
	if err := writeFile(g.path("gobgpd.toml"), g.conf(cfg)); err != nil {
		return err
	}
	var err error
	g.d, err = g.r.startDaemon("gobgpd", "gobgpd", "-f", g.path("gobgpd.toml"), "-p",
		"--api-hosts", g.target(), "--pprof-disable")
	if err != nil {
		return err
	}
	err = waitReady(ctx, 30*time.Second, func() error {
		out, err := g.gobgp(ctx, "global", "-j")
		if err != nil {
			return err
		}
		if !strings.Contains(out, fmt.Sprintf(`"asn":%d`, cfg.AS)) {
			return fmt.Errorf("global not configured yet: %s", strings.TrimSpace(out))
		}
		return nil
	}, g.d)
	if err != nil {
		return err
	}
	return g.ribChange(ctx, "add", cfg.Originate)
}

func (g *gobgp) conf(cfg Config) string {
	var s strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&s, format+"\n", args...) }
	w("[global.config]")
	w("  as = %d", cfg.AS)
	w("  router-id = %q", cfg.RouterID.String())
	w("[global.apply-policy.config]")
	w("  default-import-policy = \"accept-route\"")
	w("  default-export-policy = \"accept-route\"")
	if cfg.Multipath {
		w("[global.use-multiple-paths.config]")
		w("  enabled = true")
	}
	hold := int(cfg.HoldTime / time.Second)
	retry := int(cfg.ConnectRetry / time.Second)
	for _, n := range cfg.Neighbors {
		w("[[neighbors]]")
		w("  [neighbors.config]")
		w("    neighbor-address = %q", n.Addr.String())
		w("    peer-as = %d", n.AS)
		if n.Password != "" {
			w("    auth-password = %q", n.Password)
		}
		w("  [neighbors.timers.config]")
		w("    connect-retry = %d", retry)
		w("    hold-time = %d", hold)
		w("    keepalive-interval = %d", max(hold/3, 1))
		// The default, 30 s, refuses a peer for half a minute after a reset.
		w("    idle-hold-time-after-reset = %d", retry)
		if n.Passive {
			w("  [neighbors.transport.config]")
			w("    passive-mode = true")
		}
		if cfg.GracefulRestart {
			w("  [neighbors.graceful-restart.config]")
			w("    enabled = true")
			w("    restart-time = %d", int(cfg.RestartTime/time.Second))
		}
		w("  [[neighbors.afi-safis]]")
		w("    [neighbors.afi-safis.config]")
		w("      afi-safi-name = \"ipv4-unicast\"")
		if n.MaxPrefixes > 0 {
			w("    [neighbors.afi-safis.prefix-limit.config]")
			w("      max-prefixes = %d", n.MaxPrefixes)
		}
		if cfg.GracefulRestart {
			w("    [neighbors.afi-safis.mp-graceful-restart.config]")
			w("      enabled = true")
		}
	}
	return s.String()
}

func (g *gobgp) gobgp(ctx context.Context, args ...string) (string, error) {
	return runCLI(ctx, "gobgp", append([]string{"--target", g.target()}, args...)...)
}

func (g *gobgp) exec(ctx context.Context, cli string) (string, error) {
	return g.gobgp(ctx, strings.Fields(cli)...)
}

// ribChange adds or deletes prefixes in the global RIB, a few CLI calls at a time.
func (g *gobgp) ribChange(ctx context.Context, op string, ps []netip.Prefix) error {
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(8)
	for _, p := range ps {
		eg.Go(func() error {
			_, err := g.gobgp(ctx, "global", "rib", op, "-a", "ipv4", p.String())
			return err
		})
	}
	return eg.Wait()
}

func (g *gobgp) announce(ctx context.Context, ps []netip.Prefix) error {
	return g.ribChange(ctx, "add", ps)
}

func (g *gobgp) withdraw(ctx context.Context, ps []netip.Prefix) error {
	return g.ribChange(ctx, "del", ps)
}

// reload writes the current config, has gobgpd reload it, and waits until the
// neighbor at addr is there (present) or gone.
func (g *gobgp) reload(ctx context.Context, addr netip.Addr, present bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if err := writeFile(g.path("gobgpd.toml"), g.conf(g.r.Config())); err != nil {
		return err
	}
	if err := g.d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("reload gobgpd: %w", err)
	}
	return waitReady(ctx, 10*time.Second, func() error {
		ps, err := g.peers(ctx)
		if err != nil {
			return err
		}
		for _, p := range ps {
			if p.Addr == addr {
				if present {
					return nil
				}
				return errors.New("neighbor still there")
			}
		}
		if present {
			return errors.New("neighbor not there yet")
		}
		return nil
	}, g.d)
}

func (g *gobgp) addNeighbor(ctx context.Context, n Neighbor) error {
	return g.reload(ctx, n.Addr, true)
}

func (g *gobgp) removeNeighbor(ctx context.Context, n Neighbor) error {
	return g.reload(ctx, n.Addr, false)
}

func (g *gobgp) installedProto() netlink.RouteProtocol { return 0 }

func (g *gobgp) cleanup() error { return nil }

// gobgp's JSON (its API messages through encoding/json).

type gobgpPeer struct {
	Conf struct {
		NeighborAddress string `json:"neighbor_address"`
		PeerASN         uint32 `json:"peer_asn"`
	} `json:"conf"`
	State struct {
		SessionState int `json:"session_state"`
		AdminState   int `json:"admin_state"`
	} `json:"state"`
	AfiSafis []struct {
		State struct {
			Accepted int `json:"accepted"`
		} `json:"state"`
	} `json:"afi_safis"`
}

var gobgpStates = []string{"Unknown", "Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established"}

func (g *gobgp) peers(ctx context.Context) ([]Peer, error) {
	out, err := g.gobgp(ctx, "neighbor", "-j")
	if err != nil {
		return nil, err
	}
	var ns []gobgpPeer
	if err := json.Unmarshal([]byte(out), &ns); err != nil {
		return nil, fmt.Errorf("parse gobgp neighbor -j: %w", err)
	}
	var ps []Peer
	for _, n := range ns {
		addr, err := netip.ParseAddr(n.Conf.NeighborAddress)
		if err != nil {
			continue
		}
		p := Peer{Addr: addr, AS: n.Conf.PeerASN, State: "Unknown"}
		if s := n.State.SessionState; s >= 0 && s < len(gobgpStates) {
			p.State = gobgpStates[s]
		}
		for _, af := range n.AfiSafis {
			p.PrefixesReceived += af.State.Accepted
		}
		switch n.State.AdminState {
		case 1:
			p.Info = "administratively down"
		case 2:
			p.Info = "prefix limit exceeded"
		}
		ps = append(ps, p)
	}
	return ps, nil
}

type gobgpPath struct {
	Best       bool   `json:"best"`
	Stale      bool   `json:"stale"`
	NeighborIP string `json:"neighbor-ip"`
	Attrs      []struct {
		Type    int    `json:"type"`
		Nexthop string `json:"nexthop"`
		ASPaths []struct {
			ASNs []uint32 `json:"asns"`
		} `json:"as_paths"`
	} `json:"attrs"`
}

func (p gobgpPath) nexthop() (netip.Addr, bool) {
	for _, a := range p.Attrs {
		if a.Type == 3 || (a.Type == 14 && a.Nexthop != "") {
			if nh, err := netip.ParseAddr(a.Nexthop); err == nil {
				return nh, true
			}
		}
	}
	return netip.Addr{}, false
}

func (p gobgpPath) asPath() []uint32 {
	var as []uint32
	for _, a := range p.Attrs {
		if a.Type == 2 {
			for _, seg := range a.ASPaths {
				as = append(as, seg.ASNs...)
			}
		}
	}
	return as
}

func (g *gobgp) routes(ctx context.Context) ([]Route, error) {
	out, err := g.gobgp(ctx, "global", "rib", "-a", "ipv4", "-j")
	if err != nil {
		return nil, err
	}
	var rib map[string][]gobgpPath
	if strings.TrimSpace(out) != "" {
		if err := json.Unmarshal([]byte(out), &rib); err != nil {
			return nil, fmt.Errorf("parse gobgp global rib -j: %w", err)
		}
	}
	var rs []Route
	for pfx, paths := range rib {
		p, err := netip.ParsePrefix(pfx)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", pfx, err)
		}
		var best *gobgpPath
		for i := range paths {
			if paths[i].Best {
				best = &paths[i]
			}
		}
		if best == nil || best.NeighborIP == "" {
			continue // originated here
		}
		rt := Route{Prefix: p, ASPath: best.asPath(), Stale: best.Stale}
		if nh, ok := best.nexthop(); ok {
			rt.NextHops = append(rt.NextHops, nh)
		}
		if g.r.cfg.Multipath {
			for i := range paths {
				o := &paths[i]
				if o == best || o.NeighborIP == "" || len(o.asPath()) != len(rt.ASPath) {
					continue
				}
				if nh, ok := o.nexthop(); ok {
					rt.NextHops = appendUnique(rt.NextHops, nh)
				}
			}
		}
		rs = append(rs, rt)
	}
	return rs, nil
}
