package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Orchestrators a WorkloadEndpoint can come from.
const (
	OrchestratorPod     = "pod"
	OrchestratorLibvirt = "libvirt"
)

// WorkloadEndpoint is one network interface of a workload (a pod's veth or a libvirt
// guest's tap) on a node. Its labels (metadata.labels) are what policies select.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=wep
// +kubebuilder:printcolumn:name="Workload",type=string,JSONPath=`.spec.workload`
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="Interface",type=string,JSONPath=`.spec.interfaceName`
type WorkloadEndpoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              WorkloadEndpointSpec `json:"spec"`
}

// WorkloadEndpointSpec describes the interface and what it belongs to.
type WorkloadEndpointSpec struct {
	// Orchestrator is pod or libvirt.
	// +kubebuilder:validation:Enum=pod;libvirt
	Orchestrator string `json:"orchestrator"`
	// Workload: the pod name, or the libvirt domain name.
	Workload string `json:"workload"`
	// Node the interface lives on.
	Node string `json:"node"`
	// ContainerID of a pod's sandbox, or the UUID of a libvirt domain.
	// +optional
	ContainerID string `json:"containerID,omitempty"`
	// Endpoint names the interface inside the workload (eth0).
	// +optional
	Endpoint string `json:"endpoint,omitempty"`
	// ServiceAccountName of a pod.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`
	// InterfaceName is the host-side interface: cali* veth or the guest's tap.
	InterfaceName string `json:"interfaceName"`
	// MAC of the workload side of the interface.
	// +optional
	MAC string `json:"mac,omitempty"`
	// IPNetworks are the workload's addresses, each a /32 (or /128).
	// +optional
	IPNetworks []string `json:"ipNetworks,omitempty"`
	// Profiles the endpoint inherits labels and rules from (kns.<namespace>, ...).
	// +optional
	Profiles []string `json:"profiles,omitempty"`
	// Ports are named ports that policies may refer to.
	// +optional
	Ports []WorkloadEndpointPort `json:"ports,omitempty"`
	// AllowSpoofedSourcePrefixes lets the workload send from these prefixes too.
	// +optional
	AllowSpoofedSourcePrefixes []string `json:"allowSpoofedSourcePrefixes,omitempty"`
	// Standby: the interface is policed (its programs and anti-spoofing are in place)
	// but its addresses are not routed to it. A guest migrating live has a standby
	// endpoint on the destination node until it resumes there; until then the source
	// node's endpoint holds the route.
	// +optional
	Standby bool `json:"standby,omitempty"`
}

// WorkloadEndpointPort is a named port of a workload.
type WorkloadEndpointPort struct {
	Name string `json:"name"`
	// +kubebuilder:validation:Enum=TCP;UDP;SCTP
	Protocol string `json:"protocol"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port uint16 `json:"port"`
}

// WorkloadEndpointList is a list of WorkloadEndpoints.
// +kubebuilder:object:root=true
type WorkloadEndpointList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []WorkloadEndpoint `json:"items"`
}

// HostEndpoint is an interface of a node itself that policies can protect.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=hep
type HostEndpoint struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              HostEndpointSpec `json:"spec"`
}

// HostEndpointSpec names the node interface.
type HostEndpointSpec struct {
	Node string `json:"node"`
	// InterfaceName, or "*" for every interface of the node; or give ExpectedIPs.
	// +optional
	InterfaceName string `json:"interfaceName,omitempty"`
	// +optional
	ExpectedIPs []string `json:"expectedIPs,omitempty"`
	// +optional
	Profiles []string `json:"profiles,omitempty"`
	// +optional
	Ports []WorkloadEndpointPort `json:"ports,omitempty"`
}

// HostEndpointList is a list of HostEndpoints.
// +kubebuilder:object:root=true
type HostEndpointList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []HostEndpoint `json:"items"`
}

// FelixConfiguration tunes the dataplane of every node ("default") or of one node
// ("node.<node>").
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=felixconfig
type FelixConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              FelixConfigurationSpec `json:"spec"`
}

// FelixConfigurationSpec holds dataplane settings; unset fields take the defaults.
type FelixConfigurationSpec struct {
	// LogSeverityScreen: Debug, Info, Warning, Error.
	// +kubebuilder:validation:Enum=Debug;Info;Warning;Error;Fatal
	// +optional
	LogSeverityScreen string `json:"logSeverityScreen,omitempty"`
	// RouteRefreshInterval is how often routes are fully resynced (default 90s).
	// +optional
	RouteRefreshInterval *metav1.Duration `json:"routeRefreshInterval,omitempty"`
	// ReportingInterval is how often NodeStatus is written (default 30s).
	// +optional
	ReportingInterval *metav1.Duration `json:"reportingInterval,omitempty"`
	// DefaultEndpointToHostAction: Drop, Return or Accept (default Accept).
	// +kubebuilder:validation:Enum=Drop;Return;Accept
	// +optional
	DefaultEndpointToHostAction string `json:"defaultEndpointToHostAction,omitempty"`
	// BPFLogLevel: Off, Info, Debug.
	// +kubebuilder:validation:Enum=Off;Info;Debug
	// +optional
	BPFLogLevel string `json:"bpfLogLevel,omitempty"`
	// BPFConntrackTimeouts overrides conntrack timeouts, e.g. TCPEstablished: 1h.
	// +optional
	BPFConntrackTimeouts map[string]metav1.Duration `json:"bpfConntrackTimeouts,omitempty"`
	// PrometheusMetricsEnabled serves /metrics (default true).
	// +optional
	PrometheusMetricsEnabled *bool `json:"prometheusMetricsEnabled,omitempty"`
	// PrometheusMetricsPort (default 9091).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	PrometheusMetricsPort *int `json:"prometheusMetricsPort,omitempty"`
	// HealthPort serves /livez and /readyz (default 9099).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	HealthPort *int `json:"healthPort,omitempty"`
	// InterfacePrefix of workload interfaces Tabby manages (default "cali").
	// +optional
	InterfacePrefix string `json:"interfacePrefix,omitempty"`
	// RouteTableProtocol overrides the route protocol number of local routes.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	// +optional
	RouteTableProtocol *int `json:"routeTableProtocol,omitempty"`
}

// FelixConfigurationList is a list of FelixConfigurations.
// +kubebuilder:object:root=true
type FelixConfigurationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []FelixConfiguration `json:"items"`
}
