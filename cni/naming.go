package cni

import (
	"crypto/sha1"
	"encoding/hex"
	"strings"
)

// Naming conventions Calico users recognise.
const (
	// VethPrefix starts every host-side workload interface Tabby creates.
	VethPrefix = "cali"
	// vethHashLen hex chars of the hash follow the prefix: 4 + 11 = 15 = IFNAMSIZ - 1.
	vethHashLen = 11
	// maxNameLen is the longest Kubernetes object name (a DNS subdomain).
	maxNameLen = 253
	// wepHashLen hex chars of sha1 end a WorkloadEndpoint name that had to be cut.
	wepHashLen = 10
)

// VethName is the host-side veth of a pod: "cali" + the first 11 hex chars of
// sha1("<namespace>.<pod>").
func VethName(namespace, pod string) string {
	sum := sha1.Sum([]byte(namespace + "." + pod))
	return VethPrefix + hex.EncodeToString(sum[:])[:vethHashLen]
}

// WEPName is the WorkloadEndpoint of a pod's interface: "<node>-k8s-<pod>-<endpoint>",
// lower-case. A name longer than 253 characters is cut and ends with "-" and 10 hex
// chars of the sha1 of the full name, so it stays unique and valid.
func WEPName(node, pod, endpoint string) string {
	name := strings.ToLower(node + "-k8s-" + pod + "-" + endpoint)
	if len(name) <= maxNameLen {
		return name
	}
	sum := sha1.Sum([]byte(name))
	prefix := strings.TrimRight(name[:maxNameLen-wepHashLen-1], "-.")
	return prefix + "-" + hex.EncodeToString(sum[:])[:wepHashLen]
}
