package datastore

import (
	"fmt"
	"reflect"

	v1 "github.com/tabbynet/tabby/api/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// Kind identifies a resource type the Store handles.
type Kind struct {
	// Name is the Kubernetes kind (IPPool, Pod, ...).
	Name       string
	GVR        schema.GroupVersionResource
	Namespaced bool
	// Tabby is true for tabby.dev kinds (defaulted and validated on write).
	Tabby bool
	new   func() Object
}

// New returns an empty object of the kind.
func (k Kind) New() Object { return k.new() }

// String is the kind's name.
func (k Kind) String() string { return k.Name }

// APIVersion is the group/version of the kind.
func (k Kind) APIVersion() string { return k.GVR.GroupVersion().String() }

// Tabby kinds.
var (
	KindIPPool              = tabbyKind("IPPool")
	KindIPAMConfiguration   = tabbyKind("IPAMConfiguration")
	KindIPReservation       = tabbyKind("IPReservation")
	KindIPAMBlock           = tabbyKind("IPAMBlock")
	KindBlockAffinity       = tabbyKind("BlockAffinity")
	KindIPAMHandle          = tabbyKind("IPAMHandle")
	KindBGPConfiguration    = tabbyKind("BGPConfiguration")
	KindBGPPeer             = tabbyKind("BGPPeer")
	KindBGPFilter           = tabbyKind("BGPFilter")
	KindNode                = tabbyKind("Node")
	KindNodeStatus          = tabbyKind("NodeStatus")
	KindWorkloadEndpoint    = tabbyKind("WorkloadEndpoint")
	KindHostEndpoint        = tabbyKind("HostEndpoint")
	KindNetworkPolicy       = tabbyKind("NetworkPolicy")
	KindGlobalNetworkPolicy = tabbyKind("GlobalNetworkPolicy")
	KindNetworkSet          = tabbyKind("NetworkSet")
	KindGlobalNetworkSet    = tabbyKind("GlobalNetworkSet")
	KindFelixConfiguration  = tabbyKind("FelixConfiguration")
)

// Core Kubernetes kinds the agent reads.
var (
	KindK8sNode = Kind{Name: "Node", GVR: corev1.SchemeGroupVersion.WithResource("nodes"),
		new: func() Object { return &corev1.Node{} }}
	KindPod = Kind{Name: "Pod", GVR: corev1.SchemeGroupVersion.WithResource("pods"), Namespaced: true,
		new: func() Object { return &corev1.Pod{} }}
	KindNamespace = Kind{Name: "Namespace", GVR: corev1.SchemeGroupVersion.WithResource("namespaces"),
		new: func() Object { return &corev1.Namespace{} }}
	KindSecret = Kind{Name: "Secret", GVR: corev1.SchemeGroupVersion.WithResource("secrets"), Namespaced: true,
		new: func() Object { return &corev1.Secret{} }}
	KindK8sNetworkPolicy = Kind{Name: "NetworkPolicy", GVR: networkingv1.SchemeGroupVersion.WithResource("networkpolicies"), Namespaced: true,
		new: func() Object { return &networkingv1.NetworkPolicy{} }}
)

// TabbyKinds lists every tabby.dev kind, in v1.Resources order.
var TabbyKinds []Kind

// CoreKinds lists the core Kubernetes kinds.
var CoreKinds = []Kind{KindK8sNode, KindPod, KindNamespace, KindSecret, KindK8sNetworkPolicy}

var byType = map[reflect.Type]Kind{}

func init() {
	for _, r := range v1.Resources {
		TabbyKinds = append(TabbyKinds, tabbyKind(r.Kind))
	}
	for _, k := range append(append([]Kind{}, TabbyKinds...), CoreKinds...) {
		byType[reflect.TypeOf(k.new())] = k
	}
}

func tabbyKind(name string) Kind {
	r, ok := v1.LookupResource(name)
	if !ok {
		panic("datastore: no v1 resource " + name)
	}
	return Kind{Name: r.Kind, GVR: r.GVR(), Namespaced: r.Namespaced, Tabby: true, new: r.New}
}

// KindOf returns the Kind of an object by its Go type.
func KindOf(obj Object) (Kind, error) {
	k, ok := byType[reflect.TypeOf(obj)]
	if !ok {
		return Kind{}, fmt.Errorf("%w: %T", ErrUnknownKind, obj)
	}
	return k, nil
}

// TabbyKind returns the Kind of a Tabby resource named by kind, plural, singular or short
// name (as tabbyctl accepts them).
func TabbyKind(name string) (Kind, error) {
	r, ok := v1.LookupResource(name)
	if !ok {
		return Kind{}, fmt.Errorf("%w: %q", ErrUnknownKind, name)
	}
	return tabbyKind(r.Kind), nil
}

func byTypeOf(obj any) (Kind, bool) {
	k, ok := byType[reflect.TypeOf(obj)]
	return k, ok
}
