// Package localapi is the wire format and the client of tabby-node's local API: HTTP
// with JSON bodies over a unix socket on the node (default DefaultSocket), read by
// `tabbyctl node status` and `tabbyctl node routes`.
//
// It owns the paths, the JSON shapes and a small client that turns "nobody listens on
// the socket" into ErrNotRunning. It imports only the standard library, so tabbyctl
// reaches the agent without linking the agent.
package localapi

import "time"

// DefaultSocket is where tabby-node serves the local API unless told otherwise.
const DefaultSocket = "/var/run/tabby/tabby-node.sock"

// Paths of the local API; each answers GET only.
const (
	PathStatus    = "/status"
	PathEndpoints = "/endpoints"
	PathRoutes    = "/routes"
	PathBGPPeers  = "/bgp/peers"
	PathPolicy    = "/policy"
	// PathLogs: the agent's recent log lines (LogLines), for tabbyctl node diags;
	// ?lines=N asks for the last N only.
	PathLogs = "/logs"
)

// LogLines is the answer of GET /logs.
type LogLines struct {
	// Capacity is how many lines the agent keeps; Dropped how many older lines it no
	// longer has (overwritten, or left out by ?lines=N).
	Capacity int    `json:"capacity"`
	Dropped  uint64 `json:"dropped"`
	// Lines are JSON log entries, oldest first, one a string.
	Lines []string `json:"lines"`
}

// Status is the answer of GET /status: who the agent is, whether it is ready, and what
// the dataplane reports.
type Status struct {
	Node    string `json:"node"`
	Version string `json:"version"`
	// StartTime is when the agent started; Uptime is the time since, rounded to the
	// second, as a Go duration ("1h2m3s"); UptimeSeconds the same in seconds.
	StartTime     time.Time `json:"startTime"`
	Uptime        string    `json:"uptime"`
	UptimeSeconds float64   `json:"uptimeSeconds"`
	// Ready is what /readyz answers; NotReady says why it is false.
	Ready    bool     `json:"ready"`
	NotReady []string `json:"notReady,omitempty"`
	// NodeIP is the node's IPv4 address with its prefix length; NodeIPSource says how
	// it was found ("--ip", "first-found", "interface=eth.*", ...) and on which
	// interface.
	NodeIP       string `json:"nodeIP"`
	NodeIPSource string `json:"nodeIPSource"`
	// Registered is true once the tabby.dev Node resource holds the node's address.
	Registered bool            `json:"registered"`
	Datastore  DatastoreStatus `json:"datastore"`
	// HealthAddr and MetricsAddr are the addresses the agent's HTTP servers listen on
	// ("" when disabled).
	HealthAddr  string      `json:"healthAddr,omitempty"`
	MetricsAddr string      `json:"metricsAddr,omitempty"`
	Felix       FelixStatus `json:"felix"`
	// BGP is what GET /bgp/peers answers (absent from agents older than BGP).
	BGP *BGPStatus `json:"bgp,omitempty"`
	// Policy is what GET /policy answers (absent from agents older than policy).
	Policy *PolicyStatus `json:"policy,omitempty"`
	// VMs is what GET /vms answers (absent from agents older than VM endpoints).
	VMs *VMStatus `json:"vms,omitempty"`
}

// DatastoreStatus is the result of the agent's last datastore check.
type DatastoreStatus struct {
	Reachable bool      `json:"reachable"`
	LastCheck time.Time `json:"lastCheck,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// FelixStatus is the dataplane's report.
type FelixStatus struct {
	// InSync is true when the kernel matches the desired state of the last apply.
	InSync bool `json:"inSync"`
	// LastApply is when the dataplane last applied a change (absent if never).
	LastApply *time.Time  `json:"lastApply,omitempty"`
	LastError string      `json:"lastError,omitempty"`
	Endpoints []Endpoint  `json:"endpoints"`
	Routes    RouteCounts `json:"routes"`
}

// Endpoint is one local workload interface as the dataplane sees it.
type Endpoint struct {
	Namespace  string   `json:"namespace"`
	Name       string   `json:"name"`
	Workload   string   `json:"workload"`
	Interface  string   `json:"interface"`
	IPs        []string `json:"ips"`
	Programmed bool     `json:"programmed"`
	Message    string   `json:"message,omitempty"`
	// PolicyEnforced: the endpoint's policy is in the maps and Tabby's programs are on
	// its interface (only when policy is enabled); PolicyMessage says why not.
	PolicyEnforced bool   `json:"policyEnforced,omitempty"`
	PolicyMessage  string `json:"policyMessage,omitempty"`
}

// RouteCounts counts the routes the dataplane owns in the kernel.
type RouteCounts struct {
	Local     int `json:"local"`
	Blackhole int `json:"blackhole"`
	Learned   int `json:"learned"`
}

// Route is one kernel route the dataplane owns.
type Route struct {
	Dst      string   `json:"dst"`
	Dev      string   `json:"dev,omitempty"`
	Via      []string `json:"via,omitempty"`
	Protocol int      `json:"protocol"`
	// Kind is local, blackhole or learned.
	Kind string `json:"kind"`
}

// EndpointList is the answer of GET /endpoints.
type EndpointList struct {
	Endpoints []Endpoint `json:"endpoints"`
}

// RouteList is the answer of GET /routes.
type RouteList struct {
	Routes []Route `json:"routes"`
}

// BGPStatus is the answer of GET /bgp/peers: the node's BGP sessions as its speaker
// sees them, and what the BGP controller could not apply.
type BGPStatus struct {
	// Enabled is false when tabby-node runs with --bgp=false (then nothing else is set).
	Enabled  bool      `json:"enabled"`
	Peers    []BGPPeer `json:"peers"`
	Problems []string  `json:"problems,omitempty"`
}

// BGPPeer is one BGP session.
type BGPPeer struct {
	Address string `json:"address"`
	// Type is mesh, global, node or reflector.
	Type  string `json:"type"`
	ASN   uint32 `json:"asn"`
	State string `json:"state"`
	// Since is when the session entered State.
	Since              *time.Time `json:"since,omitempty"`
	PrefixesReceived   int        `json:"prefixesReceived"`
	PrefixesAccepted   int        `json:"prefixesAccepted"`
	PrefixesAdvertised int        `json:"prefixesAdvertised"`
	// LastError is why the session last went down.
	LastError string `json:"lastError,omitempty"`
	AdminDown bool   `json:"adminDown,omitempty"`
}

// PolicyStatus is the answer of GET /policy: what the node's policy maps hold.
type PolicyStatus struct {
	// Enabled is false when tabby-node runs with --policy=false (then nothing else is set).
	Enabled bool `json:"enabled"`
	// Programmed: the maps hold the policy compiled from the objects in Sources and
	// every local endpoint's programs are attached; Error says why not.
	Programmed bool   `json:"programmed"`
	Error      string `json:"error,omitempty"`
	// Sources are the policy and network set objects the maps were written from, at
	// their resource versions: after writing an object, wait for its version here.
	Sources []PolicySource `json:"sources"`
	// Enforced and NotEnforced count local endpoints; Rules counts compiled rules.
	Enforced    int `json:"enforced"`
	NotEnforced int `json:"notEnforced"`
	Rules       int `json:"rules"`
}

// PolicySource is one object the policy maps were written from.
type PolicySource struct {
	// Kind is K8sNetworkPolicy, NetworkPolicy, GlobalNetworkPolicy, NetworkSet or
	// GlobalNetworkSet.
	Kind            string `json:"kind"`
	Namespace       string `json:"namespace,omitempty"`
	Name            string `json:"name"`
	ResourceVersion string `json:"resourceVersion"`
}

// Programs reports whether the maps were written from the object kind
// namespace/name at resourceVersion rv; rv "" asks whether the object is absent.
func (p *PolicyStatus) Programs(kind, namespace, name, rv string) bool {
	for _, s := range p.Sources {
		if s.Kind == kind && s.Namespace == namespace && s.Name == name {
			return rv != "" && s.ResourceVersion == rv
		}
	}
	return rv == ""
}

// Error is the body of every answer with a status code other than 200.
type Error struct {
	Error string `json:"error"`
}
