package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Action is what a rule does with a packet it matches: Allow and Deny decide; Pass
// skips the rest of the tier (the namespace profile allows); Log reports the packet
// (an event on the node's drop stream, marked as a log, naming the rule) and goes on
// to the next rule.
// +kubebuilder:validation:Enum=Allow;Deny;Pass;Log
type Action string

// Rule actions. Pass skips the rest of the policy's tier to the next one; Log records
// the packet and goes on to the next rule.
const (
	ActionAllow Action = "Allow"
	ActionDeny  Action = "Deny"
	ActionPass  Action = "Pass"
	ActionLog   Action = "Log"
)

// PolicyType says which direction a policy governs.
// +kubebuilder:validation:Enum=Ingress;Egress
type PolicyType string

// Policy types.
const (
	PolicyTypeIngress PolicyType = "Ingress"
	PolicyTypeEgress  PolicyType = "Egress"
)

// NetworkPolicy is an ordered set of rules for the endpoints its selector picks in its
// namespace.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=netpol
// +kubebuilder:printcolumn:name="Order",type=number,JSONPath=`.spec.order`
// +kubebuilder:printcolumn:name="Selector",type=string,JSONPath=`.spec.selector`
type NetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NetworkPolicySpec `json:"spec"`
}

// NetworkPolicySpec holds a namespaced policy's selector and rules.
type NetworkPolicySpec struct {
	// Order: lower applies first; policies without an order apply last.
	// +optional
	Order *float64 `json:"order,omitempty"`
	// Selector picks the endpoints of the namespace the policy applies to (empty: all).
	// +optional
	Selector string `json:"selector,omitempty"`
	// Types: Ingress, Egress or both. Default: Ingress, plus Egress if there are egress rules.
	// +optional
	Types []PolicyType `json:"types,omitempty"`
	// +optional
	Ingress []Rule `json:"ingress,omitempty"`
	// +optional
	Egress []Rule `json:"egress,omitempty"`
	// ServiceAccountSelector limits the policy to endpoints whose service account matches.
	// +optional
	ServiceAccountSelector string `json:"serviceAccountSelector,omitempty"`
}

// NetworkPolicyList is a list of NetworkPolicies.
// +kubebuilder:object:root=true
type NetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NetworkPolicy `json:"items"`
}

// GlobalNetworkPolicy is an ordered set of rules for endpoints of any namespace.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=gnp
// +kubebuilder:printcolumn:name="Order",type=number,JSONPath=`.spec.order`
// +kubebuilder:printcolumn:name="Selector",type=string,JSONPath=`.spec.selector`
type GlobalNetworkPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              GlobalNetworkPolicySpec `json:"spec"`
}

// GlobalNetworkPolicySpec holds a cluster-wide policy's selectors and rules.
type GlobalNetworkPolicySpec struct {
	// +optional
	Order *float64 `json:"order,omitempty"`
	// +optional
	Selector string `json:"selector,omitempty"`
	// NamespaceSelector limits the policy to endpoints in namespaces it selects.
	// +optional
	NamespaceSelector string `json:"namespaceSelector,omitempty"`
	// +optional
	Types []PolicyType `json:"types,omitempty"`
	// +optional
	Ingress []Rule `json:"ingress,omitempty"`
	// +optional
	Egress []Rule `json:"egress,omitempty"`
	// +optional
	ServiceAccountSelector string `json:"serviceAccountSelector,omitempty"`
	// DoNotTrack applies the policy before connection tracking (host endpoints only).
	// +optional
	DoNotTrack bool `json:"doNotTrack,omitempty"`
	// ApplyOnForward applies the policy to forwarded traffic (host endpoints only).
	// +optional
	ApplyOnForward bool `json:"applyOnForward,omitempty"`
}

// GlobalNetworkPolicyList is a list of GlobalNetworkPolicies.
// +kubebuilder:object:root=true
type GlobalNetworkPolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GlobalNetworkPolicy `json:"items"`
}

// Rule matches packets and acts on them.
type Rule struct {
	Action Action `json:"action"`
	// IPVersion limits the rule to 4 or 6.
	// +kubebuilder:validation:Enum=4;6
	// +optional
	IPVersion *int `json:"ipVersion,omitempty"`
	// Protocol is a name (TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite) or a number 1-255.
	// +optional
	Protocol *intstr.IntOrString `json:"protocol,omitempty"`
	// +optional
	NotProtocol *intstr.IntOrString `json:"notProtocol,omitempty"`
	// ICMP matches ICMP type and code; needs protocol ICMP or ICMPv6. A type alone
	// matches every code of that type; with a code, that type and code only.
	// +optional
	ICMP *ICMPFields `json:"icmp,omitempty"`
	// NotICMP matches every ICMP message but the type (and code) it names; needs
	// protocol ICMP or ICMPv6.
	// +optional
	NotICMP *ICMPFields `json:"notICMP,omitempty"`
	// +optional
	Source EntityRule `json:"source,omitempty"`
	// +optional
	Destination EntityRule `json:"destination,omitempty"`
	// +optional
	Metadata *RuleMetadata `json:"metadata,omitempty"`
}

// ICMPFields matches ICMP messages.
type ICMPFields struct {
	// Type is the ICMP type, e.g. 8 for an echo request.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=254
	// +optional
	Type *int `json:"type,omitempty"`
	// Code needs Type.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=255
	// +optional
	Code *int `json:"code,omitempty"`
}

// RuleMetadata carries annotations for a rule (shown by policy explain).
type RuleMetadata struct {
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// EntityRule matches one end of a packet: addresses, endpoints, namespaces, ports.
type EntityRule struct {
	// Nets are CIDRs the address must be in.
	// +optional
	Nets []string `json:"nets,omitempty"`
	// +optional
	NotNets []string `json:"notNets,omitempty"`
	// Selector matches endpoints and network sets by label.
	// +optional
	Selector string `json:"selector,omitempty"`
	// +optional
	NotSelector string `json:"notSelector,omitempty"`
	// NamespaceSelector matches endpoints in namespaces it selects.
	// +optional
	NamespaceSelector string `json:"namespaceSelector,omitempty"`
	// Ports: a number, a range "80:90", or a named port of the endpoint; needs protocol
	// TCP, UDP or SCTP.
	// +optional
	Ports []intstr.IntOrString `json:"ports,omitempty"`
	// +optional
	NotPorts []intstr.IntOrString `json:"notPorts,omitempty"`
	// ServiceAccounts matches endpoints by service account.
	// +optional
	ServiceAccounts *ServiceAccountMatch `json:"serviceAccounts,omitempty"`
}

// ServiceAccountMatch matches service accounts by name or label.
type ServiceAccountMatch struct {
	// +optional
	Names []string `json:"names,omitempty"`
	// +optional
	Selector string `json:"selector,omitempty"`
}

// NetworkSet is a named, labelled set of CIDRs in a namespace that rules can select.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Namespaced,shortName=netset
type NetworkSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NetworkSetSpec `json:"spec"`
}

// NetworkSetSpec lists the set's CIDRs.
type NetworkSetSpec struct {
	// +optional
	Nets []string `json:"nets,omitempty"`
}

// NetworkSetList is a list of NetworkSets.
// +kubebuilder:object:root=true
type NetworkSetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NetworkSet `json:"items"`
}

// GlobalNetworkSet is a cluster-wide NetworkSet.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=gns
type GlobalNetworkSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NetworkSetSpec `json:"spec"`
}

// GlobalNetworkSetList is a list of GlobalNetworkSets.
// +kubebuilder:object:root=true
type GlobalNetworkSetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []GlobalNetworkSet `json:"items"`
}
