package ctl

import (
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/tabbynet/tabby/api/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// column is one column of a table; wideOnly columns appear with -o wide only.
type column struct {
	header   string
	wideOnly bool
	value    func(v1.Object) string
}

// col makes a column from a function of the concrete type.
func col[T v1.Object](header string, f func(T) string) column {
	return column{header: header, value: func(o v1.Object) string { return f(o.(T)) }}
}

// wide marks a column as -o wide only.
func wide(c column) column { c.wideOnly = true; return c }

var nameCol = column{header: "NAME", value: func(o v1.Object) string { return o.GetName() }}

// tables holds the columns of every kind, after NAME, in order.
var tables = map[string][]column{
	"IPPool": {
		col("CIDR", func(o *v1.IPPool) string { return o.Spec.CIDR }),
		wide(col("BLOCKSIZE", func(o *v1.IPPool) string { return strconv.Itoa(o.Spec.BlockSize) })),
		wide(col("NAT", func(o *v1.IPPool) string { return boolStr(o.Spec.NATOutgoing) })),
		wide(col("DISABLED", func(o *v1.IPPool) string { return boolStr(o.Spec.Disabled) })),
		wide(col("DISABLEBGPEXPORT", func(o *v1.IPPool) string { return boolStr(o.Spec.DisableBGPExport) })),
		wide(col("ALLOWEDUSES", func(o *v1.IPPool) string { return joinStr(o.Spec.AllowedUses) })),
		col("SELECTOR", func(o *v1.IPPool) string { return o.Spec.NodeSelector }),
	},
	"IPAMConfiguration": {
		col("STRICTAFFINITY", func(o *v1.IPAMConfiguration) string { return boolStr(o.Spec.StrictAffinity) }),
		col("MAXBLOCKSPERHOST", func(o *v1.IPAMConfiguration) string { return strconv.Itoa(o.Spec.MaxBlocksPerHost) }),
		wide(col("AUTOALLOCATEBLOCKS", func(o *v1.IPAMConfiguration) string { return boolPtr(o.Spec.AutoAllocateBlocks, true) })),
	},
	"IPReservation": {
		col("RESERVEDCIDRS", func(o *v1.IPReservation) string { return joinStr(o.Spec.ReservedCIDRs) }),
	},
	"IPAMBlock": {
		col("CIDR", func(o *v1.IPAMBlock) string { return o.Spec.CIDR }),
		col("AFFINITY", func(o *v1.IPAMBlock) string { return strPtr(o.Spec.Affinity) }),
		wide(col("USED", func(o *v1.IPAMBlock) string { return strconv.Itoa(usedAddresses(o)) })),
		wide(col("SIZE", func(o *v1.IPAMBlock) string { return strconv.Itoa(len(o.Spec.Allocations)) })),
		wide(col("STRICTAFFINITY", func(o *v1.IPAMBlock) string { return boolStr(o.Spec.StrictAffinity) })),
		wide(col("DELETED", func(o *v1.IPAMBlock) string { return boolStr(o.Spec.Deleted) })),
	},
	"BlockAffinity": {
		col("NODE", func(o *v1.BlockAffinity) string { return o.Spec.Node }),
		col("CIDR", func(o *v1.BlockAffinity) string { return o.Spec.CIDR }),
		col("STATE", func(o *v1.BlockAffinity) string { return string(o.Spec.State) }),
		wide(col("DELETED", func(o *v1.BlockAffinity) string { return boolStr(o.Spec.Deleted) })),
	},
	"IPAMHandle": {
		col("HANDLEID", func(o *v1.IPAMHandle) string { return o.Spec.HandleID }),
		col("ADDRESSES", func(o *v1.IPAMHandle) string { return strconv.Itoa(sumMap(o.Spec.Block)) }),
		wide(col("BLOCKS", func(o *v1.IPAMHandle) string { return joinStr(sortedKeys(o.Spec.Block)) })),
		wide(col("DELETED", func(o *v1.IPAMHandle) string { return boolStr(o.Spec.Deleted) })),
	},
	"BGPConfiguration": {
		col("LOGSEVERITY", func(o *v1.BGPConfiguration) string { return o.Spec.LogSeverityScreen }),
		col("MESHENABLED", func(o *v1.BGPConfiguration) string { return boolPtr(o.Spec.NodeToNodeMeshEnabled, true) }),
		col("ASNUMBER", func(o *v1.BGPConfiguration) string { return asnPtr(o.Spec.ASNumber) }),
		wide(col("LISTENPORT", func(o *v1.BGPConfiguration) string { return uintStr(uint64(o.Spec.ListenPort)) })),
		wide(col("SERVICECLUSTERIPS", func(o *v1.BGPConfiguration) string {
			return joinBy(o.Spec.ServiceClusterIPs, func(b v1.ServiceClusterIPBlock) string { return b.CIDR })
		})),
		wide(col("SERVICEEXTERNALIPS", func(o *v1.BGPConfiguration) string {
			return joinBy(o.Spec.ServiceExternalIPs, func(b v1.ServiceExternalIPBlock) string { return b.CIDR })
		})),
		wide(col("SERVICELOADBALANCERIPS", func(o *v1.BGPConfiguration) string {
			return joinBy(o.Spec.ServiceLoadBalancerIPs, func(b v1.ServiceLoadBalancerIPBlock) string { return b.CIDR })
		})),
	},
	"BGPPeer": {
		col("PEERIP", func(o *v1.BGPPeer) string { return o.Spec.PeerIP }),
		col("NODE", func(o *v1.BGPPeer) string { return peerNode(o) }),
		col("ASN", func(o *v1.BGPPeer) string { return uintStr(uint64(o.Spec.ASNumber)) }),
		wide(col("PEERSELECTOR", func(o *v1.BGPPeer) string { return o.Spec.PeerSelector })),
		wide(col("LOCALASN", func(o *v1.BGPPeer) string { return asnPtr(o.Spec.LocalASNumber) })),
		wide(col("NEXTHOPMODE", func(o *v1.BGPPeer) string { return string(o.Spec.NextHopMode) })),
		wide(col("FILTERS", func(o *v1.BGPPeer) string { return joinStr(o.Spec.Filters) })),
	},
	"BGPFilter": {
		col("EXPORTV4", func(o *v1.BGPFilter) string { return strconv.Itoa(len(o.Spec.ExportV4)) }),
		col("IMPORTV4", func(o *v1.BGPFilter) string { return strconv.Itoa(len(o.Spec.ImportV4)) }),
		col("EXPORTV6", func(o *v1.BGPFilter) string { return strconv.Itoa(len(o.Spec.ExportV6)) }),
		col("IMPORTV6", func(o *v1.BGPFilter) string { return strconv.Itoa(len(o.Spec.ImportV6)) }),
	},
	"Node": {
		col("IPV4", func(o *v1.Node) string { return nodeBGP(o, func(b *v1.NodeBGPSpec) string { return b.IPv4Address }) }),
		col("IPV6", func(o *v1.Node) string { return nodeBGP(o, func(b *v1.NodeBGPSpec) string { return b.IPv6Address }) }),
		col("ASN", func(o *v1.Node) string {
			return nodeBGP(o, func(b *v1.NodeBGPSpec) string { return asnPtr(b.ASNumber) })
		}),
		wide(col("RRCLUSTERID", func(o *v1.Node) string {
			return nodeBGP(o, func(b *v1.NodeBGPSpec) string { return b.RouteReflectorClusterID })
		})),
		wide(col("ADDRESSES", func(o *v1.Node) string { return nodeAddresses(o) })),
	},
	"NodeStatus": {
		col("NODE", func(o *v1.NodeStatus) string { return o.Spec.Node }),
		col("READY", func(o *v1.NodeStatus) string { return boolStr(o.Status.Agent.Ready) }),
		col("ESTABLISHED", func(o *v1.NodeStatus) string { return strconv.Itoa(o.Status.BGP.NumberEstablished) }),
		col("NOTESTABLISHED", func(o *v1.NodeStatus) string { return strconv.Itoa(o.Status.BGP.NumberNotEstablished) }),
		wide(col("VERSION", func(o *v1.NodeStatus) string { return o.Status.Agent.Version })),
		wide(col("LOCALROUTES", func(o *v1.NodeStatus) string { return strconv.Itoa(o.Status.Routes.Local) })),
		wide(col("LEARNEDROUTES", func(o *v1.NodeStatus) string { return strconv.Itoa(o.Status.Routes.Learned) })),
		wide(col("LASTUPDATED", func(o *v1.NodeStatus) string { return timeStr(o.Status.LastUpdated) })),
	},
	"WorkloadEndpoint": {
		col("WORKLOAD", func(o *v1.WorkloadEndpoint) string { return o.Spec.Workload }),
		col("NODE", func(o *v1.WorkloadEndpoint) string { return o.Spec.Node }),
		col("NETWORKS", func(o *v1.WorkloadEndpoint) string { return joinStr(o.Spec.IPNetworks) }),
		col("INTERFACE", func(o *v1.WorkloadEndpoint) string { return o.Spec.InterfaceName }),
		wide(col("ORCHESTRATOR", func(o *v1.WorkloadEndpoint) string { return o.Spec.Orchestrator })),
		wide(col("MAC", func(o *v1.WorkloadEndpoint) string { return o.Spec.MAC })),
		wide(col("PROFILES", func(o *v1.WorkloadEndpoint) string { return joinStr(o.Spec.Profiles) })),
	},
	"HostEndpoint": {
		col("NODE", func(o *v1.HostEndpoint) string { return o.Spec.Node }),
		col("INTERFACE", func(o *v1.HostEndpoint) string { return o.Spec.InterfaceName }),
		col("EXPECTEDIPS", func(o *v1.HostEndpoint) string { return joinStr(o.Spec.ExpectedIPs) }),
		wide(col("PROFILES", func(o *v1.HostEndpoint) string { return joinStr(o.Spec.Profiles) })),
	},
	"NetworkPolicy": {
		col("ORDER", func(o *v1.NetworkPolicy) string { return orderStr(o.Spec.Order) }),
		col("SELECTOR", func(o *v1.NetworkPolicy) string { return selectorStr(o.Spec.Selector) }),
		wide(col("TYPES", func(o *v1.NetworkPolicy) string { return joinStr(o.Spec.Types) })),
		wide(col("INGRESS", func(o *v1.NetworkPolicy) string { return strconv.Itoa(len(o.Spec.Ingress)) })),
		wide(col("EGRESS", func(o *v1.NetworkPolicy) string { return strconv.Itoa(len(o.Spec.Egress)) })),
	},
	"GlobalNetworkPolicy": {
		col("ORDER", func(o *v1.GlobalNetworkPolicy) string { return orderStr(o.Spec.Order) }),
		col("SELECTOR", func(o *v1.GlobalNetworkPolicy) string { return selectorStr(o.Spec.Selector) }),
		wide(col("NAMESPACESELECTOR", func(o *v1.GlobalNetworkPolicy) string { return o.Spec.NamespaceSelector })),
		wide(col("TYPES", func(o *v1.GlobalNetworkPolicy) string { return joinStr(o.Spec.Types) })),
		wide(col("INGRESS", func(o *v1.GlobalNetworkPolicy) string { return strconv.Itoa(len(o.Spec.Ingress)) })),
		wide(col("EGRESS", func(o *v1.GlobalNetworkPolicy) string { return strconv.Itoa(len(o.Spec.Egress)) })),
		wide(col("DONOTTRACK", func(o *v1.GlobalNetworkPolicy) string { return boolStr(o.Spec.DoNotTrack) })),
		wide(col("APPLYONFORWARD", func(o *v1.GlobalNetworkPolicy) string { return boolStr(o.Spec.ApplyOnForward) })),
	},
	"NetworkSet": {
		col("NETS", func(o *v1.NetworkSet) string { return joinStr(o.Spec.Nets) }),
		wide(col("LABELS", func(o *v1.NetworkSet) string { return labelsStr(o.Labels) })),
	},
	"GlobalNetworkSet": {
		col("NETS", func(o *v1.GlobalNetworkSet) string { return joinStr(o.Spec.Nets) }),
		wide(col("LABELS", func(o *v1.GlobalNetworkSet) string { return labelsStr(o.Labels) })),
	},
	"FelixConfiguration": {
		col("LOGSEVERITY", func(o *v1.FelixConfiguration) string { return o.Spec.LogSeverityScreen }),
		col("INTERFACEPREFIX", func(o *v1.FelixConfiguration) string { return o.Spec.InterfacePrefix }),
		wide(col("BPFLOGLEVEL", func(o *v1.FelixConfiguration) string { return o.Spec.BPFLogLevel })),
		wide(col("ENDPOINTTOHOSTACTION", func(o *v1.FelixConfiguration) string { return o.Spec.DefaultEndpointToHostAction })),
		wide(col("HEALTHPORT", func(o *v1.FelixConfiguration) string { return intPtr(o.Spec.HealthPort) })),
		wide(col("METRICSPORT", func(o *v1.FelixConfiguration) string { return intPtr(o.Spec.PrometheusMetricsPort) })),
	},
}

// columnsFor returns NAME and the kind's columns (wide ones only when wide).
func columnsFor(kind string, wideOut bool) []column {
	out := []column{nameCol}
	for _, c := range tables[kind] {
		if !c.wideOnly || wideOut {
			out = append(out, c)
		}
	}
	return out
}

func boolStr(b bool) string { return strconv.FormatBool(b) }

func boolPtr(b *bool, def bool) string {
	if b == nil {
		return strconv.FormatBool(def)
	}
	return strconv.FormatBool(*b)
}

func strPtr(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func intPtr(i *int) string {
	if i == nil {
		return ""
	}
	return strconv.Itoa(*i)
}

func uintStr(u uint64) string {
	if u == 0 {
		return ""
	}
	return strconv.FormatUint(u, 10)
}

func asnPtr(a *v1.ASNumber) string {
	if a == nil {
		return ""
	}
	return uintStr(uint64(*a))
}

func orderStr(o *float64) string {
	if o == nil {
		return ""
	}
	return strconv.FormatFloat(*o, 'g', -1, 64)
}

// selectorStr shows an empty policy selector as what it means.
func selectorStr(s string) string {
	if s == "" {
		return "all()"
	}
	return s
}

func timeStr(t metav1.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func joinStr[S ~string](ss []S) string {
	parts := make([]string, len(ss))
	for i, s := range ss {
		parts[i] = string(s)
	}
	return strings.Join(parts, ",")
}

func labelsStr(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, k+"="+m[k])
	}
	return strings.Join(parts, ",")
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func sumMap(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// usedAddresses counts the block's addresses that are not free.
func usedAddresses(b *v1.IPAMBlock) int {
	return max(len(b.Spec.Allocations)-len(b.Spec.Unallocated), 0)
}

func joinBy[T any](xs []T, f func(T) string) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = f(x)
	}
	return strings.Join(parts, ",")
}

// peerNode is where a peering applies: one node, the selected nodes, or every node.
func peerNode(p *v1.BGPPeer) string {
	switch {
	case p.Spec.Node != "":
		return p.Spec.Node
	case p.Spec.NodeSelector != "":
		return p.Spec.NodeSelector
	}
	return "(global)"
}

func nodeBGP(n *v1.Node, f func(*v1.NodeBGPSpec) string) string {
	if n.Spec.BGP == nil {
		return ""
	}
	return f(n.Spec.BGP)
}

func nodeAddresses(n *v1.Node) string {
	return joinBy(n.Spec.Addresses, func(a v1.NodeAddress) string { return a.Address })
}
