package v1

import (
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Group and Version of every Tabby resource.
const (
	Group   = "tabby.dev"
	Version = "v1"
)

// GroupVersion is tabby.dev/v1.
var GroupVersion = schema.GroupVersion{Group: Group, Version: Version}

// APIVersion is the apiVersion string of every Tabby resource.
var APIVersion = GroupVersion.String()

// Object is a Tabby resource: Kubernetes object metadata plus runtime type information.
// +kubebuilder:object:generate=false
type Object interface {
	metav1.Object
	runtime.Object
}

// Resource describes one kind: its names, its scope and how to make an empty one.
// +kubebuilder:object:generate=false
type Resource struct {
	Kind       string
	Plural     string
	Singular   string
	ShortNames []string
	Namespaced bool
	New        func() Object
	NewList    func() runtime.Object
}

// GVR is the resource's group, version and plural name.
func (r Resource) GVR() schema.GroupVersionResource { return GroupVersion.WithResource(r.Plural) }

// GVK is the resource's group, version and kind.
func (r Resource) GVK() schema.GroupVersionKind { return GroupVersion.WithKind(r.Kind) }

// Resources lists every Tabby kind, in a stable order.
var Resources = []Resource{
	{Kind: "IPPool", Plural: "ippools", Singular: "ippool", ShortNames: []string{"pool", "pools"},
		New: func() Object { return &IPPool{} }, NewList: func() runtime.Object { return &IPPoolList{} }},
	{Kind: "IPAMConfiguration", Plural: "ipamconfigurations", Singular: "ipamconfiguration", ShortNames: []string{"ipamconfig"},
		New: func() Object { return &IPAMConfiguration{} }, NewList: func() runtime.Object { return &IPAMConfigurationList{} }},
	{Kind: "IPReservation", Plural: "ipreservations", Singular: "ipreservation",
		New: func() Object { return &IPReservation{} }, NewList: func() runtime.Object { return &IPReservationList{} }},
	{Kind: "IPAMBlock", Plural: "ipamblocks", Singular: "ipamblock", ShortNames: []string{"block", "blocks"},
		New: func() Object { return &IPAMBlock{} }, NewList: func() runtime.Object { return &IPAMBlockList{} }},
	{Kind: "BlockAffinity", Plural: "blockaffinities", Singular: "blockaffinity", ShortNames: []string{"affinity", "affinities"},
		New: func() Object { return &BlockAffinity{} }, NewList: func() runtime.Object { return &BlockAffinityList{} }},
	{Kind: "IPAMHandle", Plural: "ipamhandles", Singular: "ipamhandle", ShortNames: []string{"handle", "handles"},
		New: func() Object { return &IPAMHandle{} }, NewList: func() runtime.Object { return &IPAMHandleList{} }},
	{Kind: "BGPConfiguration", Plural: "bgpconfigurations", Singular: "bgpconfiguration", ShortNames: []string{"bgpconfig"},
		New: func() Object { return &BGPConfiguration{} }, NewList: func() runtime.Object { return &BGPConfigurationList{} }},
	{Kind: "BGPPeer", Plural: "bgppeers", Singular: "bgppeer", ShortNames: []string{"peer", "peers"},
		New: func() Object { return &BGPPeer{} }, NewList: func() runtime.Object { return &BGPPeerList{} }},
	{Kind: "BGPFilter", Plural: "bgpfilters", Singular: "bgpfilter",
		New: func() Object { return &BGPFilter{} }, NewList: func() runtime.Object { return &BGPFilterList{} }},
	{Kind: "Node", Plural: "nodes", Singular: "node", ShortNames: []string{"no"},
		New: func() Object { return &Node{} }, NewList: func() runtime.Object { return &NodeList{} }},
	{Kind: "NodeStatus", Plural: "nodestatuses", Singular: "nodestatus",
		New: func() Object { return &NodeStatus{} }, NewList: func() runtime.Object { return &NodeStatusList{} }},
	{Kind: "WorkloadEndpoint", Plural: "workloadendpoints", Singular: "workloadendpoint", ShortNames: []string{"wep", "weps"}, Namespaced: true,
		New: func() Object { return &WorkloadEndpoint{} }, NewList: func() runtime.Object { return &WorkloadEndpointList{} }},
	{Kind: "HostEndpoint", Plural: "hostendpoints", Singular: "hostendpoint", ShortNames: []string{"hep", "heps"},
		New: func() Object { return &HostEndpoint{} }, NewList: func() runtime.Object { return &HostEndpointList{} }},
	{Kind: "NetworkPolicy", Plural: "networkpolicies", Singular: "networkpolicy", ShortNames: []string{"netpol", "np"}, Namespaced: true,
		New: func() Object { return &NetworkPolicy{} }, NewList: func() runtime.Object { return &NetworkPolicyList{} }},
	{Kind: "GlobalNetworkPolicy", Plural: "globalnetworkpolicies", Singular: "globalnetworkpolicy", ShortNames: []string{"gnp"},
		New: func() Object { return &GlobalNetworkPolicy{} }, NewList: func() runtime.Object { return &GlobalNetworkPolicyList{} }},
	{Kind: "NetworkSet", Plural: "networksets", Singular: "networkset", ShortNames: []string{"netset"}, Namespaced: true,
		New: func() Object { return &NetworkSet{} }, NewList: func() runtime.Object { return &NetworkSetList{} }},
	{Kind: "GlobalNetworkSet", Plural: "globalnetworksets", Singular: "globalnetworkset", ShortNames: []string{"gns"},
		New: func() Object { return &GlobalNetworkSet{} }, NewList: func() runtime.Object { return &GlobalNetworkSetList{} }},
	{Kind: "FelixConfiguration", Plural: "felixconfigurations", Singular: "felixconfiguration", ShortNames: []string{"felixconfig"},
		New: func() Object { return &FelixConfiguration{} }, NewList: func() runtime.Object { return &FelixConfigurationList{} }},
}

// LookupResource finds a kind by its kind name, plural, singular or short name, in any case.
func LookupResource(name string) (Resource, bool) {
	n := strings.ToLower(name)
	for _, r := range Resources {
		if n == strings.ToLower(r.Kind) || n == r.Plural || n == r.Singular {
			return r, true
		}
		for _, s := range r.ShortNames {
			if n == s {
				return r, true
			}
		}
	}
	return Resource{}, false
}

// ResourceNames lists every plural name, sorted, for help texts and errors.
func ResourceNames() []string {
	out := make([]string, 0, len(Resources))
	for _, r := range Resources {
		out = append(out, r.Plural)
	}
	sort.Strings(out)
	return out
}

// AddToScheme registers every Tabby kind (and its list) with a runtime scheme.
func AddToScheme(s *runtime.Scheme) error {
	for _, r := range Resources {
		s.AddKnownTypeWithName(r.GVK(), r.New())
		s.AddKnownTypeWithName(GroupVersion.WithKind(r.Kind+"List"), r.NewList())
	}
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
