package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPPoolAllowedUse says what addresses of a pool may be used for.
// +kubebuilder:validation:Enum=Workload;Tunnel;LoadBalancer
type IPPoolAllowedUse string

// Allowed uses of an IPPool.
const (
	IPPoolAllowedUseWorkload     IPPoolAllowedUse = "Workload"
	IPPoolAllowedUseTunnel       IPPoolAllowedUse = "Tunnel"
	IPPoolAllowedUseLoadBalancer IPPoolAllowedUse = "LoadBalancer"
)

// IPPool is a range of addresses that workloads get their addresses from, handed out to
// nodes in blocks of 2^(32-blockSize) addresses.
// +genclient:nonNamespaced
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=pool
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="Block",type=integer,JSONPath=`.spec.blockSize`
// +kubebuilder:printcolumn:name="Disabled",type=boolean,JSONPath=`.spec.disabled`
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              IPPoolSpec `json:"spec"`
}

// IPPoolSpec is the desired state of an IPPool.
type IPPoolSpec struct {
	// CIDR of the pool, a masked network address, e.g. 10.244.0.0/16.
	// +kubebuilder:validation:XValidation:rule="isCIDR(self) && cidr(self).masked() == cidr(self)",message="must be a masked network address in CIDR form, e.g. 10.244.0.0/16"
	CIDR string `json:"cidr"`
	// BlockSize is the prefix length of the blocks nodes claim (IPv4 20-32, default 26).
	// +kubebuilder:validation:Minimum=20
	// +kubebuilder:validation:Maximum=128
	// +optional
	BlockSize int `json:"blockSize,omitempty"`
	// NodeSelector chooses the nodes that may claim blocks from this pool (default all()).
	// +optional
	NodeSelector string `json:"nodeSelector,omitempty"`
	// NATOutgoing masquerades traffic from the pool to destinations outside every pool.
	// +optional
	NATOutgoing bool `json:"natOutgoing,omitempty"`
	// Disabled stops new allocations from the pool; existing ones stay.
	// +optional
	Disabled bool `json:"disabled,omitempty"`
	// DisableBGPExport keeps the pool's blocks out of BGP advertisements.
	// +optional
	DisableBGPExport bool `json:"disableBGPExport,omitempty"`
	// AllowedUses limits what the pool's addresses serve (default Workload, Tunnel).
	// +optional
	AllowedUses []IPPoolAllowedUse `json:"allowedUses,omitempty"`
}

// IPPoolList is a list of IPPools.
// +kubebuilder:object:root=true
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPPool `json:"items"`
}

// IPAMConfiguration holds cluster-wide IPAM settings; the one object is named "default".
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ipamconfig
type IPAMConfiguration struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              IPAMConfigurationSpec `json:"spec"`
}

// IPAMConfigurationSpec is the desired IPAM behaviour.
type IPAMConfigurationSpec struct {
	// StrictAffinity forbids borrowing addresses from blocks affine to other nodes.
	StrictAffinity bool `json:"strictAffinity"`
	// MaxBlocksPerHost caps the blocks one node may claim; 0 means no limit.
	// +kubebuilder:validation:Minimum=0
	// +optional
	MaxBlocksPerHost int `json:"maxBlocksPerHost,omitempty"`
	// AutoAllocateBlocks lets nodes claim new blocks as they need them (default true).
	// +optional
	AutoAllocateBlocks *bool `json:"autoAllocateBlocks,omitempty"`
}

// IPAMConfigurationList is a list of IPAMConfigurations.
// +kubebuilder:object:root=true
type IPAMConfigurationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAMConfiguration `json:"items"`
}

// IPReservation keeps addresses inside pools from ever being allocated.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster
type IPReservation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              IPReservationSpec `json:"spec"`
}

// IPReservationSpec lists reserved addresses.
type IPReservationSpec struct {
	// ReservedCIDRs are addresses or CIDRs IPAM never hands out.
	ReservedCIDRs []string `json:"reservedCIDRs"`
}

// IPReservationList is a list of IPReservations.
// +kubebuilder:object:root=true
type IPReservationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPReservation `json:"items"`
}

// IPAMBlock is one block of a pool and the state of each of its addresses. IPAM owns
// these objects; users read them.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=block
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="Affinity",type=string,JSONPath=`.spec.affinity`
type IPAMBlock struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              IPAMBlockSpec `json:"spec"`
}

// IPAMBlockSpec is the allocation state of a block.
type IPAMBlockSpec struct {
	// CIDR of the block.
	CIDR string `json:"cidr"`
	// Affinity is "host:<node>" for the node that claimed the block, empty when none.
	// +optional
	Affinity *string `json:"affinity,omitempty"`
	// AffinityClaimTime is when the affinity was claimed.
	// +optional
	AffinityClaimTime *metav1.Time `json:"affinityClaimTime,omitempty"`
	// Allocations has one entry per address of the block: the index into Attributes of
	// its allocation, or -1 when the address is free.
	// +kubebuilder:validation:items:Minimum=-1
	Allocations []int `json:"allocations"`
	// Unallocated lists the free ordinals, in the order they are handed out.
	Unallocated []int `json:"unallocated"`
	// Attributes of each allocation: its handle and who asked, when.
	Attributes []AllocationAttribute `json:"attributes"`
	// SequenceNumber rises with every change of the block.
	// +optional
	SequenceNumber uint64 `json:"sequenceNumber,omitempty"`
	// StrictAffinity was in force when the block was claimed.
	// +optional
	StrictAffinity bool `json:"strictAffinity,omitempty"`
	// Deleted marks a block being released.
	// +optional
	Deleted bool `json:"deleted,omitempty"`
}

// AllocationAttribute records who holds an allocation.
type AllocationAttribute struct {
	// HandleID names the allocation's owner (pod: namespace/name + container id; VM:
	// domain UUID + MAC).
	// +optional
	HandleID *string `json:"handleID,omitempty"`
	// Secondary carries free-form attributes: node, namespace, pod, timestamp.
	// +optional
	Secondary map[string]string `json:"secondary,omitempty"`
}

// IPAMBlockList is a list of IPAMBlocks.
// +kubebuilder:object:root=true
type IPAMBlockList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAMBlock `json:"items"`
}

// BlockAffinityState is the life cycle of a node's claim on a block.
// +kubebuilder:validation:Enum=confirmed;pending;pendingDeletion
type BlockAffinityState string

// Block affinity states.
const (
	BlockAffinityConfirmed       BlockAffinityState = "confirmed"
	BlockAffinityPending         BlockAffinityState = "pending"
	BlockAffinityPendingDeletion BlockAffinityState = "pendingDeletion"
)

// BlockAffinity records that a node claimed a block.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=affinity
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.spec.node`
// +kubebuilder:printcolumn:name="CIDR",type=string,JSONPath=`.spec.cidr`
// +kubebuilder:printcolumn:name="State",type=string,JSONPath=`.spec.state`
type BlockAffinity struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              BlockAffinitySpec `json:"spec"`
}

// BlockAffinitySpec is one node's claim on one block.
type BlockAffinitySpec struct {
	State BlockAffinityState `json:"state"`
	Node  string             `json:"node"`
	CIDR  string             `json:"cidr"`
	// +optional
	Deleted bool `json:"deleted,omitempty"`
}

// BlockAffinityList is a list of BlockAffinities.
// +kubebuilder:object:root=true
type BlockAffinityList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BlockAffinity `json:"items"`
}

// IPAMHandle counts, per block, the addresses one owner holds.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=handle
type IPAMHandle struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              IPAMHandleSpec `json:"spec"`
}

// IPAMHandleSpec is an owner's holdings.
type IPAMHandleSpec struct {
	HandleID string `json:"handleID"`
	// Block maps a block CIDR to the number of addresses held in it.
	Block map[string]int `json:"block"`
	// +optional
	Deleted bool `json:"deleted,omitempty"`
}

// IPAMHandleList is a list of IPAMHandles.
// +kubebuilder:object:root=true
type IPAMHandleList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAMHandle `json:"items"`
}
