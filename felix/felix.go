package felix

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix/calc"
	"github.com/tabbynet/tabby/felix/dataplane"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"go.uber.org/zap"
)

// Defaults of Config.
const (
	// DefaultResyncInterval is how often the whole dataplane is compared with the kernel.
	DefaultResyncInterval = 90 * time.Second
	// DefaultRouteCleanupGracePeriod is how long a local workload route that nothing
	// wants is kept before it is deleted.
	DefaultRouteCleanupGracePeriod = 10 * time.Second
)

// Config configures a Felix.
type Config struct {
	// NodeName is this node's name (WorkloadEndpoint spec.node, block affinity host:<node>).
	NodeName string
	// Store is the datastore to watch.
	Store datastore.Store
	// Logger is injected; nil means no logs.
	Logger *zap.Logger
	// Registry gets felix's metrics; nil means no metrics are registered.
	Registry prometheus.Registerer
	// ResyncInterval is the period of the full desired-vs-kernel resync; default 90s.
	ResyncInterval time.Duration
	// NetlinkHandle is the one persistent netlink handle felix uses; default a new handle
	// in NetNSPath, or in the current network namespace. Felix never closes a handle it
	// was given; one it made is closed when Run returns.
	NetlinkHandle *netlink.Handle
	// NetNSPath (optional, e.g. /run/netns/NAME) is the network namespace of the node
	// when it is not the current one: sysctls are written, and link and route events
	// watched, there. Set it whenever NetlinkHandle works in another namespace.
	NetNSPath string
	// RouteCleanupGracePeriod (optional) keeps a local workload route (protocol 116,
	// through an interface) that no endpoint wants for this long after felix first sees
	// it, before deleting it: the CNI plugin writes a new pod's route before the pod's
	// WorkloadEndpoint reaches felix. A route felix wanted and then withdrew (its
	// endpoint was deleted) goes at once. Default 10s; negative means no grace.
	RouteCleanupGracePeriod time.Duration
	// Policy turns on network policy enforcement: felix also watches the policy kinds
	// and namespaces, loads the eBPF datapath, writes its maps and attaches its
	// programs to the local workload interfaces. Off by default.
	Policy bool
	// BPFPinDir (with Policy) is where the datapath is pinned, on a bpffs; default
	// DefaultBPFPinDir.
	BPFPinDir string
	// ProcSysRoot is where the workload interfaces' sysctls are written (default
	// /proc/sys): e.g. /host/proc/sys with the host's /proc/sys/net mounted there, in a
	// container whose own /proc/sys is read-only.
	ProcSysRoot string
}

// LearnedRoute is a prefix learned from a BGP peer and its next hops.
type LearnedRoute struct {
	Prefix   netip.Prefix
	NextHops []netip.Addr
}

// Status is what felix reports about the dataplane.
type Status struct {
	// InSync: the datastore is synced, the first apply is done and the last one had no error.
	InSync    bool             `json:"inSync"`
	LastApply time.Time        `json:"lastApply"`
	LastError string           `json:"lastError"`
	Endpoints []EndpointStatus `json:"endpoints"`
	Routes    RouteCounts      `json:"routes"`
	// Policy is nil unless Config.Policy.
	Policy *PolicyStatus `json:"policy,omitempty"`
}

// PolicyStatus is what the policy enforcement holds (Config.Policy).
type PolicyStatus struct {
	Enabled bool `json:"enabled"`
	// Programmed: the maps hold the policy compiled from the datastore's current
	// objects and every local endpoint's programs are attached.
	Programmed bool `json:"programmed"`
	// Error says what is wrong when Programmed is false (compile error, map write,
	// endpoints not enforced).
	Error string `json:"error,omitempty"`
	// Sources are the policy and network set objects, at the resource versions the
	// maps were written from: a client that wrote an object waits for its version here.
	Sources []PolicySource `json:"sources"`
	// Enforced and NotEnforced count local endpoints; Rules counts compiled rules.
	Enforced    int `json:"enforced"`
	NotEnforced int `json:"notEnforced"`
	Rules       int `json:"rules"`
}

// PolicySource is one policy or network set object the policy maps were written from.
type PolicySource struct {
	// Kind is K8sNetworkPolicy, NetworkPolicy, GlobalNetworkPolicy, NetworkSet or
	// GlobalNetworkSet.
	Kind            string `json:"kind"`
	Namespace       string `json:"namespace,omitempty"`
	Name            string `json:"name"`
	ResourceVersion string `json:"resourceVersion"`
}

// EndpointStatus is one local workload endpoint's state.
type EndpointStatus struct {
	Namespace  string   `json:"namespace"`
	Name       string   `json:"name"`
	Workload   string   `json:"workload"`
	Interface  string   `json:"interface"`
	IPs        []string `json:"ips"`
	Programmed bool     `json:"programmed"`
	Message    string   `json:"message"`
	// PolicyProgrammed (Config.Policy only): the endpoint's policy is in the maps and
	// the programs are on its interface; PolicyMessage says why not.
	PolicyProgrammed bool   `json:"policyProgrammed,omitempty"`
	PolicyMessage    string `json:"policyMessage,omitempty"`
}

// RouteCounts counts Tabby's routes in the kernel by kind.
type RouteCounts struct {
	Local     int `json:"local"`
	Blackhole int `json:"blackhole"`
	Learned   int `json:"learned"`
}

// RouteInfo is one of Tabby's routes in the kernel.
type RouteInfo struct {
	Dst      string   `json:"dst"`
	Dev      string   `json:"dev"`
	Via      []string `json:"via"`
	Protocol string   `json:"protocol"`
	Kind     string   `json:"kind"` // local, blackhole or learned
}

// Felix programs one node's routes and workload sysctls.
type Felix struct {
	explain   *explainHub // what policy explain and the drop stream read
	cfg       Config
	log       *zap.Logger
	h         *netlink.Handle
	ownHandle bool
	m         *metrics
	kick      chan struct{}

	mu           sync.Mutex // guards the inputs below
	graph        *calc.Graph
	learned      []LearnedRoute
	learnedDirty bool
	learnedSeen  bool
	// learnedDelta holds changes given after the last full set was taken: prefix ->
	// next hops, nil for a withdrawal.
	learnedDelta map[netip.Prefix][]netip.Addr
	synced       map[string]bool
	watchErrs    map[string]string
	linkQ        []netlink.LinkUpdate
	routeQ       []dataplane.RouteEvent
	needResync   bool
	running      bool
	pol          *policyInputs // nil unless Config.Policy

	smu      sync.Mutex // guards the reported state below
	status   Status
	epStatus map[string]EndpointStatus
	ready    bool
	changed  chan struct{} // closed and replaced whenever the status changes
}

// watched names the datastore watches that must sync before felix deletes anything.
var watched = []string{"WorkloadEndpoint", "IPAMBlock"}

// New checks cfg and prepares a Felix; Run starts it.
func New(cfg Config) (*Felix, error) {
	if cfg.NodeName == "" {
		return nil, errors.New("felix: no node name")
	}
	if cfg.Store == nil {
		return nil, errors.New("felix: no datastore")
	}
	if cfg.ResyncInterval <= 0 {
		cfg.ResyncInterval = DefaultResyncInterval
	}
	switch {
	case cfg.RouteCleanupGracePeriod == 0:
		cfg.RouteCleanupGracePeriod = DefaultRouteCleanupGracePeriod
	case cfg.RouteCleanupGracePeriod < 0:
		cfg.RouteCleanupGracePeriod = 0
	}
	if cfg.BPFPinDir == "" {
		cfg.BPFPinDir = DefaultBPFPinDir
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	log = log.With(zap.String("node", cfg.NodeName))
	f := &Felix{cfg: cfg, log: log, h: cfg.NetlinkHandle, kick: make(chan struct{}, 1),
		graph: calc.NewGraph(cfg.NodeName, log.Named("calc")), synced: map[string]bool{},
		watchErrs: map[string]string{}, epStatus: map[string]EndpointStatus{}, changed: make(chan struct{}),
		explain: &explainHub{subs: map[chan DropEvent]struct{}{}}}
	if cfg.Policy {
		f.pol = newPolicyInputs()
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, err
	}
	f.m = m
	if f.h == nil {
		if f.h, err = newHandle(cfg.NetNSPath); err != nil {
			return nil, err
		}
		f.ownHandle = true
	}
	return f, nil
}

func newHandle(nsPath string) (*netlink.Handle, error) {
	if nsPath == "" {
		h, err := netlink.NewHandle()
		if err != nil {
			return nil, fmt.Errorf("felix: netlink handle: %w", err)
		}
		return h, nil
	}
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("felix: open network namespace %s: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return nil, fmt.Errorf("felix: netlink handle in %s: %w", nsPath, err)
	}
	return h, nil
}

// Run watches the datastore and programs the kernel until ctx ends, then returns nil.
// It leaves every route and sysctl in place: a restarted felix adopts them.
func (f *Felix) Run(ctx context.Context) error {
	f.mu.Lock()
	if f.running {
		f.mu.Unlock()
		return errors.New("felix: already running")
	}
	f.running = true
	f.mu.Unlock()
	if f.ownHandle {
		defer f.h.Close()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var nst *dataplane.NSThread
	if f.cfg.NetNSPath != "" {
		var err error
		if nst, err = dataplane.NewNSThread(f.cfg.NetNSPath); err != nil {
			return fmt.Errorf("felix: %w", err)
		}
		defer nst.Close()
	}
	l := &loop{f: f, rt: dataplane.NewRouteTable(f.h, f.log.Named("routes")),
		sys: dataplane.NewSysctls(nst, f.cfg.ProcSysRoot, f.log.Named("sysctls"))}
	l.rt.SetGracePeriod(f.cfg.RouteCleanupGracePeriod)
	if f.pol != nil {
		l.enf = newEnforcer(f, nst)
		defer l.enf.close()
	} else if f.cfg.BPFPinDir != "" {
		f.removeDatapath(nst)
	}
	// NetNSPath is the handle's namespace (see Config), so the batcher writes there too.
	if b, err := dataplane.NewBatcher(f.cfg.NetNSPath); err != nil {
		f.log.Warn("no batched route writes; writing routes one at a time", zap.Error(err))
	} else {
		defer b.Close()
		l.rt.SetBatcher(b)
	}

	err := dataplane.Subscribe(ctx, f.cfg.NetNSPath, dataplane.Handlers{
		Link:  f.onLink,
		Route: f.onRoute,
		Lost:  f.onEventsLost,
	})
	if err != nil {
		f.log.Warn("no kernel events; relying on resyncs to repair drift", zap.Error(err))
	}
	var wg sync.WaitGroup
	f.startWatches(ctx, &wg)
	l.run(ctx)
	cancel()
	wg.Wait()
	return nil
}

// SetLearnedRoutes replaces the whole set of learned routes. It only records them (the
// apply goroutine programs them); the NextHops slices must not be modified afterwards.
//
// Until the first call, felix deletes and replaces no learned route (protocol 117)
// it finds in the kernel: after a restart they stay until the BGP speaker has its table
// again. Call it once the speaker has its initial table (End-of-RIB from the peers),
// and with nil when BGP is off, so that stale learned routes can go.
func (f *Felix) SetLearnedRoutes(routes []LearnedRoute) {
	cp := make([]LearnedRoute, len(routes))
	copy(cp, routes)
	f.mu.Lock()
	f.learned, f.learnedDirty, f.learnedSeen = cp, true, true
	f.learnedDelta = nil // the full set supersedes changes not yet taken
	f.mu.Unlock()
	f.wake()
}

// UpdateLearnedRoutes changes the set of learned routes by routes (added or with new
// next hops) and withdrawn (gone), at the cost of the change, not of the set: for a
// BGP table that changes a little at a time. SetLearnedRoutes must have been called
// once before; until then the changes are only recorded. The NextHops slices must not
// be modified afterwards.
func (f *Felix) UpdateLearnedRoutes(routes []LearnedRoute, withdrawn []netip.Prefix) {
	if len(routes) == 0 && len(withdrawn) == 0 {
		return
	}
	f.mu.Lock()
	if f.learnedDelta == nil {
		f.learnedDelta = make(map[netip.Prefix][]netip.Addr, len(routes)+len(withdrawn))
	}
	for _, p := range withdrawn {
		f.learnedDelta[p] = nil
	}
	for _, r := range routes {
		if len(r.NextHops) == 0 {
			f.learnedDelta[r.Prefix] = nil
			continue
		}
		f.learnedDelta[r.Prefix] = r.NextHops
	}
	f.mu.Unlock()
	f.wake()
}

// wake asks the apply goroutine for a run; runs requested while one is going coalesce.
func (f *Felix) wake() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

func (f *Felix) onLink(u netlink.LinkUpdate) {
	f.mu.Lock()
	f.linkQ = append(f.linkQ, u)
	f.mu.Unlock()
	f.wake()
}

func (f *Felix) onRoute(u netlink.RouteUpdate) {
	e, ok := dataplane.NewRouteEvent(u)
	if !ok {
		return
	}
	f.mu.Lock()
	f.routeQ = append(f.routeQ, e)
	f.mu.Unlock()
	f.wake()
}

func (f *Felix) onEventsLost(err error) {
	if err != nil {
		f.log.Warn("kernel event subscription lost; resyncing", zap.Error(err))
	}
	f.mu.Lock()
	f.needResync = true
	f.mu.Unlock()
	f.wake()
}

// Routes lists Tabby's routes in the kernel (a netlink dump; for `tabbyctl node routes`).
func (f *Felix) Routes() ([]RouteInfo, error) {
	rs, err := dataplane.ListRoutes(f.h)
	if err != nil {
		return nil, fmt.Errorf("felix: %w", err)
	}
	out := make([]RouteInfo, len(rs))
	for i, r := range rs {
		ri := RouteInfo{Dst: r.Dst.String(), Dev: r.Dev, Protocol: fmt.Sprint(r.Protocol), Kind: r.Kind.String(),
			Via: make([]string, len(r.Via))}
		for j, v := range r.Via {
			ri.Via[j] = v.String()
		}
		out[i] = ri
	}
	return out, nil
}
