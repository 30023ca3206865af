package router

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// Kind is the implementation a Router runs.
type Kind string

const (
	KindFRR   Kind = "frr"    // FRR 8.x: zebra and bgpd
	KindBIRD  Kind = "bird"   // BIRD 2
	KindGoBGP Kind = "gobgpd" // gobgpd 3.x
)

// Kinds is every Kind.
var Kinds = []Kind{KindFRR, KindBIRD, KindGoBGP}

// ParseKind parses "frr", "bird" or "gobgpd" (also "gobgp").
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "frr":
		return KindFRR, nil
	case "bird", "bird2":
		return KindBIRD, nil
	case "gobgpd", "gobgp":
		return KindGoBGP, nil
	}
	return "", fmt.Errorf("unknown router kind %q (want frr, bird or gobgpd)", s)
}

// frrDir holds the FRR daemons (Debian's frr package).
const frrDir = "/usr/lib/frr"

// Binaries are the programs a kind needs.
func (k Kind) Binaries() []string {
	switch k {
	case KindFRR:
		return []string{filepath.Join(frrDir, "zebra"), filepath.Join(frrDir, "bgpd"), "vtysh", "ip"}
	case KindBIRD:
		return []string{"bird", "birdc", "ip"}
	case KindGoBGP:
		return []string{"gobgpd", "gobgp", "ip"}
	}
	return nil
}

// Available reports why kind cannot run here (a program missing), or nil.
func Available(kind Kind) error {
	bins := kind.Binaries()
	if bins == nil {
		return fmt.Errorf("unknown router kind %q", kind)
	}
	for _, b := range bins {
		if _, err := exec.LookPath(b); err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
	}
	return nil
}

// Neighbor is a BGP peer of the router.
type Neighbor struct {
	Addr        netip.Addr
	AS          uint32
	Password    string // TCP MD5 signature; "" for none
	MaxPrefixes int    // the session goes down when the peer sends more; 0: no limit
	Passive     bool   // wait for the peer to connect
}

// Config is a router. Zero durations take the defaults noted.
type Config struct {
	Kind Kind
	// Netns is the network namespace the router runs in: the caller's, with the
	// addresses the peers reach (and forwarding on, if it is to forward).
	Netns string
	// Dir holds a directory the router makes for its config, sockets, pid files and
	// logs (os.TempDir() when ""); Stop removes it. Unix socket paths are limited to
	// 107 bytes: keep Dir short.
	Dir string

	AS       uint32
	RouterID netip.Addr // IPv4

	Neighbors []Neighbor
	// Originate are the prefixes (IPv4) the router advertises, besides passing on
	// what it learns. FRR originates them as blackhole routes in its namespace's
	// main table (protocol 75, metric 7575) redistributed into BGP: that scales to
	// 100,000 and more. BIRD: a static protocol of blackhole routes. gobgpd: one CLI
	// call per prefix (fine for hundreds).
	Originate []netip.Prefix
	// InstallKernel installs the best paths in the namespace's main table (FRR:
	// zebra, protocol bgp; BIRD: a kernel protocol, protocol bird). gobgpd: an error.
	InstallKernel bool

	// GracefulRestart makes the router GR capable (restarting speaker and helper)
	// with RestartTime (default 120 s); without it GR is off (FRR's default helper
	// mode too), so a lost session flushes the peer's routes at once.
	GracefulRestart bool
	RestartTime     time.Duration
	// Multipath selects ECMP over peers with equal paths, also from different
	// neighbouring ASes, and installs them as one multipath route.
	Multipath bool
	// FastUpdates makes the router send updates as soon as it can (FRR's
	// coalesce-time 50 ms instead of 1 s), for benchmarks.
	FastUpdates bool

	// ConnectRetry is the time between connection attempts (default 5 s).
	ConnectRetry time.Duration
	// HoldTime is the BGP hold time proposed (default 9 s, keepalives a third).
	HoldTime time.Duration
}

// Peer is a neighbor's session as the router reports it.
type Peer struct {
	Addr netip.Addr
	AS   uint32
	// State is the BGP FSM state: "Idle", "Connect", "Active", "OpenSent",
	// "OpenConfirm" or "Established".
	State string
	// PrefixesReceived counts the prefixes received and accepted from the peer.
	PrefixesReceived int
	// Info is the router's reason for a session that is not Established, when it
	// gives one (last error, prefix limit), else "".
	Info string
}

// Established reports whether the session is up.
func (p Peer) Established() bool { return p.State == "Established" }

// Route is a prefix learned over BGP, as selected by the router.
type Route struct {
	Prefix netip.Prefix
	// NextHops are the next hops of the best path and, with Multipath, of the paths
	// the router uses alongside it.
	NextHops []netip.Addr
	ASPath   []uint32 // of the best path
	Stale    bool     // kept for a restarting peer (graceful restart)
}

// Router is a running BGP router. Its methods are safe for concurrent use.
type Router struct {
	Kind  Kind
	Netns string
	Dir   string // the router's own directory (config, sockets, logs)

	cfg   Config
	dir   string
	spawn *spawner
	be    backend

	mu       sync.Mutex // guards daemons, logs, stopped and the config's lists
	daemons  []*daemon
	logs     string // the logs' tails kept by Stop
	logsKept bool
	stopped  bool
	stopErr  error
	stopOnce sync.Once
	nl       *netlink.Handle // in Netns, opened on demand
}

// backend is one kind of router.
type backend interface {
	start(ctx context.Context) error
	peers(ctx context.Context) ([]Peer, error)
	routes(ctx context.Context) ([]Route, error)
	exec(ctx context.Context, cli string) (string, error)
	// addNeighbor and removeNeighbor apply a change already made to the config.
	addNeighbor(ctx context.Context, n Neighbor) error
	removeNeighbor(ctx context.Context, n Neighbor) error
	// announce and withdraw apply a change already made to the config.
	announce(ctx context.Context, ps []netip.Prefix) error
	withdraw(ctx context.Context, ps []netip.Prefix) error
	// cleanup runs once the daemons are gone: kernel state and files outside Dir.
	cleanup() error
	// installedProto is the kernel protocol of the routes the router installs.
	installedProto() netlink.RouteProtocol
}

// Start writes the router's config and starts its daemons in the foreground inside
// cfg.Netns, and returns once they answer their CLI (the sessions come up later).
// ctx bounds the start only: the daemons run until Stop, and die with the calling
// process. On failure everything started is stopped again and the error carries the
// logs' tails.
func Start(ctx context.Context, cfg Config) (*Router, error) {
	cfg, err := cfg.normalise()
	if err != nil {
		return nil, err
	}
	if err := Available(cfg.Kind); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join("/run/netns", cfg.Netns)); err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", cfg.Netns, err)
	}
	base := cfg.Dir
	if base == "" {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, string(cfg.Kind)+"-")
	if err != nil {
		return nil, fmt.Errorf("make router directory: %w", err)
	}
	// Unix sockets live here; the longest name is FRR's zserv.api.
	if n := len(filepath.Join(dir, "zserv.api")); n > 107 {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("router directory %s too long for unix sockets (%d > 107 bytes): use a shorter Dir", dir, n)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("make router directory: %w", err)
	}
	r := &Router{Kind: cfg.Kind, Netns: cfg.Netns, Dir: dir, cfg: cfg, dir: dir, spawn: newSpawner()}
	switch cfg.Kind {
	case KindFRR:
		r.be = &frr{r: r}
	case KindBIRD:
		r.be = &bird{r: r}
	case KindGoBGP:
		r.be = &gobgp{r: r}
	}
	if err := r.be.start(ctx); err != nil {
		logs := r.Logs()
		if serr := r.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		return nil, fmt.Errorf("start %s router in %s: %w\n%s", cfg.Kind, cfg.Netns, err, logs)
	}
	return r, nil
}

// normalise validates c and fills in the defaults; the lists are copied.
func (c Config) normalise() (Config, error) {
	if _, err := ParseKind(string(c.Kind)); err != nil || c.Kind == "" {
		return c, fmt.Errorf("router kind %q: want frr, bird or gobgpd", c.Kind)
	}
	if c.Netns == "" {
		return c, errors.New("router: no Netns")
	}
	if c.AS == 0 {
		return c, errors.New("router: no AS")
	}
	if !c.RouterID.Is4() {
		return c, fmt.Errorf("router ID %v: want an IPv4 address", c.RouterID)
	}
	if c.Kind == KindGoBGP && c.InstallKernel {
		return c, errors.New("gobgpd cannot install routes in the kernel (it would need zebra): InstallKernel unsupported")
	}
	if c.GracefulRestart && c.RestartTime == 0 {
		c.RestartTime = 120 * time.Second
	}
	if c.RestartTime < 0 || c.RestartTime > 4095*time.Second {
		return c, fmt.Errorf("restart time %v: want 1s to 4095s", c.RestartTime)
	}
	if c.ConnectRetry == 0 {
		c.ConnectRetry = 5 * time.Second
	}
	if c.HoldTime == 0 {
		c.HoldTime = 9 * time.Second
	}
	if c.ConnectRetry < time.Second || c.HoldTime < 3*time.Second {
		return c, fmt.Errorf("connect retry %v, hold time %v: want at least 1s and 3s", c.ConnectRetry, c.HoldTime)
	}
	ns := slices.Clone(c.Neighbors)
	for i, n := range ns {
		if err := n.validate(); err != nil {
			return c, err
		}
		for _, m := range ns[:i] {
			if m.Addr == n.Addr {
				return c, fmt.Errorf("neighbor %v twice", n.Addr)
			}
		}
	}
	c.Neighbors = ns
	ps, err := normalisePrefixes(c.Originate)
	if err != nil {
		return c, err
	}
	c.Originate = ps
	return c, nil
}

func (n Neighbor) validate() error {
	if !n.Addr.Is4() {
		return fmt.Errorf("neighbor %v: want an IPv4 address", n.Addr)
	}
	if n.AS == 0 {
		return fmt.Errorf("neighbor %v: no AS", n.Addr)
	}
	if n.MaxPrefixes < 0 {
		return fmt.Errorf("neighbor %v: negative MaxPrefixes", n.Addr)
	}
	if strings.ContainsAny(n.Password, " \t\r\n\"'\\") || len(n.Password) > 80 {
		return fmt.Errorf("neighbor %v: password must be at most 80 characters without blanks, quotes or backslashes", n.Addr)
	}
	return nil
}

// normalisePrefixes masks ps and drops duplicates; only IPv4 is allowed.
func normalisePrefixes(ps []netip.Prefix) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(ps))
	seen := make(map[netip.Prefix]bool, len(ps))
	for _, p := range ps {
		if !p.IsValid() || !p.Addr().Is4() {
			return nil, fmt.Errorf("prefix %v: want IPv4", p)
		}
		p = p.Masked()
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out, nil
}

// Config is the router's current config (with the defaults, and the neighbors and
// prefixes added and removed since Start).
func (r *Router) Config() Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.cfg
	c.Neighbors = slices.Clone(c.Neighbors)
	c.Originate = slices.Clone(c.Originate)
	return c
}

func (r *Router) checkRunning() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return fmt.Errorf("%s router in %s is stopped", r.Kind, r.Netns)
	}
	return nil
}

// Peers is the state of every neighbor's session.
func (r *Router) Peers(ctx context.Context) ([]Peer, error) {
	if err := r.checkRunning(); err != nil {
		return nil, err
	}
	ps, err := r.be.peers(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s peers: %w", r.Kind, err)
	}
	slices.SortFunc(ps, func(a, b Peer) int { return a.Addr.Compare(b.Addr) })
	return ps, nil
}

// Peer is the session with the neighbor at addr.
func (r *Router) Peer(ctx context.Context, addr netip.Addr) (Peer, error) {
	ps, err := r.Peers(ctx)
	if err != nil {
		return Peer{}, err
	}
	for _, p := range ps {
		if p.Addr == addr {
			return p, nil
		}
	}
	return Peer{}, fmt.Errorf("%s router has no neighbor %v", r.Kind, addr)
}

// Routes are the routes the router learned over BGP (not those it originates), by
// prefix. Meant for tens to thousands of routes; poll RouteCount at scale.
func (r *Router) Routes(ctx context.Context) ([]Route, error) {
	if err := r.checkRunning(); err != nil {
		return nil, err
	}
	rs, err := r.be.routes(ctx)
	if err != nil {
		return nil, fmt.Errorf("%s routes: %w", r.Kind, err)
	}
	slices.SortFunc(rs, func(a, b Route) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return rs, nil
}

// RouteCount is the number of prefixes received and accepted from all peers (the sum
// of their PrefixesReceived; a prefix from two peers counts twice): cheap, for
// polling at 100,000-route scale.
func (r *Router) RouteCount(ctx context.Context) (int, error) {
	ps, err := r.Peers(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range ps {
		n += p.PrefixesReceived
	}
	return n, nil
}

// Exec runs a raw CLI command and returns its output: vtysh -c (one -c per line of
// cli), birdc, or gobgp (cli split at blanks, e.g. "neighbor -j").
func (r *Router) Exec(ctx context.Context, cli string) (string, error) {
	if err := r.checkRunning(); err != nil {
		return "", err
	}
	return r.be.exec(ctx, cli)
}

// AddNeighbor adds a neighbor to the running router.
func (r *Router) AddNeighbor(ctx context.Context, n Neighbor) error {
	if err := n.validate(); err != nil {
		return err
	}
	if err := r.checkRunning(); err != nil {
		return err
	}
	r.mu.Lock()
	if slices.ContainsFunc(r.cfg.Neighbors, func(m Neighbor) bool { return m.Addr == n.Addr }) {
		r.mu.Unlock()
		return fmt.Errorf("neighbor %v exists", n.Addr)
	}
	r.cfg.Neighbors = append(r.cfg.Neighbors, n)
	r.mu.Unlock()
	if err := r.be.addNeighbor(ctx, n); err != nil {
		return fmt.Errorf("add %s neighbor %v: %w", r.Kind, n.Addr, err)
	}
	return nil
}

// RemoveNeighbor removes the neighbor at addr from the running router.
func (r *Router) RemoveNeighbor(ctx context.Context, addr netip.Addr) error {
	if err := r.checkRunning(); err != nil {
		return err
	}
	r.mu.Lock()
	i := slices.IndexFunc(r.cfg.Neighbors, func(m Neighbor) bool { return m.Addr == addr })
	if i < 0 {
		r.mu.Unlock()
		return fmt.Errorf("no neighbor %v", addr)
	}
	n := r.cfg.Neighbors[i]
	r.cfg.Neighbors = slices.Delete(r.cfg.Neighbors, i, i+1)
	r.mu.Unlock()
	if err := r.be.removeNeighbor(ctx, n); err != nil {
		return fmt.Errorf("remove %s neighbor %v: %w", r.Kind, addr, err)
	}
	return nil
}

// Announce originates more prefixes (those already originated are skipped).
func (r *Router) Announce(ctx context.Context, ps ...netip.Prefix) error {
	ps, err := normalisePrefixes(ps)
	if err != nil {
		return err
	}
	if err := r.checkRunning(); err != nil {
		return err
	}
	r.mu.Lock()
	var add []netip.Prefix
	for _, p := range ps {
		if !slices.Contains(r.cfg.Originate, p) {
			add = append(add, p)
		}
	}
	r.cfg.Originate = append(r.cfg.Originate, add...)
	r.mu.Unlock()
	if len(add) == 0 {
		return nil
	}
	if err := r.be.announce(ctx, add); err != nil {
		return fmt.Errorf("%s announce: %w", r.Kind, err)
	}
	return nil
}

// Withdraw stops originating prefixes (those not originated are skipped).
func (r *Router) Withdraw(ctx context.Context, ps ...netip.Prefix) error {
	ps, err := normalisePrefixes(ps)
	if err != nil {
		return err
	}
	if err := r.checkRunning(); err != nil {
		return err
	}
	drop := make(map[netip.Prefix]bool, len(ps))
	for _, p := range ps {
		drop[p] = true
	}
	r.mu.Lock()
	var del []netip.Prefix
	r.cfg.Originate = slices.DeleteFunc(r.cfg.Originate, func(p netip.Prefix) bool {
		if drop[p] {
			del = append(del, p)
		}
		return drop[p]
	})
	r.mu.Unlock()
	if len(del) == 0 {
		return nil
	}
	if err := r.be.withdraw(ctx, del); err != nil {
		return fmt.Errorf("%s withdraw: %w", r.Kind, err)
	}
	return nil
}

// InstalledRoutes counts the routes the router has installed in its namespace's main
// table (InstallKernel; a multipath route counts once). Cheap at 100,000 routes.
func (r *Router) InstalledRoutes(ctx context.Context) (int, error) {
	if err := r.checkRunning(); err != nil {
		return 0, err
	}
	if !r.cfg.InstallKernel {
		return 0, nil
	}
	h, err := r.netlink()
	if err != nil {
		return 0, err
	}
	return countProto(h, r.be.installedProto())
}

// Logs is the tail of each daemon's log, for failure messages; after Stop, as it was
// when Stop removed them.
func (r *Router) Logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.logsKept {
		return r.logs
	}
	return r.logTails()
}

// logTails reads the logs; r.mu is held.
func (r *Router) logTails() string {
	var b strings.Builder
	for _, d := range r.daemons {
		fmt.Fprintf(&b, "--- %s log (%s, tail) ---\n%s", d.name, r.Netns, tail(d.log, 4096))
	}
	return b.String()
}

// Kill ends the daemons with SIGKILL, without a clean shutdown: the peers see the TCP
// sessions drop as when a router crashes (a graceful restart helper keeps the routes),
// and installed routes stay in the kernel. The router is then stopped; Stop (still
// needed) removes the rest.
func (r *Router) Kill() error {
	r.mu.Lock()
	ds := slices.Clone(r.daemons)
	r.mu.Unlock()
	var errs []error
	for _, d := range ds {
		if err := d.stop(syscall.SIGKILL, 0); err != nil {
			errs = append(errs, err)
		}
	}
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	return errors.Join(errs...)
}

// Stop stops the daemons (SIGTERM, SIGKILL after a grace period; the last daemon
// first), removes the routes they left in the kernel and the ones it originated there,
// and the router's directory. It is idempotent and returns the first call's error.
func (r *Router) Stop() error {
	r.stopOnce.Do(func() { r.stopErr = r.stop() })
	return r.stopErr
}

func (r *Router) stop() error {
	r.mu.Lock()
	r.stopped = true
	r.logs, r.logsKept = r.logTails(), true
	ds := slices.Clone(r.daemons)
	r.mu.Unlock()
	var errs []error
	for i := len(ds) - 1; i >= 0; i-- {
		sig := syscall.SIGTERM
		if ds[i].name == "zebra" {
			// zebra takes seconds to remove 100,000 routes one by one on SIGTERM:
			// cleanup flushes them at once.
			sig = syscall.SIGKILL
		}
		if err := ds[i].stop(sig, stopGrace); err != nil {
			errs = append(errs, err)
		}
	}
	r.spawn.close()
	if r.be != nil {
		if err := r.be.cleanup(); err != nil {
			errs = append(errs, err)
		}
	}
	r.mu.Lock()
	if r.nl != nil {
		r.nl.Close()
		r.nl = nil
	}
	r.mu.Unlock()
	if err := os.RemoveAll(r.dir); err != nil {
		errs = append(errs, fmt.Errorf("remove router directory: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stop %s router in %s: %w", r.Kind, r.Netns, err)
	}
	return nil
}
