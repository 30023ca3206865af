package router

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
)

// bird runs BIRD 2 in the foreground (-f); changes rewrite bird.conf and reload it
// (birdc configure), which leaves unchanged protocols alone.
type bird struct {
	r  *Router
	d  *daemon
	mu sync.Mutex // one reload at a time
}

func (b *bird) path(name string) string { return filepath.Join(b.r.dir, name) }

func (b *bird) start(ctx context.Context) error {
	if err := writeFile(b.path("bird.conf"), b.conf(b.r.Config())); err != nil {
		return err
	}
	var err error
	b.d, err = b.r.startDaemon("bird", "bird", "-f", "-c", b.path("bird.conf"), "-s", b.path("bird.ctl"), "-P", b.path("bird.pid"))
	if err != nil {
		return err
	}
	return waitReady(ctx, 30*time.Second, func() error {
		out, err := b.birdc(ctx, "show", "status")
		if err != nil {
			return err
		}
		if !strings.Contains(out, "Daemon is up and running") {
			return fmt.Errorf("not up: %s", strings.TrimSpace(out))
		}
		return nil
	}, b.d)
}

// protoName is the BGP protocol of the neighbor at a.
func protoName(a netip.Addr) string {
	return "peer_" + strings.ReplaceAll(a.String(), ".", "_")
}

func (b *bird) conf(cfg Config) string {
	var s strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&s, format+"\n", args...) }
	w("log stderr all;")
	w("router id %s;", cfg.RouterID)
	w("protocol device {}")
	if cfg.InstallKernel {
		w("protocol kernel tabby_kernel {")
		if cfg.Multipath {
			w("  merge paths on;")
		}
		w("  ipv4 { import none; export where source = RTS_BGP; };")
		w("}")
	}
	w("protocol static tabby_originate {")
	w("  ipv4;")
	for _, p := range cfg.Originate {
		w("  route %s blackhole;", p)
	}
	w("}")
	hold := int(cfg.HoldTime / time.Second)
	for _, n := range cfg.Neighbors {
		w("protocol bgp %s {", protoName(n.Addr))
		w("  local as %d;", cfg.AS)
		w("  neighbor %s as %d;", n.Addr, n.AS)
		if n.AS == cfg.AS {
			w("  direct;") // iBGP on the shared subnet: else its routes are unreachable
		}
		w("  connect retry time %d;", int(cfg.ConnectRetry/time.Second))
		w("  hold time %d;", hold)
		w("  keepalive time %d;", max(hold/3, 1))
		if n.Password != "" {
			w("  password \"%s\";", n.Password)
		}
		if n.Passive {
			w("  passive on;")
		}
		if cfg.GracefulRestart {
			w("  graceful restart on;")
			w("  graceful restart time %d;", int(cfg.RestartTime/time.Second))
		} else {
			w("  graceful restart off;")
			w("  long lived graceful restart off;")
		}
		w("  ipv4 {")
		w("    import all;")
		w("    export all;")
		if n.MaxPrefixes > 0 {
			w("    import limit %d action disable;", n.MaxPrefixes)
		}
		w("  };")
		w("}")
	}
	return s.String()
}

func (b *bird) birdc(ctx context.Context, args ...string) (string, error) {
	out, err := runCLI(ctx, "birdc", append([]string{"-s", b.path("bird.ctl")}, args...)...)
	// Drop the greeting ("BIRD 2.0.12 ready.").
	if i := strings.IndexByte(out, '\n'); i >= 0 && strings.HasPrefix(out, "BIRD ") {
		out = out[i+1:]
	}
	return out, err
}

func (b *bird) exec(ctx context.Context, cli string) (string, error) {
	return b.birdc(ctx, strings.Fields(cli)...)
}

// reconfigure writes the current config and has BIRD load it.
func (b *bird) reconfigure(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := writeFile(b.path("bird.conf"), b.conf(b.r.Config())); err != nil {
		return err
	}
	out, err := b.birdc(ctx, "configure")
	if err != nil {
		return err
	}
	if !strings.Contains(out, "Reconfigured") && !strings.Contains(out, "Reconfiguration in progress") {
		return fmt.Errorf("birdc configure: %s", strings.TrimSpace(out))
	}
	return nil
}

func (b *bird) addNeighbor(ctx context.Context, _ Neighbor) error    { return b.reconfigure(ctx) }
func (b *bird) removeNeighbor(ctx context.Context, _ Neighbor) error { return b.reconfigure(ctx) }
func (b *bird) announce(ctx context.Context, _ []netip.Prefix) error { return b.reconfigure(ctx) }
func (b *bird) withdraw(ctx context.Context, _ []netip.Prefix) error { return b.reconfigure(ctx) }
func (b *bird) installedProto() netlink.RouteProtocol                { return protoBIRD }

// cleanup removes the routes a killed BIRD left in the kernel.
func (b *bird) cleanup() error {
	if !b.r.cfg.InstallKernel || b.r.netnsGone() {
		return nil
	}
	h, err := b.r.netlink()
	if err != nil {
		return err
	}
	return flushProto(h, protoBIRD)
}

// birdProto is one BGP protocol of `show protocols all`.
type birdProto struct {
	name, state string // state: the protocol's (up, start, down, ...)
	bgpState    string
	addr        netip.Addr
	as          uint32
	lastErr     string
	imported    int
}

// protocols parses `show protocols all`, by protocol name (BGP ones only).
func (b *bird) protocols(ctx context.Context) (map[string]birdProto, error) {
	out, err := b.birdc(ctx, "show", "protocols", "all")
	if err != nil {
		return nil, err
	}
	ps := map[string]birdProto{}
	var cur *birdProto
	flush := func() {
		if cur != nil {
			ps[cur.name] = *cur
		}
		cur = nil
	}
	for _, l := range strings.Split(out, "\n") {
		if l == "" {
			continue
		}
		if l[0] != ' ' && l[0] != '\t' {
			flush()
			f := strings.Fields(l)
			if len(f) >= 4 && f[1] == "BGP" {
				cur = &birdProto{name: f[0], state: f[3]}
			}
			continue
		}
		if cur == nil {
			continue
		}
		key, val, ok := strings.Cut(strings.TrimSpace(l), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "BGP state":
			cur.bgpState = val
		case "Neighbor address":
			cur.addr, _ = netip.ParseAddr(val)
		case "Neighbor AS":
			n, _ := strconv.ParseUint(val, 10, 32)
			cur.as = uint32(n)
		case "Last error":
			cur.lastErr = val
		case "Routes":
			// "3 imported, 1 filtered, 2 exported, 3 preferred"
			f := strings.Fields(val)
			if len(f) >= 2 && strings.HasPrefix(f[1], "imported") {
				cur.imported, _ = strconv.Atoi(f[0])
			}
		}
	}
	flush()
	return ps, nil
}

func (b *bird) peers(ctx context.Context) ([]Peer, error) {
	ps, err := b.protocols(ctx)
	if err != nil {
		return nil, err
	}
	var out []Peer
	for _, p := range ps {
		peer := Peer{Addr: p.addr, AS: p.as, PrefixesReceived: p.imported, State: normState(p.bgpState)}
		if p.state == "down" || p.bgpState == "" {
			peer.State = "Idle"
		}
		if !peer.Established() {
			peer.Info = p.lastErr
			if p.state == "down" && peer.Info == "" {
				peer.Info = "protocol down"
			}
		}
		out = append(out, peer)
	}
	return out, nil
}

// birdRoute is one route of `show route all`.
type birdRoute struct {
	proto    string
	primary  bool
	pref     string
	bgp      bool
	nexthops []netip.Addr
	asPath   []uint32
}

func (b *bird) routes(ctx context.Context) ([]Route, error) {
	protos, err := b.protocols(ctx)
	if err != nil {
		return nil, err
	}
	out, err := b.birdc(ctx, "show", "route", "all")
	if err != nil {
		return nil, err
	}
	byPrefix := map[netip.Prefix][]*birdRoute{}
	var order []netip.Prefix
	var pfx netip.Prefix
	var cur *birdRoute
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "Table ") {
			continue
		}
		if l[0] == '\t' {
			if cur == nil {
				continue
			}
			t := strings.TrimSpace(l)
			switch {
			case strings.HasPrefix(t, "via "):
				if f := strings.Fields(t); len(f) >= 2 {
					if a, err := netip.ParseAddr(f[1]); err == nil {
						cur.nexthops = appendUnique(cur.nexthops, a)
					}
				}
			case strings.HasPrefix(t, "Type: BGP"):
				cur.bgp = true
			case strings.HasPrefix(t, "BGP.as_path:"):
				cur.asPath = parseASPath(strings.TrimPrefix(t, "BGP.as_path:"))
			}
			continue
		}
		// A route: "PREFIX type [proto time] * (pref) [...]", or without the prefix
		// (indented with blanks) for another route of the same prefix.
		f := strings.Fields(l)
		if l[0] != ' ' {
			p, err := netip.ParsePrefix(f[0])
			if err != nil {
				return nil, fmt.Errorf("route line %q: %w", l, err)
			}
			pfx, f = p, f[1:]
		}
		cur = &birdRoute{}
		for i, fld := range f {
			switch {
			case strings.HasPrefix(fld, "[") && i <= 1 && cur.proto == "":
				cur.proto = strings.TrimPrefix(fld, "[")
			case fld == "*":
				cur.primary = true
			case strings.HasPrefix(fld, "(") && cur.pref == "":
				cur.pref = fld
			}
		}
		if _, ok := byPrefix[pfx]; !ok {
			order = append(order, pfx)
		}
		byPrefix[pfx] = append(byPrefix[pfx], cur)
	}
	var rs []Route
	for _, p := range order {
		var best *birdRoute
		for _, br := range byPrefix[p] {
			if br.primary {
				best = br
			}
		}
		if best == nil || !best.bgp {
			continue // originated here, or no usable route
		}
		rt := Route{Prefix: p, NextHops: append([]netip.Addr(nil), best.nexthops...), ASPath: best.asPath}
		if b.r.cfg.Multipath {
			// What BIRD merges into the kernel's multipath route: BGP routes as
			// preferred as the best with as long an AS path.
			for _, br := range byPrefix[p] {
				if br != best && br.bgp && br.pref == best.pref && len(br.asPath) == len(best.asPath) {
					for _, a := range br.nexthops {
						rt.NextHops = appendUnique(rt.NextHops, a)
					}
				}
			}
		}
		// BIRD does not show stale routes as such; it keeps a down session's routes
		// only while the peer restarts gracefully.
		if pr, ok := protos[best.proto]; ok && pr.state != "up" {
			rt.Stale = true
		}
		rs = append(rs, rt)
	}
	return rs, nil
}
