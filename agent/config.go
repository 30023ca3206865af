package agent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/tabbynet/tabby/agent/localapi"
	"github.com/tabbynet/tabby/bgp/controller"
	"github.com/tabbynet/tabby/datastore"
	"github.com/tabbynet/tabby/felix"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/clientcmd"
)

// Defaults of the agent's settings.
const (
	DefaultHealthAddr         = "127.0.0.1:9099"
	DefaultMetricsAddr        = "127.0.0.1:9091"
	DefaultSocket             = localapi.DefaultSocket
	DefaultNodenameFile       = "/var/lib/tabby/nodename"
	DefaultAutodetect         = "first-found"
	DefaultResyncInterval     = 90 * time.Second
	DefaultBGPSecretNamespace = controller.DefaultSecretNamespace
	DefaultLibvirtURI         = "qemu:///system"
	DefaultVMTapPrefix        = "tap,vnet"
	DefaultVMNamespace        = "default"
)

// Config is the agent's configuration, from flags and the environment.
type Config struct {
	NodeName       string
	Kubeconfig     string
	LogLevel       string
	LogFormat      string
	HealthAddr     string
	MetricsAddr    string
	Socket         string
	IP             string // the node's IPv4 address with prefix; "" means autodetect
	IPAutodetect   string
	NodenameFile   string
	ResyncInterval time.Duration
	// BGP runs the node's BGP speaker (the controller in bgp/controller).
	BGP bool
	// BGPSecretNamespace holds the Secrets that BGP passwords name.
	BGPSecretNamespace string
	// Policy enforces network policy with the eBPF datapath (felix.Config.Policy).
	Policy bool
	// BPFPinDir is where the policy datapath pins its maps, programs and links.
	BPFPinDir string
	// ProcSysRoot is where felix writes the workload interfaces' sysctls.
	ProcSysRoot string
	// VMEndpoints runs the libvirt watcher (package vmendpoint): guest taps become
	// WorkloadEndpoints. Off quietly (reported in status) where libvirt is absent.
	VMEndpoints bool
	// LibvirtURI is the libvirt connection the watcher follows.
	LibvirtURI string
	// VMTapPrefix is a comma-separated list: an ethernet interface of a guest becomes
	// an endpoint when its tap starts with one of them ("" means every one).
	VMTapPrefix string
	// VMNamespace holds the WorkloadEndpoints of guests whose metadata names none.
	VMNamespace string
	// VMDNS and VMDNSSearch are comma-separated lists the guests' DHCP offers carry:
	// name server addresses and search domains.
	VMDNS       string
	VMDNSSearch string
	ShowVersion bool
}

// setting is one flag and the environment variables that may set it, in order.
type setting struct {
	flag string
	env  []string
}

var settings = []setting{
	{"node-name", []string{"NODENAME", "TABBY_NODENAME"}},
	{"kubeconfig", []string{"KUBECONFIG"}},
	{"log-level", []string{"TABBY_LOG_LEVEL"}},
	{"log-format", []string{"TABBY_LOG_FORMAT"}},
	{"health-addr", []string{"TABBY_HEALTH_ADDR"}},
	{"metrics-addr", []string{"TABBY_METRICS_ADDR"}},
	{"socket", []string{"TABBY_SOCKET"}},
	{"ip", []string{"IP"}},
	{"ip-autodetect", []string{"IP_AUTODETECTION_METHOD"}},
	{"nodename-file", []string{"TABBY_NODENAME_FILE"}},
	{"resync-interval", []string{"TABBY_RESYNC_INTERVAL"}},
	{"bgp", []string{"TABBY_BGP"}},
	{"bgp-secret-namespace", []string{"TABBY_BGP_SECRET_NAMESPACE"}},
	{"policy", []string{"TABBY_POLICY"}},
	{"bpf-pin-dir", []string{"TABBY_BPF_PIN_DIR"}},
	{"proc-sys-root", []string{"TABBY_PROC_SYS_ROOT"}},
	{"vm-endpoints", []string{"TABBY_VM_ENDPOINTS"}},
	{"libvirt-uri", []string{"TABBY_LIBVIRT_URI"}},
	{"vm-tap-prefix", []string{"TABBY_VM_TAP_PREFIX"}},
	{"vm-namespace", []string{"TABBY_VM_NAMESPACE"}},
	{"vm-dns", []string{"TABBY_VM_DNS"}},
	{"vm-dns-search", []string{"TABBY_VM_DNS_SEARCH"}},
}

// FlagSet returns the agent's flags bound to c, with their defaults.
func (c *Config) FlagSet(out io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("tabby-node", pflag.ContinueOnError)
	fs.SetOutput(out)
	fs.SortFlags = false
	fs.StringVar(&c.NodeName, "node-name", "", "this node's name (env NODENAME or TABBY_NODENAME; default: the hostname)")
	fs.StringVar(&c.Kubeconfig, "kubeconfig", "", "kubeconfig of the datastore (env KUBECONFIG; default: in-cluster config)")
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error (env TABBY_LOG_LEVEL)")
	fs.StringVar(&c.LogFormat, "log-format", "json", "json or console (env TABBY_LOG_FORMAT)")
	fs.StringVar(&c.HealthAddr, "health-addr", DefaultHealthAddr, `address of /livez and /readyz; "" disables (env TABBY_HEALTH_ADDR)`)
	fs.StringVar(&c.MetricsAddr, "metrics-addr", DefaultMetricsAddr, `address of /metrics; "" disables (env TABBY_METRICS_ADDR)`)
	fs.StringVar(&c.Socket, "socket", DefaultSocket, "unix socket of the local API (env TABBY_SOCKET)")
	fs.StringVar(&c.IP, "ip", "", `the node's IPv4 address with prefix length, e.g. 10.0.0.2/24; "" or "autodetect" detects it (env IP)`)
	fs.StringVar(&c.IPAutodetect, "ip-autodetect", DefaultAutodetect, "how to detect the node's address: first-found, interface=REGEX, skip-interface=REGEX, can-reach=DEST or cidr=CIDR[,CIDR] (env IP_AUTODETECTION_METHOD)")
	fs.StringVar(&c.NodenameFile, "nodename-file", DefaultNodenameFile, `file the node name is written to for the CNI plugin; "" disables (env TABBY_NODENAME_FILE)`)
	fs.DurationVar(&c.ResyncInterval, "resync-interval", DefaultResyncInterval, "full resync period of the dataplane (env TABBY_RESYNC_INTERVAL)")
	fs.BoolVar(&c.BGP, "bgp", true, "run the BGP speaker: node-to-node mesh, BGPPeers, learned routes (env TABBY_BGP)")
	fs.StringVar(&c.BGPSecretNamespace, "bgp-secret-namespace", DefaultBGPSecretNamespace, "namespace of the Secrets BGP passwords name (env TABBY_BGP_SECRET_NAMESPACE)")
	fs.BoolVar(&c.Policy, "policy", true, "enforce network policy with the eBPF datapath; false removes Tabby's programs and pins (env TABBY_POLICY)")
	fs.StringVar(&c.BPFPinDir, "bpf-pin-dir", felix.DefaultBPFPinDir, "directory on a bpffs for the policy datapath's pins; one per agent (env TABBY_BPF_PIN_DIR)")
	fs.StringVar(&c.ProcSysRoot, "proc-sys-root", "/proc/sys", "where the workload interfaces' sysctls are written, e.g. /host/proc/sys with the host's /proc/sys/net mounted there in an unprivileged container (env TABBY_PROC_SYS_ROOT)")
	fs.BoolVar(&c.VMEndpoints, "vm-endpoints", true, "make libvirt guests' taps WorkloadEndpoints; off quietly where libvirt is absent (env TABBY_VM_ENDPOINTS)")
	fs.StringVar(&c.LibvirtURI, "libvirt-uri", DefaultLibvirtURI, "libvirt connection of the guests (env TABBY_LIBVIRT_URI)")
	fs.StringVar(&c.VMTapPrefix, "vm-tap-prefix", DefaultVMTapPrefix, `comma-separated prefixes of the guest taps that become endpoints; "" means every ethernet interface (env TABBY_VM_TAP_PREFIX)`)
	fs.StringVar(&c.VMNamespace, "vm-namespace", DefaultVMNamespace, "namespace of VM WorkloadEndpoints whose domain metadata names none (env TABBY_VM_NAMESPACE)")
	fs.StringVar(&c.VMDNS, "vm-dns", "", "comma-separated name server addresses the guests' DHCP offers carry (env TABBY_VM_DNS)")
	fs.StringVar(&c.VMDNSSearch, "vm-dns-search", "", "comma-separated search domains the guests' DHCP offers carry (env TABBY_VM_DNS_SEARCH)")
	fs.BoolVar(&c.ShowVersion, "version", false, "print the version and exit")
	return fs
}

// ParseConfig reads the configuration from args (without the program name) and the
// environment: a flag wins over its environment variable, which wins over the default.
// The node name falls back to hostname(). The result is validated; pflag.ErrHelp is
// returned after -h printed the usage to out.
func ParseConfig(args []string, getenv func(string) string, hostname func() (string, error), out io.Writer) (Config, error) {
	var c Config
	fs := c.FlagSet(out)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for _, s := range settings {
		if fs.Changed(s.flag) {
			continue
		}
		for _, name := range s.env {
			if v, ok := lookup(getenv, name); ok {
				if err := fs.Set(s.flag, v); err != nil {
					return c, fmt.Errorf("environment variable %s=%q: %w", name, v, err)
				}
				break
			}
		}
	}
	if c.ShowVersion {
		return c, nil
	}
	if c.NodeName == "" {
		h, err := hostname()
		if err != nil {
			return c, fmt.Errorf("no --node-name and no hostname: %w", err)
		}
		c.NodeName = h
	}
	c.NodeName = strings.ToLower(strings.TrimSpace(c.NodeName))
	return c, c.Validate()
}

// lookup reads an environment variable; an empty value counts as unset.
func lookup(getenv func(string) string, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

// Validate checks every setting and names the bad one.
func (c *Config) Validate() error {
	var errs []error
	if c.NodeName == "" {
		errs = append(errs, errors.New("--node-name: empty"))
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("--log-level: %w", err))
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		errs = append(errs, fmt.Errorf("--log-format: %q is not json or console", c.LogFormat))
	}
	for _, a := range []struct{ flag, v string }{{"--health-addr", c.HealthAddr}, {"--metrics-addr", c.MetricsAddr}} {
		if a.v == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(a.v); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("%s: %q is not host:port", a.flag, a.v))
		}
	}
	if c.Socket == "" {
		errs = append(errs, errors.New("--socket: empty"))
	}
	if c.BGP && c.BGPSecretNamespace == "" {
		errs = append(errs, errors.New("--bgp-secret-namespace: empty"))
	}
	if _, err := c.StaticIP(); err != nil {
		errs = append(errs, fmt.Errorf("--ip: %w", err))
	}
	if _, err := ParseMethod(c.IPAutodetect); err != nil {
		errs = append(errs, fmt.Errorf("--ip-autodetect: %w", err))
	}
	if c.Policy && !filepath.IsAbs(c.BPFPinDir) || c.Policy && filepath.Clean(c.BPFPinDir) == "/" {
		errs = append(errs, fmt.Errorf("--bpf-pin-dir: %q is not an absolute directory below /, e.g. %s", c.BPFPinDir, felix.DefaultBPFPinDir))
	}
	if c.ProcSysRoot != "" && !filepath.IsAbs(c.ProcSysRoot) {
		errs = append(errs, fmt.Errorf("--proc-sys-root: %q is not an absolute directory", c.ProcSysRoot))
	}
	if c.ResyncInterval <= 0 {
		errs = append(errs, fmt.Errorf("--resync-interval: %v is not positive", c.ResyncInterval))
	}
	if c.VMEndpoints {
		errs = append(errs, c.validateVM()...)
	}
	return errors.Join(errs...)
}

// validateVM checks the VM endpoint settings.
func (c *Config) validateVM() []error {
	var errs []error
	if c.LibvirtURI == "" {
		errs = append(errs, errors.New("--libvirt-uri: empty (e.g. "+DefaultLibvirtURI+")"))
	}
	if msgs := validation.IsDNS1123Label(c.VMNamespace); len(msgs) > 0 {
		errs = append(errs, fmt.Errorf("--vm-namespace: %q is not a namespace name: %s", c.VMNamespace, strings.Join(msgs, ", ")))
	}
	if _, err := c.VMDNSServers(); err != nil {
		errs = append(errs, fmt.Errorf("--vm-dns: %w", err))
	}
	for _, d := range splitList(c.VMDNSSearch) {
		if msgs := validation.IsDNS1123Subdomain(d); len(msgs) > 0 {
			errs = append(errs, fmt.Errorf("--vm-dns-search: %q is not a domain: %s", d, strings.Join(msgs, ", ")))
		}
	}
	for _, p := range c.VMTapPrefixes() {
		if len(p) > 14 || strings.ContainsAny(p, " /:") {
			errs = append(errs, fmt.Errorf("--vm-tap-prefix: %q is not the start of an interface name (at most 14 characters, no spaces, '/' or ':')", p))
		}
	}
	return errs
}

// VMTapPrefixes splits --vm-tap-prefix.
func (c *Config) VMTapPrefixes() []string { return splitList(c.VMTapPrefix) }

// VMDNSServers parses --vm-dns.
func (c *Config) VMDNSServers() ([]netip.Addr, error) {
	var out []netip.Addr
	for _, s := range splitList(c.VMDNS) {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("%q is not an IPv4 address", s)
		}
		out = append(out, a)
	}
	return out, nil
}

// VMDNSSearchDomains splits --vm-dns-search.
func (c *Config) VMDNSSearchDomains() []string { return splitList(c.VMDNSSearch) }

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// StaticIP is the address --ip gives, or an invalid prefix when the address is to be
// detected.
func (c *Config) StaticIP() (netip.Prefix, error) {
	if c.IP == "" || strings.EqualFold(c.IP, "autodetect") {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(c.IP)
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%q is not an IPv4 address with its prefix length, e.g. 10.0.0.2/24", c.IP)
	}
	return p, nil
}

// KubeStore opens the datastore through a kubeconfig (in-cluster configuration when
// path is empty).
func KubeStore(kubeconfig, userAgent string) (datastore.Store, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		if kubeconfig == "" {
			return nil, fmt.Errorf("no --kubeconfig and no in-cluster configuration: %w", err)
		}
		return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.UserAgent = userAgent
	s, err := datastore.NewKube(cfg)
	if err != nil {
		return nil, fmt.Errorf("datastore: %w", err)
	}
	return s, nil
}
