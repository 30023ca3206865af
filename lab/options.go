package lab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/tabbynet/tabby/test/netnode"
	"github.com/tabbynet/tabby/test/router"
)

// Defaults of the options.
const (
	DefaultName        = "tabbylab"
	DefaultStateDir    = "/run/tabby-lab"
	DefaultNodes       = 3
	DefaultPodsPerNode = 2
	DefaultTor         = "frr"
	DefaultTimeout     = 5 * time.Minute
	// StateDirEnv overrides DefaultStateDir.
	StateDirEnv = "TABBY_LAB_DIR"
)

// The lab's address plan. Every address lives inside the lab's own namespaces (the
// fabric's bridge, the nodes, the ToR, the pods), never in the host's; the test suites
// use 10.66-10.77, so these do not meet them even if both ran in one namespace.
var (
	FabricNet  = netip.MustParsePrefix("10.90.0.0/24")   // node i is .i+1, the ToR .254
	UplinksNet = netip.MustParsePrefix("10.90.255.0/24") // the nodes' /30s to their stubs
	PoolNet    = netip.MustParsePrefix("10.91.0.0/16")   // the default IPPool
)

// AS numbers and names of the lab's objects.
const (
	TorAS        = 65000
	NodeAS       = 64512
	PoolName     = "default-ipv4"
	PoolBlock    = 26
	PodNamespace = "demo"
	TorPeerName  = "tor"
	rrPeerName   = "route-reflectors"
	rrLabel      = "route-reflector"
	rrClusterID  = "224.0.0.1"
)

// Limits of the options (a lab runs on one machine, often with 2 CPUs).
const (
	maxNodes       = 16
	maxPodsPerNode = 16
)

// Options configure a lab. A zero field takes its default (see Defaults), except
// PodsPerNode.
type Options struct {
	// Name starts every namespace, node and file name the lab makes ("tabbylab").
	Name string `json:"name"`
	// StateDir holds the lab's state, logs, kubeconfig and sockets (/run/tabby-lab).
	StateDir string `json:"stateDir"`
	// BinDir holds tabby-node and tabby-cni (default: next to the running executable).
	BinDir string `json:"binDir,omitempty"`
	// Nodes is the number of nodes (3).
	Nodes int `json:"nodes"`
	// PodsPerNode is the number of pods on each node; 0 is none (tabbyctl's default is
	// DefaultPodsPerNode).
	PodsPerNode int `json:"podsPerNode"`
	// Tor is the top-of-rack router: frr, bird, gobgpd or none.
	Tor string `json:"tor"`
	// RouteReflector turns the node-to-node mesh off and makes node a the route
	// reflector of the others.
	RouteReflector bool `json:"routeReflector"`
	// VM asks for a libvirt guest, vm-a1 on node a (tabbyctl's default); where libvirt
	// or QEMU cannot run, the lab says why and runs without it.
	VM bool `json:"vm"`
	// Timeout bounds lab up: the bring-up until the lab is ready.
	Timeout time.Duration `json:"-"`
}

// Defaults returns o with the defaults filled in.
func (o Options) Defaults() Options {
	if o.Name == "" {
		o.Name = DefaultName
	}
	if o.StateDir == "" {
		o.StateDir = StateDirFromEnv()
	}
	if o.Nodes == 0 {
		o.Nodes = DefaultNodes
	}
	if o.Tor == "" {
		o.Tor = DefaultTor
	}
	if o.Timeout == 0 {
		o.Timeout = DefaultTimeout
	}
	return o
}

// StateDirFromEnv is $TABBY_LAB_DIR, else DefaultStateDir.
func StateDirFromEnv() string {
	if d := os.Getenv(StateDirEnv); d != "" {
		return d
	}
	return DefaultStateDir
}

var nameRe = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)

// ValidateName checks a lab name: a lower-case letter, then up to 11 letters or digits
// (it starts namespace and interface names, which are short).
func ValidateName(name string) error {
	if !nameRe.MatchString(name) {
		return fmt.Errorf("lab name %q: want a lower-case letter followed by at most 11 lower-case letters or digits", name)
	}
	return nil
}

// Validate checks options that have their defaults.
func (o Options) Validate() error {
	var errs []error
	if err := ValidateName(o.Name); err != nil {
		errs = append(errs, err)
	}
	if err := validateStateDir(o.StateDir); err != nil {
		errs = append(errs, err)
	}
	if o.Nodes < 1 || o.Nodes > maxNodes {
		errs = append(errs, fmt.Errorf("--nodes %d: want 1 to %d", o.Nodes, maxNodes))
	}
	if o.PodsPerNode < 0 || o.PodsPerNode > maxPodsPerNode {
		errs = append(errs, fmt.Errorf("--pods-per-node %d: want 0 to %d", o.PodsPerNode, maxPodsPerNode))
	}
	if o.Tor != "none" {
		if _, err := router.ParseKind(o.Tor); err != nil {
			errs = append(errs, fmt.Errorf("--tor %q: want frr, bird, gobgpd or none", o.Tor))
		}
	}
	if o.RouteReflector && o.Nodes < 2 {
		errs = append(errs, errors.New("--route-reflector needs at least 2 nodes"))
	}
	if o.Timeout < 0 {
		errs = append(errs, fmt.Errorf("--timeout %v: want a positive duration", o.Timeout))
	}
	return errors.Join(errs...)
}

// validateStateDir wants an absolute, clean path that is not a system directory (lab
// down removes it) and short enough for the unix sockets made under it.
func validateStateDir(dir string) error {
	switch {
	case dir == "" || !filepath.IsAbs(dir) || filepath.Clean(dir) != dir:
		return fmt.Errorf("state directory %q: want an absolute, clean path", dir)
	case strings.Count(dir, "/") < 2:
		return fmt.Errorf("state directory %q: want a directory of its own, at least two levels deep (lab down removes it)", dir)
	case len(dir) > 60:
		return fmt.Errorf("state directory %q: at most 60 bytes (unix socket paths are made under it)", dir)
	}
	return nil
}

// torKind is the router kind of o.Tor; ok is false for none.
func (o Options) torKind() (router.Kind, bool) {
	if o.Tor == "none" {
		return "", false
	}
	k, err := router.ParseKind(o.Tor)
	return k, err == nil
}

// bgpMode describes the iBGP topology.
func (o Options) bgpMode() string {
	if o.RouteReflector {
		return "route reflector on node a (mesh off)"
	}
	return "node-to-node mesh"
}

// torDescription names the ToR for people.
func (o Options) torDescription() string {
	k, ok := o.torKind()
	if !ok {
		return "no ToR"
	}
	return "ToR " + string(k)
}

// Args are the flags that give o to another tabbyctl (the supervisor).
func (o Options) Args() []string {
	args := []string{"--name", o.Name, "--state-dir", o.StateDir, "--nodes", fmt.Sprint(o.Nodes),
		"--pods-per-node", fmt.Sprint(o.PodsPerNode), "--tor", o.Tor, "--timeout", o.Timeout.String()}
	if o.BinDir != "" {
		args = append(args, "--bin-dir", o.BinDir)
	}
	if o.RouteReflector {
		args = append(args, "--route-reflector")
	}
	args = append(args, fmt.Sprintf("--vm=%v", o.VM))
	return args
}

// findBinDir is o.BinDir, else the running executable's directory; it must hold
// tabby-node and tabby-cni.
func findBinDir(o Options) (string, error) {
	dir := o.BinDir
	if dir == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("locate the running executable: %w", err)
		}
		if exe, err = filepath.EvalSymlinks(exe); err != nil {
			return "", fmt.Errorf("locate the running executable: %w", err)
		}
		dir = filepath.Dir(exe)
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for _, b := range []string{"tabby-node", "tabby-cni"} {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode().Perm()&0o111 == 0 {
			return "", fmt.Errorf("no executable %s in %s: build the binaries (make build) or pass --bin-dir", b, dir)
		}
	}
	return dir, nil
}

// findRepo is the Tabby source tree (for the CRDs and hack/ scripts): the parent of
// the bin directory (bin/..), else the working directory or one of its parents, else
// where this package was compiled from.
func findRepo(binDir string) (string, error) {
	const crds = "charts/tabby/crds"
	var cands []string
	if binDir != "" {
		cands = append(cands, filepath.Dir(binDir))
	}
	if wd, err := os.Getwd(); err == nil {
		for d := wd; ; d = filepath.Dir(d) {
			cands = append(cands, d)
			if filepath.Dir(d) == d {
				break
			}
		}
	}
	if root, err := netnode.RepoRoot(); err == nil {
		cands = append(cands, root)
	}
	for _, c := range cands {
		if fi, err := os.Stat(filepath.Join(c, crds)); err == nil && fi.IsDir() {
			return c, nil
		}
	}
	return "", fmt.Errorf("cannot find the Tabby source tree (%s): run from the repository", crds)
}
