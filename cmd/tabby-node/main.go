// Command tabby-node is Tabby's per-node agent. It only wires the pieces together:
// configuration and the logger (package agent), the datastore (datastore.NewKube), the
// dataplane (felix) and the metrics registry, then runs the agent until SIGTERM or
// SIGINT. See docs/reference/tabby-node.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/pflag"
	"github.com/tabbynet/tabby/agent"
	"github.com/tabbynet/tabby/felix"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
)

// Version is set at build time (-ldflags "-X main.Version=...").
var Version = "dev"

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
		Registry: reg, ResyncInterval: cfg.ResyncInterval, NetlinkHandle: nl})
	if err != nil {
		return fmt.Errorf("felix: %w", err)
	}
	// No BGP speaker runs yet, so nothing is learned: say so, which lets felix remove
	// learned routes (protocol 117) left from an earlier run.
	fx.SetLearnedRoutes(nil)
	a, err := agent.New(agent.Options{Config: cfg, Store: store, Dataplane: fx, Registry: reg,
		Logger: log, Version: Version})
	if err != nil {
		return err
	}
	return a.Run(ctx)
}
