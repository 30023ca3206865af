package v1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ASNumber is a 4-byte BGP autonomous system number (1-4294967295).
// +kubebuilder:validation:Minimum=1
// +kubebuilder:validation:Maximum=4294967295
// +kubebuilder:validation:Format=int64
type ASNumber uint32

// DefaultASNumber is the AS of nodes that name none.
const DefaultASNumber ASNumber = 64512

// BGPConfiguration holds cluster-wide BGP settings in the object named "default", and
// per-node overrides in objects named "node.<node>".
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgpconfig
type BGPConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              BGPConfigurationSpec `json:"spec"`
}

// BGPConfigurationSpec is the BGP behaviour of the cluster or of one node.
type BGPConfigurationSpec struct {
	// LogSeverityScreen sets the BGP speaker's log level (Debug, Info, Warning, Error).
	// +kubebuilder:validation:Enum=Debug;Info;Warning;Error;Fatal
	// +optional
	LogSeverityScreen string `json:"logSeverityScreen,omitempty"`
	// NodeToNodeMeshEnabled runs the full iBGP mesh between nodes (default true).
	// +optional
	NodeToNodeMeshEnabled *bool `json:"nodeToNodeMeshEnabled,omitempty"`
	// ASNumber of nodes that name none (default 64512).
	// +optional
	ASNumber *ASNumber `json:"asNumber,omitempty"`
	// ListenPort of the BGP speaker (default 179).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	ListenPort uint16 `json:"listenPort,omitempty"`
	// ServiceClusterIPs are Service cluster IP ranges to advertise.
	// +optional
	ServiceClusterIPs []ServiceClusterIPBlock `json:"serviceClusterIPs,omitempty"`
	// ServiceExternalIPs are Service external IP ranges to advertise.
	// +optional
	ServiceExternalIPs []ServiceExternalIPBlock `json:"serviceExternalIPs,omitempty"`
	// ServiceLoadBalancerIPs are Service load-balancer IP ranges to advertise.
	// +optional
	ServiceLoadBalancerIPs []ServiceLoadBalancerIPBlock `json:"serviceLoadBalancerIPs,omitempty"`
	// Communities names BGP communities for use in PrefixAdvertisements.
	// +optional
	Communities []Community `json:"communities,omitempty"`
	// PrefixAdvertisements attaches communities to advertised prefixes.
	// +optional
	PrefixAdvertisements []PrefixAdvertisement `json:"prefixAdvertisements,omitempty"`
	// NodeMeshPassword protects the node-to-node mesh with TCP MD5.
	// +optional
	NodeMeshPassword *BGPPassword `json:"nodeMeshPassword,omitempty"`
	// NodeMeshMaxRestartTime is the graceful-restart time of mesh sessions (default 120s).
	// +optional
	NodeMeshMaxRestartTime *metav1.Duration `json:"nodeMeshMaxRestartTime,omitempty"`
}

// ServiceClusterIPBlock is a CIDR of Service cluster IPs.
type ServiceClusterIPBlock struct {
	CIDR string `json:"cidr"`
}

// ServiceExternalIPBlock is a CIDR of Service external IPs.
type ServiceExternalIPBlock struct {
	CIDR string `json:"cidr"`
}

// ServiceLoadBalancerIPBlock is a CIDR of Service load-balancer IPs.
type ServiceLoadBalancerIPBlock struct {
	CIDR string `json:"cidr"`
}

// Community is a named BGP community: "AA:NN" (standard) or "AA:NN:MM" (large).
type Community struct {
	Name string `json:"name"`
	// +kubebuilder:validation:Pattern=`^(\d+):(\d+)$|^(\d+):(\d+):(\d+)$`
	Value string `json:"value"`
}

// PrefixAdvertisement attaches communities to a prefix when it is advertised.
type PrefixAdvertisement struct {
	CIDR string `json:"cidr"`
	// Communities are names from Communities or literal values.
	Communities []string `json:"communities"`
}

// BGPPassword is a TCP MD5 password, read from a Secret.
type BGPPassword struct {
	SecretKeyRef *corev1.SecretKeySelector `json:"secretKeyRef,omitempty"`
}

// BGPConfigurationList is a list of BGPConfigurations.
// +kubebuilder:object:root=true
type BGPConfigurationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPConfiguration `json:"items"`
}

// NextHopMode says what next hop a node sets on routes it sends a peer.
// +kubebuilder:validation:Enum=Auto;Self;Keep
type NextHopMode string

// Next-hop modes: Auto is the BGP default (self for eBGP, unchanged for iBGP).
const (
	NextHopAuto NextHopMode = "Auto"
	NextHopSelf NextHopMode = "Self"
	NextHopKeep NextHopMode = "Keep"
)

// BGPPeer is a BGP session from some or all nodes to a peer: an external router
// (peerIP) or other Tabby nodes (peerSelector).
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=peer
// +kubebuilder:printcolumn:name="Peer",type=string,JSONPath=`.spec.peerIP`
// +kubebuilder:printcolumn:name="AS",type=integer,JSONPath=`.spec.asNumber`
type BGPPeer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              BGPPeerSpec `json:"spec"`
}

// BGPPeerSpec says who peers with whom and how.
type BGPPeerSpec struct {
	// Node limits the peering to one node; empty means every node (unless NodeSelector).
	// +optional
	Node string `json:"node,omitempty"`
	// NodeSelector chooses the nodes that peer; exclusive with Node.
	// +optional
	NodeSelector string `json:"nodeSelector,omitempty"`
	// PeerIP is the peer's address, optionally with a port: "10.0.0.1", "10.0.0.1:1790",
	// "[fd00::1]:1790".
	// +optional
	PeerIP string `json:"peerIP,omitempty"`
	// PeerSelector peers with the Tabby nodes it selects; exclusive with PeerIP.
	// +optional
	PeerSelector string `json:"peerSelector,omitempty"`
	// ASNumber of the peer; required with PeerIP.
	// +optional
	ASNumber ASNumber `json:"asNumber,omitempty"`
	// LocalASNumber overrides the node's AS for this session.
	// +optional
	LocalASNumber *ASNumber `json:"localASNumber,omitempty"`
	// Password for TCP MD5 on the session.
	// +optional
	Password *BGPPassword `json:"password,omitempty"`
	// SourceAddress is UseNodeIP (default) or None.
	// +kubebuilder:validation:Enum=UseNodeIP;None
	// +optional
	SourceAddress string `json:"sourceAddress,omitempty"`
	// KeepaliveTime of the session (default 30s).
	// +optional
	KeepaliveTime *metav1.Duration `json:"keepaliveTime,omitempty"`
	// HoldTime of the session (default 90s; 0 or at least 3s).
	// +optional
	HoldTime *metav1.Duration `json:"holdTime,omitempty"`
	// MaxRestartTime is the graceful-restart time advertised to the peer (default 120s).
	// +optional
	MaxRestartTime *metav1.Duration `json:"maxRestartTime,omitempty"`
	// TTLSecurity turns on GTSM: the peer must be at most this many hops away (1-255).
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=255
	// +optional
	TTLSecurity *uint8 `json:"ttlSecurity,omitempty"`
	// MaxPrefixes tears the session down when the peer sends more prefixes than this.
	// +kubebuilder:validation:Minimum=1
	// +optional
	MaxPrefixes *uint32 `json:"maxPrefixes,omitempty"`
	// NumAllowedLocalASNumbers accepts routes whose AS path holds our AS this many times.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=10
	// +optional
	NumAllowedLocalASNumbers *int32 `json:"numAllowedLocalASNumbers,omitempty"`
	// NextHopMode is Auto (default), Self or Keep.
	// +optional
	NextHopMode NextHopMode `json:"nextHopMode,omitempty"`
	// Filters names BGPFilters applied to the session, in order.
	// +optional
	Filters []string `json:"filters,omitempty"`
}

// BGPPeerList is a list of BGPPeers.
// +kubebuilder:object:root=true
type BGPPeerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPPeer `json:"items"`
}

// BGPFilterAction accepts or rejects a matched route.
// +kubebuilder:validation:Enum=Accept;Reject
type BGPFilterAction string

// Filter actions.
const (
	BGPFilterAccept BGPFilterAction = "Accept"
	BGPFilterReject BGPFilterAction = "Reject"
)

// BGPFilterMatchOperator compares a route's prefix with the rule's CIDR.
// +kubebuilder:validation:Enum=Equal;NotEqual;In;NotIn
type BGPFilterMatchOperator string

// Match operators.
const (
	MatchEqual    BGPFilterMatchOperator = "Equal"
	MatchNotEqual BGPFilterMatchOperator = "NotEqual"
	MatchIn       BGPFilterMatchOperator = "In"
	MatchNotIn    BGPFilterMatchOperator = "NotIn"
)

// BGPFilter holds ordered import and export rules for BGP sessions that name it.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
type BGPFilter struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              BGPFilterSpec `json:"spec"`
}

// BGPFilterSpec holds the rules, first match wins.
type BGPFilterSpec struct {
	// +optional
	ExportV4 []BGPFilterRule `json:"exportV4,omitempty"`
	// +optional
	ImportV4 []BGPFilterRule `json:"importV4,omitempty"`
	// +optional
	ExportV6 []BGPFilterRule `json:"exportV6,omitempty"`
	// +optional
	ImportV6 []BGPFilterRule `json:"importV6,omitempty"`
}

// BGPFilterRule matches routes by prefix and acts on them.
type BGPFilterRule struct {
	// +optional
	CIDR string `json:"cidr,omitempty"`
	// +optional
	PrefixLength *BGPFilterPrefixLength `json:"prefixLength,omitempty"`
	// +optional
	MatchOperator BGPFilterMatchOperator `json:"matchOperator,omitempty"`
	Action        BGPFilterAction        `json:"action"`
}

// BGPFilterPrefixLength bounds the prefix length of matched routes.
type BGPFilterPrefixLength struct {
	// +optional
	Min *int32 `json:"min,omitempty"`
	// +optional
	Max *int32 `json:"max,omitempty"`
}

// BGPFilterList is a list of BGPFilters.
// +kubebuilder:object:root=true
type BGPFilterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPFilter `json:"items"`
}

// Node is Tabby's view of a cluster node: its BGP identity and addresses.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
// +kubebuilder:printcolumn:name="IPv4",type=string,JSONPath=`.spec.bgp.ipv4Address`
// +kubebuilder:printcolumn:name="AS",type=integer,JSONPath=`.spec.bgp.asNumber`
type Node struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NodeSpec `json:"spec"`
}

// NodeSpec is a node's network identity.
type NodeSpec struct {
	// +optional
	BGP *NodeBGPSpec `json:"bgp,omitempty"`
	// Addresses of the node, with how each was found.
	// +optional
	Addresses []NodeAddress `json:"addresses,omitempty"`
	// OrchRefs links the node to its name in each orchestrator.
	// +optional
	OrchRefs []OrchRef `json:"orchRefs,omitempty"`
}

// NodeBGPSpec is a node's BGP identity.
type NodeBGPSpec struct {
	// IPv4Address of the node with its subnet, e.g. 10.0.0.2/24.
	// +optional
	IPv4Address string `json:"ipv4Address,omitempty"`
	// +optional
	IPv6Address string `json:"ipv6Address,omitempty"`
	// ASNumber of the node (default: the cluster's).
	// +optional
	ASNumber *ASNumber `json:"asNumber,omitempty"`
	// RouteReflectorClusterID makes the node a route reflector for that cluster ID.
	// +optional
	RouteReflectorClusterID string `json:"routeReflectorClusterID,omitempty"`
}

// NodeAddress is one address of a node.
type NodeAddress struct {
	Address string `json:"address"`
	// Type is how it was learned: InternalIP, ExternalIP, CalicoNodeIP-style "TabbyNodeIP".
	// +optional
	Type string `json:"type,omitempty"`
}

// OrchRef names a node in an orchestrator.
type OrchRef struct {
	NodeName     string `json:"nodeName,omitempty"`
	Orchestrator string `json:"orchestrator"`
}

// NodeList is a list of Nodes.
// +kubebuilder:object:root=true
type NodeList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Node `json:"items"`
}

// NodeStatus is what a node's agent reports about itself: its BGP sessions and its
// dataplane. The agent writes it; users read it.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
type NodeStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NodeStatusSpec   `json:"spec"`
	Status            NodeStatusStatus `json:"status,omitempty"`
}

// NodeStatusSpec names the node and how often it reports.
type NodeStatusSpec struct {
	Node string `json:"node"`
	// +kubebuilder:validation:Minimum=0
	// +optional
	UpdatePeriodSeconds *uint32 `json:"updatePeriodSeconds,omitempty"`
}

// NodeStatusStatus is the node's last report.
type NodeStatusStatus struct {
	// +optional
	LastUpdated metav1.Time `json:"lastUpdated,omitempty"`
	// +optional
	Agent AgentStatus `json:"agent,omitempty"`
	// +optional
	BGP BGPStatus `json:"bgp,omitempty"`
	// +optional
	Routes RouteStatus `json:"routes,omitempty"`
}

// AgentStatus is the health of the node's agent.
type AgentStatus struct {
	// +optional
	Ready bool `json:"ready,omitempty"`
	// +optional
	Version string `json:"version,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// BGPStatus counts and lists the node's BGP sessions.
type BGPStatus struct {
	NumberEstablished    int             `json:"numberEstablished"`
	NumberNotEstablished int             `json:"numberNotEstablished"`
	Peers                []BGPPeerStatus `json:"peers,omitempty"`
}

// BGPPeerStatus is one BGP session as the node sees it.
type BGPPeerStatus struct {
	PeerIP string `json:"peerIP"`
	// Type is mesh, global, node or reflector.
	Type  string `json:"type"`
	State string `json:"state"`
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
	// +optional
	PrefixesReceived int `json:"prefixesReceived"`
	// +optional
	PrefixesAdvertised int `json:"prefixesAdvertised"`
	// Message says why a session is not established (last error, notification).
	// +optional
	Message string `json:"message,omitempty"`
}

// RouteStatus counts the routes the node programs.
type RouteStatus struct {
	// +optional
	Local int `json:"local"`
	// +optional
	Learned int `json:"learned"`
}

// NodeStatusList is a list of NodeStatuses.
// +kubebuilder:object:root=true
type NodeStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeStatus `json:"items"`
}
