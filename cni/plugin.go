package cni

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/ipam"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/tools/clientcmd"
)

// IPAM is the part of the allocator (ipam.Allocator) the plugin uses.
type IPAM interface {
	Assign(ctx context.Context, req ipam.Request) (ipam.Allocation, error)
	ReleaseHandle(ctx context.Context, handleID string) ([]netip.Addr, error)
	AddressesOf(ctx context.Context, handleID string) ([]netip.Addr, error)
	// Warm pre-reads what an Assign for node needs (pools, configuration, labels).
	Warm(ctx context.Context, node string) error
}

// Plugin is the CNI plugin. Its fields are what main injects; nil ones take defaults.
type Plugin struct {
	// NewIPAM returns the allocator over a store. Required.
	NewIPAM func(s datastore.Store, log *zap.Logger) IPAM
	// NewStore opens the datastore for a net config (default: a Kubernetes client over
	// conf.Kubeconfig).
	NewStore func(conf *NetConf) (datastore.Store, error)
	// NewLogger builds the logger of one call (default: log_level and log_file).
	NewLogger func(conf *NetConf) (*zap.Logger, error)
	// Getenv, NodenameFile and Hostname are where the node name may come from.
	Getenv       func(string) string
	NodenameFile string
	Hostname     func() (string, error)
	// Stdout receives the result (default os.Stdout).
	Stdout io.Writer
}

// Funcs are the CNI commands, for skel.PluginMainFuncs. Every error they return is a
// *types.Error with Tabby's code.
func (p *Plugin) Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    p.wrap("ADD", p.add),
		Del:    p.wrap("DEL", p.del),
		Check:  p.wrap("CHECK", p.check),
		GC:     p.wrap("GC", p.gc),
		Status: p.wrap("STATUS", p.status),
	}
}

// call is one invocation: its config, arguments, logger and datastore.
type call struct {
	conf  *NetConf
	args  *skel.CmdArgs
	k8s   K8sArgs
	node  string
	log   *zap.Logger
	store datastore.Store
	ipam  IPAM
	out   io.Writer
}

// ctx bounds one datastore call by datastore_timeout.
func (c *call) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), c.conf.DatastoreTimeout.Duration)
}

func (p *Plugin) wrap(cmd string, fn func(*call) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		c, closeLog, err := p.setup(cmd, args)
		if err != nil {
			if cmd == "STATUS" { // whatever keeps the plugin from starting, it cannot serve ADD
				code, msg := classify(err)
				return CNIError(newErr(CodeNotAvailable, "not available: "+msg, fmt.Errorf("code %d: %w", code, err)))
			}
			return CNIError(err)
		}
		defer closeLog()
		if err := fn(c); err != nil {
			cerr := CNIError(err)
			c.log.Error(strings.ToLower(cmd)+" failed", zap.Uint("code", cerr.Code), zap.String("msg", cerr.Msg), zap.String("details", cerr.Details))
			return cerr
		}
		c.log.Info(strings.ToLower(cmd) + " done")
		return nil
	}
}

// setup parses the config and CNI_ARGS, builds the logger, resolves the node and opens
// the datastore.
func (p *Plugin) setup(cmd string, args *skel.CmdArgs) (*call, func(), error) {
	conf, err := ParseConfig(args.StdinData)
	if err != nil {
		return nil, nil, err
	}
	k8s, err := ParseK8sArgs(args.Args, args.ContainerID)
	if err != nil {
		return nil, nil, err
	}
	newLogger := p.NewLogger
	if newLogger == nil {
		newLogger = NewLogger
	}
	log, err := newLogger(conf)
	if err != nil {
		return nil, nil, newErr(CodeInvalidConfig, "cannot open the log", err)
	}
	closeLog := func() { _ = log.Sync() }
	src := nodeSource{Getenv: p.Getenv, File: p.NodenameFile, Hostname: p.Hostname}
	if src.Getenv == nil {
		src.Getenv = os.Getenv
	}
	if src.File == "" {
		src.File = DefaultNodenameFile
	}
	if src.Hostname == nil {
		src.Hostname = os.Hostname
	}
	node, err := src.Nodename(conf)
	if err != nil {
		return nil, nil, newErr(CodeInvalidConfig, "cannot tell this node's name", err)
	}
	log = log.With(zap.String("cmd", cmd), zap.String("node", node))
	if args.ContainerID != "" {
		log = log.With(zap.String("containerID", k8s.ContainerID), zap.String("ifname", args.IfName))
	}
	if k8s.Pod != "" {
		log = log.With(zap.String("pod", k8s.Namespace+"/"+k8s.Pod))
	}
	newStore := p.NewStore
	if newStore == nil {
		newStore = NewKubeStore
	}
	store, err := newStore(conf)
	if err != nil {
		return nil, nil, err
	}
	if p.NewIPAM == nil {
		return nil, nil, newErr(CodeInternal, "the plugin was built without an allocator", nil)
	}
	out := p.Stdout
	if out == nil {
		out = os.Stdout
	}
	c := &call{conf: conf, args: args, k8s: k8s, node: node, log: log, store: store,
		ipam: p.NewIPAM(store, log.Named("ipam")), out: out}
	log.Debug("start", zap.String("netns", args.Netns), zap.String("cniVersion", conf.CNIVersion))
	return c, closeLog, nil
}

// NewKubeStore opens the datastore through the net config's kubeconfig; every request
// is bounded by datastore_timeout.
func NewKubeStore(conf *NetConf) (datastore.Store, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", conf.Kubeconfig)
	if err != nil {
		return nil, newErr(CodeInvalidConfig, "cannot load the kubeconfig "+conf.Kubeconfig, err)
	}
	cfg.Timeout = conf.DatastoreTimeout.Duration
	cfg.UserAgent = "tabby-cni"
	s, err := datastore.NewKube(cfg)
	if err != nil {
		return nil, newErr(CodeInvalidConfig, "cannot build a client from the kubeconfig "+conf.Kubeconfig, err)
	}
	return s, nil
}

// NewLogger is the default logger: JSON lines to log_file, or to stderr when it is
// empty (stdout carries the CNI result), at log_level.
func NewLogger(conf *NetConf) (*zap.Logger, error) {
	lvl, err := parseLevel(conf.LogLevel)
	if err != nil {
		return nil, err
	}
	var ws zapcore.WriteSyncer = zapcore.Lock(os.Stderr)
	var openErr error
	if conf.LogFile != "" {
		f, err := openLogFile(conf.LogFile)
		if err == nil {
			ws = zapcore.Lock(f)
		} else {
			openErr = err // never fail a pod over its log: fall back to stderr
		}
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), ws, lvl)
	log := zap.New(core).Named("tabby-cni").With(zap.Int("pid", os.Getpid()))
	if openErr != nil {
		log.Warn("cannot open log_file, logging to stderr", zap.Error(openErr))
	}
	return log, nil
}

func openLogFile(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create the directory of log_file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log_file: %w", err)
	}
	return f, nil
}

func parseLevel(s string) (zapcore.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return zapcore.DebugLevel, nil
	case "info":
		return zapcore.InfoLevel, nil
	case "warn", "warning", "":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return 0, fmt.Errorf("%q is not one of debug, info, warn, error", s)
}
