package cni

import (
	"net/netip"
	"sort"
	"strings"

	v1 "github.com/tabbynet/tabby/api/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Labels the plugin adds to every pod's WorkloadEndpoint, beside the pod's own.
const (
	LabelNamespace    = "tabby.dev/namespace"
	LabelOrchestrator = "tabby.dev/orchestrator"
	OrchestratorK8s   = "k8s"
	// ProfilePrefix names the profile of a namespace: kns.<namespace>.
	ProfilePrefix = "kns."
)

// endpoint is everything a WorkloadEndpoint says about one pod interface.
type endpoint struct {
	Node        string
	Pod         *corev1.Pod
	ContainerID string
	IfName      string // inside the pod (eth0)
	HostIfName  string // cali*
	MAC         string // container side
	IP          netip.Addr
}

// buildWEP makes the WorkloadEndpoint of a pod interface.
func buildWEP(e endpoint) *v1.WorkloadEndpoint {
	pod := e.Pod
	labels := make(map[string]string, len(pod.Labels)+2)
	for k, v := range pod.Labels {
		labels[k] = v
	}
	labels[LabelNamespace] = pod.Namespace
	labels[LabelOrchestrator] = OrchestratorK8s
	w := &v1.WorkloadEndpoint{
		TypeMeta: metav1.TypeMeta{APIVersion: v1.APIVersion, Kind: "WorkloadEndpoint"},
		ObjectMeta: metav1.ObjectMeta{
			Name:      WEPName(e.Node, pod.Name, e.IfName),
			Namespace: pod.Namespace,
			Labels:    labels,
		},
		Spec: v1.WorkloadEndpointSpec{
			Orchestrator:       v1.OrchestratorPod,
			Workload:           pod.Name,
			Node:               e.Node,
			ContainerID:        e.ContainerID,
			Endpoint:           e.IfName,
			ServiceAccountName: pod.Spec.ServiceAccountName,
			InterfaceName:      e.HostIfName,
			MAC:                strings.ToLower(e.MAC),
			Profiles:           []string{ProfilePrefix + pod.Namespace},
			Ports:              namedPorts(pod),
		},
	}
	if e.IP.IsValid() {
		w.Spec.IPNetworks = []string{netip.PrefixFrom(e.IP, e.IP.BitLen()).String()}
	}
	return w
}

// namedPorts lists the pod's named container ports (protocol TCP when unset), sorted by
// name, each name once.
func namedPorts(pod *corev1.Pod) []v1.WorkloadEndpointPort {
	var out []v1.WorkloadEndpointPort
	seen := map[string]bool{}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == "" || seen[p.Name] || p.ContainerPort <= 0 || p.ContainerPort > 65535 {
				continue
			}
			seen[p.Name] = true
			proto := string(p.Protocol)
			if proto == "" {
				proto = string(corev1.ProtocolTCP)
			}
			out = append(out, v1.WorkloadEndpointPort{Name: p.Name, Protocol: proto, Port: uint16(p.ContainerPort)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// wepDrift describes how a stored WorkloadEndpoint differs from the wanted one ("" if it
// does not, in the fields the plugin owns).
func wepDrift(have, want *v1.WorkloadEndpoint) string {
	var diffs []string
	add := func(field, h, w string) {
		if h != w {
			diffs = append(diffs, field+" is "+quote(h)+", want "+quote(w))
		}
	}
	hs, ws := have.Spec, want.Spec
	add("spec.orchestrator", hs.Orchestrator, ws.Orchestrator)
	add("spec.workload", hs.Workload, ws.Workload)
	add("spec.node", hs.Node, ws.Node)
	add("spec.containerID", hs.ContainerID, ws.ContainerID)
	add("spec.endpoint", hs.Endpoint, ws.Endpoint)
	add("spec.interfaceName", hs.InterfaceName, ws.InterfaceName)
	add("spec.mac", strings.ToLower(hs.MAC), ws.MAC)
	add("spec.ipNetworks", strings.Join(hs.IPNetworks, ","), strings.Join(ws.IPNetworks, ","))
	add("spec.serviceAccountName", hs.ServiceAccountName, ws.ServiceAccountName)
	add("spec.profiles", strings.Join(hs.Profiles, ","), strings.Join(ws.Profiles, ","))
	for k, v := range want.Labels {
		if have.Labels[k] != v {
			diffs = append(diffs, "label "+k+" is "+quote(have.Labels[k])+", want "+quote(v))
		}
	}
	sort.Strings(diffs)
	return strings.Join(diffs, "; ")
}

func quote(s string) string { return "\"" + s + "\"" }
