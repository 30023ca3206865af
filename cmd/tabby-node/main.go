// Command tabby-node is Tabby's per-node agent. It only wires the pieces together:
// configuration and the logger (package agent), the datastore (datastore.NewKube), the
// dataplane (felix), the BGP controller (bgp/controller over gobgp, unless --bgp=false),
// the libvirt watcher (vmendpoint, unless --vm-endpoints=false), the pod label
// controller (podlabels) and the metrics registry, then runs the agent, the controllers
// and the watcher until SIGTERM or SIGINT. See docs/reference/tabby-node.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	"github.com/tabbynet/tabby/agent"
	"github.com/tabbynet/tabby/bgp"
	"github.com/tabbynet/tabby/bgp/controller"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix"
	"github.com/tabbynet/tabby/ipam"
	"github.com/tabbynet/tabby/podlabels"
	"github.com/tabbynet/tabby/vmendpoint"
	"github.com/tabbynet/tabby/vmendpoint/dhcp"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
)

// Version is set at build time (-ldflags "-X main.Version=...").
var Version = "dev"

// defaultGCPercent is the agent's GOGC unless the environment sets one.
const defaultGCPercent = 300

func main() { os.Exit(run()) }

func run() int {
	cfg, err := agent.ParseConfig(os.Args[1:], os.Getenv, os.Hostname, os.Stderr)
	if errors.Is(err, pflag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "tabby-node: %v\n", err)
		return 2
	}
	if cfg.ShowVersion {
		fmt.Println("tabby-node", Version)
		return 0
	}
	log, err := agent.NewLogger(cfg.LogLevel, cfg.LogFormat, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tabby-node: %v\n", err)
		return 2
	}
	defer func() { _ = log.Sync() }()
	if os.Getenv("GOGC") == "" {
		// Taking a large BGP table allocates per route at every stage; with the default
		// 100 the collector ran ~9% of the agent's CPU in make bench BENCH=bgp-install.
		// GOGC and GOMEMLIMIT in the environment win (docs/reference/tabby-node.md).
		debug.SetGCPercent(defaultGCPercent)
	}
	if err := runAgent(cfg, log); err != nil {
		log.Error("tabby-node exits", zap.Error(err))
		return 1
	}
	return 0
}

func runAgent(cfg agent.Config, log *zap.Logger) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	store, err := agent.KubeStore(cfg.Kubeconfig, "tabby-node/"+Version)
	if err != nil {
		return err
	}
	nl, err := netlink.NewHandle()
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer nl.Close()
	fx, err := felix.New(felix.Config{NodeName: cfg.NodeName, Store: store, Logger: log.Named("felix"),
		Registry: reg, ResyncInterval: cfg.ResyncInterval, NetlinkHandle: nl, Policy: cfg.Policy, BPFPinDir: cfg.BPFPinDir, ProcSysRoot: cfg.ProcSysRoot})
	if err != nil {
		return fmt.Errorf("felix: %w", err)
	}
	var bgpc *controller.Controller
	if cfg.BGP {
		bgpc, err = newBGP(cfg, store, fx, log)
		if err != nil {
			return err
		}
	} else {
		// No BGP speaker runs, so nothing is learned: say so, which lets felix remove
		// learned routes (protocol 117) left from an earlier run.
		fx.SetLearnedRoutes(nil)
	}
	opts := agent.Options{Config: cfg, Store: store, Dataplane: fx, Registry: reg, Logger: log, Version: Version}
	if bgpc != nil {
		opts.BGP = bgpc
	}
	a, err := agent.New(opts)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Pod labels follow to this node's pod WorkloadEndpoints until rctx ends; watches
	// that cannot start are retried with backoff.
	pl, err := podlabels.New(podlabels.Config{NodeName: cfg.NodeName, Store: store,
		Logger: log.Named("podlabels"), ResyncPeriod: cfg.ResyncInterval})
	if err != nil {
		return fmt.Errorf("pod labels: %w", err)
	}
	plDone := make(chan struct{})
	go func() {
		defer close(plDone)
		_ = pl.Run(rctx)
	}()
	defer func() { cancel(); <-plDone }()
	if cfg.VMEndpoints {
		vmw, servers, err := newVMEndpoints(cfg, store, fx, reg, log)
		if err != nil {
			return err
		}
		defer servers.Close() // after the watcher stopped (deferred below, so run first)
		a.SetVMWatcher(vmw)   // GET /vms and /status report it
		// The watcher only returns when rctx ends; a libvirt that cannot be loaded or
		// reached is retried with backoff and reported in its Status.
		vmDone := make(chan struct{})
		go func() {
			defer close(vmDone)
			_ = vmw.Run(rctx)
		}()
		defer func() { cancel(); <-vmDone }()
	}
	if bgpc == nil {
		return a.Run(rctx)
	}
	// The agent and the BGP controller run side by side; when either returns, the
	// other is stopped. The controller waits for the Node the agent registers.
	bgpDone := make(chan error, 1)
	go func() {
		err := bgpc.Run(rctx)
		if err != nil {
			log.Error("BGP controller stopped", zap.Error(err))
		}
		cancel()
		bgpDone <- err
	}()
	aerr := a.Run(rctx)
	cancel()
	berr := <-bgpDone
	if aerr != nil {
		return aerr
	}
	if berr != nil {
		return fmt.Errorf("bgp: %w", berr)
	}
	return nil
}

// newBGP builds the node's BGP controller over gobgp; learned routes go to felix.
//
// LocalRestarting is set when felix finds learned routes (protocol 117) in the kernel
// at start: an earlier tabby-node ran BGP on this node and stopped, gracefully on
// SIGTERM, so its peers keep our routes; our speaker then announces the restart and
// defers its advertisements until the peers' End-of-RIB. On a fresh node it is false,
// so that nodes starting together do not wait for each other.
//
// StopGraceful is always true: the controller stops only when tabby-node exits (on
// SIGTERM, SIGINT or a failure), and peers with graceful restart keep our routes
// until we are back.
func newBGP(cfg agent.Config, store datastore.Store, fx *felix.Felix, log *zap.Logger) (*controller.Controller, error) {
	restarting := false
	rs, err := fx.Routes()
	if err != nil {
		log.Warn("cannot list routes to find learned routes of an earlier run", zap.Error(err))
	}
	for _, r := range rs {
		if r.Kind == "learned" {
			restarting = true
			break
		}
	}
	blog := log.Named("bgp")
	if restarting {
		blog.Info("found learned routes of an earlier run: restarting gracefully")
	}
	c, err := controller.New(controller.Config{
		NodeName:        cfg.NodeName,
		Store:           store,
		NewSpeaker:      func() bgp.Speaker { return bgp.NewGoBGP(blog.Named("speaker")) },
		OnLearned:       fx.SetLearnedRoutes,
		OnLearnedDelta:  fx.UpdateLearnedRoutes,
		Base:            bgp.Global{LocalRestarting: restarting},
		StopGraceful:    true,
		SecretNamespace: cfg.BGPSecretNamespace,
		Logger:          blog,
	})
	if err != nil {
		return nil, fmt.Errorf("bgp: %w", err)
	}
	return c, nil
}

// newVMEndpoints builds the libvirt watcher: guest taps become WorkloadEndpoints with
// addresses from Tabby IPAM. Its Status() is what the local API reports (GET /vms).
func newVMEndpoints(cfg agent.Config, store datastore.Store, fx *felix.Felix, reg prometheus.Registerer, log *zap.Logger) (*vmendpoint.Watcher, *dhcp.Manager, error) {
	vlog := log.Named("vmendpoint")
	dns, err := cfg.VMDNSServers()
	if err != nil {
		return nil, nil, fmt.Errorf("vm endpoints: --vm-dns: %w", err)
	}
	servers := dhcp.NewManager(vlog.Named("dhcp"))
	var activity vmendpoint.Activity // a migration's blackout, from the policy counters
	if cfg.Policy {
		activity = guestActivity{fx}
	}
	rec, err := vmendpoint.NewReconciler(vmendpoint.ReconcilerConfig{
		Options: vmendpoint.Options{Node: cfg.NodeName, DefaultNamespace: cfg.VMNamespace, TapPrefixes: cfg.VMTapPrefixes()},
		Store:   store,
		IPAM:    ipam.New(store, ipam.Options{Logger: vlog.Named("ipam")}),
		DHCP: &vmendpoint.DHCPServers{M: servers,
			DNS: dhcp.Config{DNS: dns, SearchDomains: cfg.VMDNSSearchDomains()}},
		Activity: activity,
		Registry: reg,
		Logger:   vlog,
	})
	if err != nil {
		servers.Close()
		return nil, nil, fmt.Errorf("vm endpoints: %w", err)
	}
	w, err := vmendpoint.NewWatcher(vmendpoint.WatcherConfig{
		Source:     &vmendpoint.LibvirtSource{URI: cfg.LibvirtURI, Logger: vlog.Named("libvirt")},
		Reconciler: rec,
		URI:        cfg.LibvirtURI,
		Logger:     vlog,
	})
	if err != nil {
		servers.Close()
		return nil, nil, fmt.Errorf("vm endpoints: %w", err)
	}
	return w, servers, nil
}

// guestActivity gives vmendpoint the guests' packet times from felix's policy counters.
type guestActivity struct{ fx *felix.Felix }

func (g guestActivity) Sent(tap string) (first, last time.Time, err error) {
	a, err := g.fx.WorkloadActivity(tap)
	return a.FirstSent, a.LastSent, err
}
