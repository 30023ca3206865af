package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
)

// frr runs zebra and bgpd as root (-u root -g frrvty): no chown of the directory, and
// the daemons keep their parent-death signal, which a change of user clears.
type frr struct {
	r           *Router
	zebra, bgpd *daemon
}

func (f *frr) path(name string) string { return filepath.Join(f.r.dir, name) }

func (f *frr) daemonArgs(name string) []string {
	return []string{"-u", "root", "-g", "frrvty", "-f", f.path(name + ".conf"), "-i", f.path(name + ".pid"),
		"--vty_socket", f.r.dir, "-z", f.path("zserv.api"), "-P", "0", "--log", "stdout", "--log-level", "informational"}
}

func (f *frr) start(ctx context.Context) error {
	cfg := f.r.cfg
	if err := writeFile(f.path("zebra.conf"), "hostname "+cfg.Netns+"\n"); err != nil {
		return err
	}
	if err := writeFile(f.path("bgpd.conf"), f.bgpdConf()); err != nil {
		return err
	}
	if len(cfg.Originate) > 0 {
		// Before zebra starts: it reads them in one dump.
		h, err := f.r.netlink()
		if err != nil {
			return err
		}
		if err := addBlackholes(h, cfg.Originate); err != nil {
			return err
		}
	}
	var err error
	f.zebra, err = f.r.startDaemon("zebra", filepath.Join(frrDir, "zebra"), append(f.daemonArgs("zebra"), "-s", "90000000")...)
	if err != nil {
		return err
	}
	err = waitReady(ctx, 20*time.Second, func() error {
		for _, s := range []string{"zserv.api", "zebra.vty"} {
			if _, err := os.Stat(f.path(s)); err != nil {
				return err
			}
		}
		return nil
	}, f.zebra)
	if err != nil {
		return fmt.Errorf("zebra: %w", err)
	}
	args := f.daemonArgs("bgpd")
	if !cfg.InstallKernel {
		args = append(args, "--no_kernel")
	}
	if f.bgpd, err = f.r.startDaemon("bgpd", filepath.Join(frrDir, "bgpd"), args...); err != nil {
		return err
	}
	err = waitReady(ctx, 30*time.Second, func() error {
		out, err := f.vtysh(ctx, "show bgp vrfs json")
		if err != nil {
			return err
		}
		if !strings.Contains(out, fmt.Sprintf(`"routerId":"%s"`, cfg.RouterID)) {
			return errors.New("bgp instance not configured yet")
		}
		return nil
	}, f.zebra, f.bgpd)
	if err != nil {
		return fmt.Errorf("bgpd: %w", err)
	}
	return f.configErrors()
}

// configErrors reports the config lines the daemons rejected (they go on without).
func (f *frr) configErrors() error {
	var bad []string
	for _, d := range []*daemon{f.zebra, f.bgpd} {
		for _, l := range strings.Split(tail(d.log, 1<<20), "\n") {
			if strings.Contains(l, "config line") || strings.Contains(l, "Unknown command") {
				bad = append(bad, d.name+": "+l)
			}
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("config rejected:\n%s", strings.Join(bad, "\n"))
	}
	return nil
}

func (f *frr) bgpdConf() string {
	cfg := f.r.cfg
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	w("frr defaults datacenter")
	w("hostname %s", cfg.Netns)
	w("!")
	// Only the blackholes made for Originate, not the namespace's other kernel routes.
	w("route-map tabby-originate permit 10")
	w(" match metric %d", metricOriginate)
	w(" set metric 0")
	w("!")
	w("router bgp %d", cfg.AS)
	w(" bgp router-id %s", cfg.RouterID)
	w(" no bgp ebgp-requires-policy")
	w(" no bgp network import-check")
	hold := int(cfg.HoldTime / time.Second)
	w(" timers bgp %d %d", max(hold/3, 1), hold)
	if cfg.Multipath {
		w(" bgp bestpath as-path multipath-relax")
	}
	if cfg.FastUpdates {
		w(" coalesce-time 50")
	}
	if cfg.GracefulRestart {
		rt := int(cfg.RestartTime / time.Second)
		w(" bgp graceful-restart")
		w(" bgp graceful-restart restart-time %d", rt)
		w(" bgp graceful-restart stalepath-time %d", rt)
	} else {
		w(" bgp graceful-restart-disable")
	}
	for _, n := range cfg.Neighbors {
		for _, l := range f.neighborLines(n) {
			w(" %s", l)
		}
	}
	w(" address-family ipv4 unicast")
	w("  redistribute kernel route-map tabby-originate")
	paths := 1
	if cfg.Multipath {
		paths = 16
	}
	w("  maximum-paths %d", paths)
	w("  maximum-paths ibgp %d", paths)
	for _, n := range cfg.Neighbors {
		for _, l := range f.neighborAFLines(n) {
			w("  %s", l)
		}
	}
	w(" exit-address-family")
	w("!")
	return b.String()
}

// neighborLines are n's lines under "router bgp".
func (f *frr) neighborLines(n Neighbor) []string {
	ls := []string{
		fmt.Sprintf("neighbor %s remote-as %d", n.Addr, n.AS),
		fmt.Sprintf("neighbor %s timers connect %d", n.Addr, int(f.r.cfg.ConnectRetry/time.Second)),
	}
	if n.Password != "" {
		ls = append(ls, fmt.Sprintf("neighbor %s password %s", n.Addr, n.Password))
	}
	if n.Passive {
		ls = append(ls, fmt.Sprintf("neighbor %s passive", n.Addr))
	}
	return ls
}

// neighborAFLines are n's lines under "address-family ipv4 unicast".
func (f *frr) neighborAFLines(n Neighbor) []string {
	ls := []string{fmt.Sprintf("neighbor %s activate", n.Addr)}
	if n.MaxPrefixes > 0 {
		ls = append(ls, fmt.Sprintf("neighbor %s maximum-prefix %d", n.Addr, n.MaxPrefixes))
	}
	return ls
}

func (f *frr) vtysh(ctx context.Context, cmds ...string) (string, error) {
	args := []string{"--vty_socket", f.r.dir}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	return runCLI(ctx, "vtysh", args...)
}

// configure runs lines under "router bgp AS" in vtysh's configure mode.
func (f *frr) configure(ctx context.Context, lines ...string) error {
	cmds := append([]string{"configure terminal", fmt.Sprintf("router bgp %d", f.r.cfg.AS)}, lines...)
	out, err := f.vtysh(ctx, cmds...)
	if err != nil {
		return err
	}
	if strings.Contains(out, "% ") {
		return fmt.Errorf("vtysh: %s", strings.TrimSpace(out))
	}
	return nil
}

func (f *frr) exec(ctx context.Context, cli string) (string, error) {
	return f.vtysh(ctx, strings.Split(strings.TrimSpace(cli), "\n")...)
}

func (f *frr) addNeighbor(ctx context.Context, n Neighbor) error {
	lines := f.neighborLines(n)
	lines = append(lines, "address-family ipv4 unicast")
	return f.configure(ctx, append(lines, f.neighborAFLines(n)...)...)
}

func (f *frr) removeNeighbor(ctx context.Context, n Neighbor) error {
	return f.configure(ctx, fmt.Sprintf("no neighbor %s", n.Addr))
}

func (f *frr) announce(_ context.Context, ps []netip.Prefix) error {
	h, err := f.r.netlink()
	if err != nil {
		return err
	}
	return addBlackholes(h, ps)
}

func (f *frr) withdraw(_ context.Context, ps []netip.Prefix) error {
	h, err := f.r.netlink()
	if err != nil {
		return err
	}
	return delBlackholes(h, ps)
}

func (f *frr) installedProto() netlink.RouteProtocol { return protoFRR }

// cleanup removes the originated blackholes, the routes a killed zebra left, its
// nexthop objects, and the daemons' crash-log directories under /var/tmp/frr.
func (f *frr) cleanup() error {
	for _, d := range []*daemon{f.zebra, f.bgpd} {
		if d != nil {
			_ = os.RemoveAll(fmt.Sprintf("/var/tmp/frr/%s.%d", d.name, d.cmd.Process.Pid))
		}
	}
	if f.r.netnsGone() {
		return nil // and so is what was in it
	}
	h, err := f.r.netlink()
	if err != nil {
		return err
	}
	var errs []error
	for _, proto := range []netlink.RouteProtocol{protoOriginate, protoFRR} {
		if err := flushProto(h, proto); err != nil {
			errs = append(errs, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	// zebra installs nexthop objects (protocol zebra, 11: ip 6.1 knows no name) for
	// its routes.
	if out, err := runCLI(ctx, "ip", "-n", f.r.cfg.Netns, "nexthop", "flush", "protocol", "11"); err != nil &&
		!strings.Contains(out, "Nothing to flush") {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// FRR's JSON.

type frrSummary struct {
	IPv4Unicast struct {
		Peers map[string]struct {
			RemoteAs uint32 `json:"remoteAs"`
			PfxRcd   int    `json:"pfxRcd"`
			State    string `json:"state"`
		} `json:"peers"`
	} `json:"ipv4Unicast"`
}

type frrNeighbor struct {
	RemoteAs       uint32 `json:"remoteAs"`
	BgpState       string `json:"bgpState"`
	LastResetDueTo string `json:"lastResetDueTo"`
}

// frrReasons spells out the reasons FRR gives in parentheses after a state.
var frrReasons = map[string]string{
	"PfxCt":  "prefix limit exceeded (PfxCt)",
	"Admin":  "administratively down (Admin)",
	"Policy": "no policy (Policy)",
}

var frrStateRe = regexp.MustCompile(`^(\w+)\s*(?:\((.*)\))?`)

func (f *frr) peers(ctx context.Context) ([]Peer, error) {
	out, err := f.vtysh(ctx, "show bgp summary json")
	if err != nil {
		return nil, err
	}
	var s frrSummary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return nil, fmt.Errorf("parse show bgp summary json: %w", err)
	}
	var ps []Peer
	down := false
	for a, p := range s.IPv4Unicast.Peers {
		addr, err := netip.ParseAddr(a)
		if err != nil {
			continue // an interface or dynamic neighbor
		}
		peer := Peer{Addr: addr, AS: p.RemoteAs, PrefixesReceived: p.PfxRcd}
		if m := frrStateRe.FindStringSubmatch(p.State); m != nil {
			peer.State, peer.Info = normState(m[1]), frrReasons[m[2]]
			if peer.Info == "" {
				peer.Info = m[2]
			}
		} else {
			peer.State = p.State
		}
		down = down || !peer.Established()
		ps = append(ps, peer)
	}
	// A neighbor without the IPv4 family, or a summary missing some: list them too.
	nbrs := map[string]frrNeighbor{}
	if down || len(ps) != f.neighborCount() {
		out, err := f.vtysh(ctx, "show bgp neighbors json")
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(out), &nbrs); err != nil {
			return nil, fmt.Errorf("parse show bgp neighbors json: %w", err)
		}
	}
	seen := map[netip.Addr]bool{}
	for i := range ps {
		seen[ps[i].Addr] = true
		if n, ok := nbrs[ps[i].Addr.String()]; ok && !ps[i].Established() && ps[i].Info == "" {
			ps[i].Info = n.LastResetDueTo
		}
	}
	for a, n := range nbrs {
		if addr, err := netip.ParseAddr(a); err == nil && !seen[addr] {
			ps = append(ps, Peer{Addr: addr, AS: n.RemoteAs, State: normState(n.BgpState), Info: n.LastResetDueTo})
		}
	}
	return ps, nil
}

func (f *frr) neighborCount() int {
	f.r.mu.Lock()
	defer f.r.mu.Unlock()
	return len(f.r.cfg.Neighbors)
}

type frrPath struct {
	Valid     bool   `json:"valid"`
	Best      bool   `json:"bestpath"`
	Multipath bool   `json:"multipath"`
	Stale     bool   `json:"stale"`
	PeerID    string `json:"peerId"`
	Path      string `json:"path"`
	Nexthops  []struct {
		IP   string `json:"ip"`
		Used bool   `json:"used"`
	} `json:"nexthops"`
}

func (f *frr) routes(ctx context.Context) ([]Route, error) {
	out, err := f.vtysh(ctx, "show bgp ipv4 unicast json")
	if err != nil {
		return nil, err
	}
	var t struct {
		Routes map[string][]frrPath `json:"routes"`
	}
	if err := json.Unmarshal([]byte(out), &t); err != nil {
		return nil, fmt.Errorf("parse show bgp ipv4 unicast json: %w", err)
	}
	var rs []Route
	for pfx, paths := range t.Routes {
		p, err := netip.ParsePrefix(pfx)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", pfx, err)
		}
		rt := Route{Prefix: p}
		local := false
		for _, path := range paths {
			if !path.Valid || !(path.Best || (path.Multipath && f.r.cfg.Multipath)) {
				continue
			}
			if path.PeerID == "(unspec)" || path.PeerID == "0.0.0.0" {
				local = true // originated here
				break
			}
			for _, nh := range path.Nexthops {
				if a, err := netip.ParseAddr(nh.IP); err == nil && !a.IsUnspecified() {
					rt.NextHops = appendUnique(rt.NextHops, a)
				}
			}
			if path.Best {
				rt.Stale = path.Stale
				rt.ASPath = parseASPath(path.Path)
			}
		}
		if !local {
			rs = append(rs, rt)
		}
	}
	return rs, nil
}

// normState spells a BGP FSM state the way Peer.State does.
func normState(s string) string {
	switch strings.ToLower(s) {
	case "idle":
		return "Idle"
	case "connect":
		return "Connect"
	case "active":
		return "Active"
	case "opensent":
		return "OpenSent"
	case "openconfirm":
		return "OpenConfirm"
	case "established":
		return "Established"
	}
	return s
}

// parseASPath reads the ASes of "64512 65001 {65002}" (sets flattened).
func parseASPath(s string) []uint32 {
	var as []uint32
	for _, fld := range strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '{' || r == '}' || r == ',' }) {
		if n, err := strconv.ParseUint(fld, 10, 32); err == nil {
			as = append(as, uint32(n))
		}
	}
	return as
}

func appendUnique(as []netip.Addr, a netip.Addr) []netip.Addr {
	for _, b := range as {
		if b == a {
			return as
		}
	}
	return append(as, a)
}
