package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	v1 "github.com/tabbynet/tabby/api/v1"
	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	"go.uber.org/zap"
)

// Defaults of Options.
const (
	DefaultCheckInterval   = 5 * time.Second
	DefaultShutdownTimeout = 5 * time.Second
	datastoreCallTimeout   = 10 * time.Second
)

// Options is what the agent is built from; cmd/tabby-node fills it in.
type Options struct {
	// Config is the parsed and validated configuration. Required.
	Config Config
	// Store is the datastore. Required.
	Store datastore.Store
	// Dataplane is felix, built on Store. Required.
	Dataplane Dataplane
	// Registry receives the agent's metrics and is served on /metrics. Required.
	Registry *prometheus.Registry
	// BGP is the node's BGP controller, reported on GET /bgp/peers; nil when BGP is off.
	BGP BGP
	// VMs is the libvirt watcher, reported on GET /vms; nil when VM endpoints are off
	// (see also SetVMWatcher).
	VMs VMWatcher
	// Logger (default: no logging).
	Logger *zap.Logger
	// Version of the agent, reported in /status and the tabby_node_info metric.
	Version string
	// Detector autodetects the node address (default: SystemDetector()).
	Detector *Detector
	// CheckInterval is how often the datastore is checked (default 5s).
	CheckInterval time.Duration
	// ShutdownTimeout bounds the graceful stop of the HTTP servers (default 5s).
	ShutdownTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Agent is tabby-node: it registers the node, runs the dataplane and serves health,
// metrics and the local API.
type Agent struct {
	cfg      Config
	store    datastore.Store
	dp       Dataplane
	bgp      BGP
	vms      vmHolder
	reg      *prometheus.Registry
	log      *zap.Logger
	version  string
	detector Detector
	every    time.Duration
	shutdown time.Duration
	now      func() time.Time
	start    time.Time

	mu sync.Mutex
	st state
}

// state is what the agent learned at run time; guarded by Agent.mu.
type state struct {
	nodeIP       netip.Prefix
	nodeIPSource string
	registered   bool
	checked      bool
	reachable    bool
	lastCheck    time.Time
	storeErr     string
	healthAddr   string
	metricsAddr  string
}

// New checks the options and builds the agent.
func New(o Options) (*Agent, error) {
	switch {
	case o.Store == nil:
		return nil, errors.New("agent: no datastore")
	case o.Dataplane == nil:
		return nil, errors.New("agent: no dataplane")
	case o.Registry == nil:
		return nil, errors.New("agent: no metrics registry")
	}
	if err := o.Config.Validate(); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a := &Agent{cfg: o.Config, store: o.Store, dp: o.Dataplane, bgp: o.BGP, reg: o.Registry, log: o.Logger,
		version: o.Version, every: o.CheckInterval, shutdown: o.ShutdownTimeout, now: o.Now}
	if a.log == nil {
		a.log = zap.NewNop()
	}
	if a.version == "" {
		a.version = "dev"
	}
	if o.Detector != nil {
		a.detector = *o.Detector
	} else {
		a.detector = SystemDetector()
	}
	if a.every <= 0 {
		a.every = DefaultCheckInterval
	}
	if a.shutdown <= 0 {
		a.shutdown = DefaultShutdownTimeout
	}
	if a.now == nil {
		a.now = time.Now
	}
	a.start = a.now()
	a.vms.w = o.VMs
	if err := a.registerMetrics(); err != nil {
		return nil, err
	}
	return a, nil
}

func (a *Agent) registerMetrics() error {
	gauge := func(name, help string, f func() bool) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			if f() {
				return 1
			}
			return 0
		})
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "tabby_node_info", Help: "Always 1; labels name the node and the agent's version.",
		ConstLabels: prometheus.Labels{"node": a.cfg.NodeName, "version": a.version}})
	info.Set(1)
	for _, c := range []prometheus.Collector{
		info,
		gauge("tabby_node_ready", "1 when /readyz answers ok: the datastore is reachable, the node registered and felix ready.", func() bool { return len(a.notReady()) == 0 }),
		gauge("tabby_node_datastore_reachable", "1 when the last datastore check succeeded.", func() bool { return a.snapshot().reachable }),
		gauge("tabby_node_registered", "1 once the tabby.dev Node holds this node's address.", func() bool { return a.snapshot().registered }),
		newIPAMCollector(a.store, a.cfg.NodeName, ipamScrapeTimeout), // ipammetrics.go
	} {
		if err := a.reg.Register(c); err != nil {
			return fmt.Errorf("agent: register metrics: %w", err)
		}
	}
	if a.bgp != nil {
		if err := a.reg.Register(bgp.NewPeerCollector(a.bgp.Peers, bgpPeersTimeout)); err != nil {
			return fmt.Errorf("agent: register BGP metrics: %w", err)
		}
	}
	return nil
}

func (a *Agent) snapshot() state {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}

func (a *Agent) update(f func(*state)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(&a.st)
}

// notReady lists why /readyz fails; empty means ready.
func (a *Agent) notReady() []string {
	st := a.snapshot()
	var out []string
	switch {
	case !st.checked:
		out = append(out, "datastore not checked yet")
	case !st.reachable:
		out = append(out, "datastore unreachable: "+st.storeErr)
	case !st.registered:
		// Peers (the BGP mesh, IPAM's node selectors) find this node by its Node
		// resource: not ready until it is written.
		out = append(out, "node not registered yet")
	}
	if !a.dp.Ready() {
		out = append(out, "felix not ready")
	}
	return out
}

// Run runs the agent until ctx ends: it finds the node address, writes the node-name
// file, opens the local API socket and the health and metrics listeners, registers the
// node and runs the dataplane. When ctx ends it stops gracefully and returns nil: the
// servers close, the socket file is removed, the dataplane returns, and no route is
// flushed. An error is returned when starting fails or the dataplane fails.
func (a *Agent) Run(ctx context.Context) error {
	ip, src, err := a.nodeAddress(ctx)
	if err != nil {
		return err
	}
	a.update(func(s *state) { s.nodeIP, s.nodeIPSource = ip, src })
	if err := a.writeNodename(); err != nil {
		return err
	}
	servers, err := a.listen()
	if err != nil {
		return err
	}
	a.log.Info("tabby-node started", zap.String("node", a.cfg.NodeName), zap.String("version", a.version),
		zap.Stringer("ip", ip), zap.String("socket", a.cfg.Socket))

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, len(servers)+1)
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s server: %w", s.name, err)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		a.maintain(runCtx)
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		releaseEmptyBlocks(runCtx, ipam.New(a.store, ipam.Options{Logger: a.log.Named("ipam")}),
			a.cfg.NodeName, blockGCEvery, blockGCGrace, a.log)
	}()
	dpDone := make(chan error, 1)
	go func() { dpDone <- a.dp.Run(runCtx) }()

	var runErr error
	dpReturned := false
	select {
	case <-ctx.Done():
		a.log.Info("stopping: signal received; routes stay in the kernel")
	case err := <-dpDone:
		dpReturned = true
		if err == nil {
			err = errors.New("the dataplane stopped")
		}
		runErr = fmt.Errorf("felix: %w", err)
	case err := <-errc:
		runErr = err
	}
	cancel()
	a.stopServers(servers)
	if !dpReturned {
		select {
		case err := <-dpDone:
			if err != nil && !errors.Is(err, context.Canceled) {
				a.log.Warn("felix returned an error while stopping", zap.Error(err))
			}
		case <-time.After(a.shutdown):
			a.log.Warn("felix did not stop in time; exiting anyway", zap.Duration("waited", a.shutdown))
		}
	}
	wg.Wait()
	if runErr != nil {
		return runErr
	}
	a.log.Info("tabby-node stopped")
	return nil
}

// nodeAddress is --ip, or what autodetection finds.
func (a *Agent) nodeAddress(ctx context.Context) (netip.Prefix, string, error) {
	if p, _ := a.cfg.StaticIP(); p.IsValid() {
		a.log.Info("node address from --ip", zap.Stringer("ip", p))
		return p, "--ip", nil
	}
	m, err := ParseMethod(a.cfg.IPAutodetect)
	if err != nil {
		return netip.Prefix{}, "", fmt.Errorf("--ip-autodetect: %w", err)
	}
	d, err := a.detector.Detect(ctx, m)
	if err != nil {
		return netip.Prefix{}, "", fmt.Errorf("autodetect the node address: %w", err)
	}
	a.log.Info("node address autodetected", zap.String("method", d.Method), zap.String("interface", d.Interface),
		zap.Stringer("ip", d.Prefix))
	return d.Prefix, d.Method + " on " + d.Interface, nil
}

// writeNodename writes the node name for the CNI plugin, atomically.
func (a *Agent) writeNodename() error {
	path := a.cfg.NodenameFile
	if path == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create the directory of the node-name file: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(a.cfg.NodeName), 0o644); err != nil {
		return fmt.Errorf("write the node-name file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write the node-name file: %w", err)
	}
	return nil
}

// server is one HTTP server with its listener.
type server struct {
	name string
	srv  *http.Server
	ln   net.Listener
}

// listen opens the local API socket and the health and metrics listeners.
func (a *Agent) listen() ([]server, error) {
	var out []server
	fail := func(err error) ([]server, error) {
		for _, s := range out {
			s.ln.Close()
		}
		return nil, err
	}
	sock, err := listenSocket(a.cfg.Socket, a.log)
	if err != nil {
		return fail(fmt.Errorf("local API socket: %w", err))
	}
	out = append(out, server{"local API", a.httpServer(a.localAPIHandler()), sock})
	for _, l := range []struct {
		name, addr string
		h          http.Handler
		set        func(*state, string)
	}{
		{"health", a.cfg.HealthAddr, a.healthHandler(), func(s *state, v string) { s.healthAddr = v }},
		{"metrics", a.cfg.MetricsAddr, metricsHandler(a.reg, a.log), func(s *state, v string) { s.metricsAddr = v }},
	} {
		if l.addr == "" {
			continue
		}
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			return fail(fmt.Errorf("%s listener: %w", l.name, err))
		}
		a.update(func(s *state) { l.set(s, ln.Addr().String()) })
		a.log.Info("serving "+l.name, zap.String("addr", ln.Addr().String()))
		out = append(out, server{l.name, a.httpServer(l.h), ln})
	}
	return out, nil
}

func (a *Agent) httpServer(h http.Handler) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(a.log)}
}

// stopServers shuts the servers down (the local API socket file goes with it).
func (a *Agent) stopServers(servers []server) {
	ctx, cancel := context.WithTimeout(context.Background(), a.shutdown)
	defer cancel()
	for _, s := range servers {
		if err := s.srv.Shutdown(ctx); err != nil {
			a.log.Warn("stop "+s.name+" server", zap.Error(err))
			s.srv.Close()
		}
		_ = s.ln.Close() // Shutdown closed it; make sure the socket file is gone
	}
}

// maintain checks the datastore every interval and (re)registers the node whenever
// its Node resource is missing or does not hold the node's address; a failed
// registration is retried with backoff.
func (a *Agent) maintain(ctx context.Context) {
	backoff := time.Second
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		next := a.every
		if !a.checkAndRegister(ctx) {
			next = min(backoff, a.every)
			backoff = min(backoff*2, 30*time.Second)
		} else {
			backoff = time.Second
		}
		timer.Reset(next)
	}
}

// checkAndRegister reads the node's Node resource (the datastore check) and registers
// when needed; it reports whether all is well.
func (a *Agent) checkAndRegister(ctx context.Context) bool {
	cctx, cancel := context.WithTimeout(ctx, datastoreCallTimeout)
	defer cancel()
	node, err := datastore.Get[*v1.Node](cctx, a.store, "", a.cfg.NodeName)
	if ctx.Err() != nil {
		return true
	}
	reachable := err == nil || errors.Is(err, datastore.ErrNotFound)
	st := a.snapshot()
	if reachable != st.reachable || !st.checked {
		if reachable {
			a.log.Info("datastore reachable")
		} else {
			a.log.Warn("datastore unreachable", zap.Error(err))
		}
	}
	a.update(func(s *state) {
		s.checked, s.reachable, s.lastCheck, s.storeErr = true, reachable, a.now(), ""
		if !reachable {
			s.storeErr = err.Error()
		}
	})
	if !reachable {
		return false
	}
	if st.registered && node != nil && node.Spec.BGP != nil && node.Spec.BGP.IPv4Address == st.nodeIP.String() {
		return true
	}
	if st.registered {
		a.log.Warn("the Node resource lost this node's address; registering again")
	}
	_, err = Register(cctx, a.store, Registration{Name: a.cfg.NodeName, IPv4: st.nodeIP}, a.log)
	a.update(func(s *state) { s.registered = err == nil })
	if err != nil {
		a.log.Warn("register the node; will retry", zap.Error(err))
		return false
	}
	return true
}
