package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/tabbynet/tabby/agent/localapi"
)

// Names the plugin answers to in a net config.
const (
	PluginType = "tabby-cni"
	IPAMType   = "tabby-ipam"
)

// Defaults of the net config.
const (
	DefaultMTU              = 1500
	DefaultLogLevel         = "warn"
	DefaultDatastoreTimeout = 10 * time.Second
	// DefaultPolicySetupTimeout is policy_setup_timeout's default.
	DefaultPolicySetupTimeout = 10 * time.Second
	// DefaultNodenameFile is where tabby-node writes the node's name.
	DefaultNodenameFile = "/var/lib/tabby/nodename"
	// EnvNodename overrides the node name when the net config has none.
	EnvNodename = "TABBY_NODENAME"
)

// NetConf is the plugin's net config: the JSON the runtime passes on stdin.
type NetConf struct {
	CNIVersion string `json:"cniVersion"`
	Name       string `json:"name"`
	Type       string `json:"type"`
	// Kubeconfig is the path of the kubeconfig the datastore is reached through.
	Kubeconfig string `json:"kubeconfig"`
	// Nodename names this node; empty means $TABBY_NODENAME, then
	// /var/lib/tabby/nodename, then the hostname.
	Nodename string `json:"nodename,omitempty"`
	// MTU of both sides of the veth (default 1500).
	MTU int `json:"mtu,omitempty"`
	// LogLevel: debug, info, warn (default) or error.
	LogLevel string `json:"log_level,omitempty"`
	// LogFile receives the log; empty means stderr (stdout carries the CNI result).
	LogFile string `json:"log_file,omitempty"`
	// DatastoreTimeout bounds each datastore call: a Go duration ("10s") or seconds.
	DatastoreTimeout Duration `json:"datastore_timeout,omitempty"`
	// AgentSocket is tabby-node's local API socket (default
	// /var/run/tabby/tabby-node.sock): ADD asks it whether the pod's policy is enforced.
	AgentSocket string `json:"agent_socket,omitempty"`
	// PolicySetupTimeout is how long ADD waits for tabby-node to report the pod's
	// policy enforced before it fails (and undoes everything): a duration or seconds,
	// default 10s; 0 does not wait. Nothing is waited for when tabby-node runs with
	// policy off.
	PolicySetupTimeout *Duration `json:"policy_setup_timeout,omitempty"`
	// IPAM is accepted for compatibility; Tabby IPAM is built in (type tabby-ipam).
	IPAM struct {
		Type string `json:"type,omitempty"`
	} `json:"ipam,omitempty"`
	// RawPrevResult is the result of the ADD, given to CHECK.
	RawPrevResult map[string]any `json:"prevResult,omitempty"`
	// ValidAttachments is what GC keeps. Absent means none (every attachment of this
	// network on this node is collected), as libcni and cnitool send it.
	ValidAttachments []types.GCAttachment `json:"cni.dev/valid-attachments,omitempty"`
	// LegacyAttachments is the key the 1.1.0 spec text first used for the same list.
	LegacyAttachments []types.GCAttachment `json:"cni.dev/attachments,omitempty"`
}

// Duration is a time.Duration that reads "10s" or a number of seconds from JSON.
type Duration struct{ time.Duration }

// UnmarshalJSON accepts "1m30s" or 90.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		v, err := time.ParseDuration(s)
		if err != nil {
			return fmt.Errorf("not a duration such as \"10s\": %q", s)
		}
		d.Duration = v
		return nil
	}
	var secs float64
	if err := json.Unmarshal(b, &secs); err != nil {
		return fmt.Errorf("not a duration such as \"10s\" or a number of seconds: %s", b)
	}
	d.Duration = time.Duration(secs * float64(time.Second))
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// ParseConfig reads a net config, fills the defaults and checks every field; errors are
// CNI code 7 (invalid network config) and name the field.
func ParseConfig(stdin []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(stdin, conf); err != nil {
		return nil, newErr(CodeInvalidConfig, "cannot parse the network config", err)
	}
	if conf.MTU == 0 {
		conf.MTU = DefaultMTU
	}
	if conf.LogLevel == "" {
		conf.LogLevel = DefaultLogLevel
	}
	if conf.DatastoreTimeout.Duration == 0 {
		conf.DatastoreTimeout.Duration = DefaultDatastoreTimeout
	}
	if conf.AgentSocket == "" {
		conf.AgentSocket = localapi.DefaultSocket
	}
	if conf.PolicySetupTimeout == nil {
		conf.PolicySetupTimeout = &Duration{DefaultPolicySetupTimeout}
	}
	if err := conf.validate(); err != nil {
		return nil, newErr(CodeInvalidConfig, "invalid network config", err)
	}
	return conf, nil
}

func (c *NetConf) validate() error {
	var errs []error
	if c.Type != PluginType {
		errs = append(errs, fmt.Errorf("type: %q is not %q", c.Type, PluginType))
	}
	if c.IPAM.Type != "" && c.IPAM.Type != IPAMType {
		errs = append(errs, fmt.Errorf("ipam.type: %q is not supported: Tabby IPAM is built in (use %q or leave it out)", c.IPAM.Type, IPAMType))
	}
	if c.Kubeconfig == "" {
		errs = append(errs, errors.New("kubeconfig: required: the path of the kubeconfig the datastore is reached through"))
	}
	if c.MTU < 68 || c.MTU > 65535 {
		errs = append(errs, fmt.Errorf("mtu: %d is not between 68 and 65535", c.MTU))
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("log_level: %w", err))
	}
	if c.DatastoreTimeout.Duration < 0 {
		errs = append(errs, fmt.Errorf("datastore_timeout: %v is negative", c.DatastoreTimeout.Duration))
	}
	if c.PolicySetupTimeout != nil && c.PolicySetupTimeout.Duration < 0 {
		errs = append(errs, fmt.Errorf("policy_setup_timeout: %v is negative", c.PolicySetupTimeout.Duration))
	}
	return errors.Join(errs...)
}

// validAttachments returns the GC keep-list, from either key.
func (c *NetConf) validAttachments() []types.GCAttachment {
	return append(append([]types.GCAttachment{}, c.ValidAttachments...), c.LegacyAttachments...)
}

// nodeSource is where the node name may come from, in order.
type nodeSource struct {
	Getenv   func(string) string
	File     string
	Hostname func() (string, error)
}

// Nodename resolves this node's name: the net config's nodename, else $TABBY_NODENAME,
// else the content of the nodename file, else the hostname. It is lower-cased, as
// kubelet does with a hostname.
func (s nodeSource) Nodename(conf *NetConf) (string, error) {
	if n := strings.TrimSpace(conf.Nodename); n != "" {
		return strings.ToLower(n), nil
	}
	if s.Getenv != nil {
		if n := strings.TrimSpace(s.Getenv(EnvNodename)); n != "" {
			return strings.ToLower(n), nil
		}
	}
	if s.File != "" {
		b, err := os.ReadFile(s.File)
		if err == nil {
			if n := strings.TrimSpace(string(b)); n != "" {
				return strings.ToLower(n), nil
			}
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("read node name from %s: %w", s.File, err)
		}
	}
	if s.Hostname != nil {
		h, err := s.Hostname()
		if err != nil {
			return "", fmt.Errorf("node name: no nodename in the config, $%s or %s, and no hostname: %w", EnvNodename, s.File, err)
		}
		if h = strings.TrimSpace(h); h != "" {
			return strings.ToLower(h), nil
		}
	}
	return "", fmt.Errorf("node name: set nodename in the config, $%s or %s", EnvNodename, s.File)
}

// K8sArgs are the Kubernetes keys of CNI_ARGS.
type K8sArgs struct {
	Namespace   string // K8S_POD_NAMESPACE
	Pod         string // K8S_POD_NAME
	ContainerID string // K8S_POD_INFRA_CONTAINER_ID, else CNI_CONTAINERID
}

// ParseK8sArgs reads CNI_ARGS ("K=V;K=V"); unknown keys are ignored. The container id
// falls back to CNI_CONTAINERID.
func ParseK8sArgs(cniArgs, containerID string) (K8sArgs, error) {
	a := K8sArgs{ContainerID: containerID}
	if strings.TrimSpace(cniArgs) != "" {
		for _, pair := range strings.Split(cniArgs, ";") {
			if pair == "" {
				continue
			}
			k, v, ok := strings.Cut(pair, "=")
			if !ok {
				return a, newErr(CodeInvalidEnv, "invalid CNI_ARGS", fmt.Errorf("%q is not KEY=VALUE", pair))
			}
			switch k {
			case "K8S_POD_NAMESPACE":
				a.Namespace = v
			case "K8S_POD_NAME":
				a.Pod = v
			case "K8S_POD_INFRA_CONTAINER_ID":
				if v != "" {
					a.ContainerID = v
				}
			}
		}
	}
	return a, nil
}

// require fails with code 4 unless the pod is named.
func (a K8sArgs) require() error {
	var missing []string
	if a.Namespace == "" {
		missing = append(missing, "K8S_POD_NAMESPACE")
	}
	if a.Pod == "" {
		missing = append(missing, "K8S_POD_NAME")
	}
	if a.ContainerID == "" {
		missing = append(missing, "K8S_POD_INFRA_CONTAINER_ID or CNI_CONTAINERID")
	}
	if len(missing) > 0 {
		return newErr(CodeInvalidEnv, "CNI_ARGS does not name the pod",
			fmt.Errorf("missing %s", strings.Join(missing, ", ")))
	}
	return nil
}
