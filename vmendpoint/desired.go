package vmendpoint

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	v1 "github.com/tabbynet/tabby/api/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"libvirt.org/go/libvirtxml"
)

// Namespace is the XML namespace of Tabby's element in a domain's <metadata>.
const Namespace = "https://tabby.dev/xmlns/vm/1.0"

// Labels Tabby puts on every VM WorkloadEndpoint, beside the domain's own (metadata
// labels cannot override them). They match the ones the CNI plugin puts on pods.
const (
	LabelNamespace    = "tabby.dev/namespace"
	LabelOrchestrator = "tabby.dev/orchestrator"
	// ProfilePrefix names the profile of a namespace: kns.<namespace>, as for pods.
	ProfilePrefix = "kns."
	reservedLabel = "tabby.dev/"
)

// Options say which interfaces become endpoints and where they go.
type Options struct {
	// Node is this node's name (spec.node, and the start of every endpoint's name).
	Node string
	// DefaultNamespace holds the endpoints of domains whose metadata names none.
	DefaultNamespace string
	// TapPrefixes: an ethernet interface becomes an endpoint only when its tap starts
	// with one of them; empty means every ethernet interface.
	TapPrefixes []string
}

// Domain is what the source reports of one libvirt domain.
type Domain struct {
	UUID string
	Name string
	// Active: the domain has a QEMU process (running, paused, shutting down), so its
	// taps exist.
	Active bool
	// Running: its CPUs run here (libvirt state running).
	Running bool
	// MigrationPaused: paused for a live migration, on either side (libvirt state
	// paused, reason migration or postcopy).
	MigrationPaused bool
	// MigratingOut: paused for a migration with the outgoing migration job here: the
	// source (the destination is paused too, before the guest resumes there).
	MigratingOut bool
	// XML is the live XML of an active domain (it names the taps), else the inactive one.
	XML string
}

// Endpoint is one desired WorkloadEndpoint: a tap of an active domain.
type Endpoint struct {
	// Name and Namespace of the WorkloadEndpoint.
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Domain    string `json:"domain"`
	UUID      string `json:"uuid"`
	Tap       string `json:"tap"`
	// MAC of the guest's NIC, lower-case.
	MAC      string            `json:"mac"`
	Labels   map[string]string `json:"labels,omitempty"`
	Hostname string            `json:"hostname,omitempty"`
	// IP is a fixed address from the metadata (zero: any from IPAM).
	IP netip.Addr `json:"ip,omitzero"`
	// Pools limits IPAM to these IPPools (by name or CIDR).
	Pools []string `json:"pools,omitempty"`
	// Ports are the guest's named ports (policies may name them, as a pod's).
	Ports []v1.WorkloadEndpointPort `json:"ports,omitempty"`
}

// Desired is a domain's endpoints, and what was wrong with its metadata (a bad label or
// address is left out and reported; the rest still applies).
type Desired struct {
	Endpoints []Endpoint `json:"endpoints"`
	Problems  []string   `json:"problems,omitempty"`
}

// Metadata is Tabby's element in a domain's <metadata>:
//
//	<tabby:endpoint xmlns:tabby="https://tabby.dev/xmlns/vm/1.0" namespace="prod" hostname="web-1" pools="vms">
//	  <tabby:label key="app" value="web"/>
//	  <tabby:interface mac="52:54:00:12:34:56" ip="10.65.0.10" pools="vms"/>
//	  <tabby:port name="http" protocol="TCP" port="80"/>
//	</tabby:endpoint>
type Metadata struct {
	XMLName    xml.Name            `xml:"https://tabby.dev/xmlns/vm/1.0 endpoint"`
	Namespace  string              `xml:"namespace,attr"`
	Hostname   string              `xml:"hostname,attr"`
	Pools      string              `xml:"pools,attr"`
	Labels     []MetadataLabel     `xml:"https://tabby.dev/xmlns/vm/1.0 label"`
	Interfaces []MetadataInterface `xml:"https://tabby.dev/xmlns/vm/1.0 interface"`
	Ports      []MetadataPort      `xml:"https://tabby.dev/xmlns/vm/1.0 port"`
}

// MetadataPort is a named port of the guest (every NIC): <tabby:port name="http"
// protocol="TCP" port="80"/>; protocol TCP (default), UDP or SCTP.
type MetadataPort struct {
	Name     string `xml:"name,attr"`
	Protocol string `xml:"protocol,attr"`
	Port     string `xml:"port,attr"`
}

// MetadataLabel is one label of the domain's endpoints.
type MetadataLabel struct {
	Key   string `xml:"key,attr"`
	Value string `xml:"value,attr"`
}

// MetadataInterface sets a fixed address (or pools) for the NIC with this MAC.
type MetadataInterface struct {
	MAC   string `xml:"mac,attr"`
	IP    string `xml:"ip,attr"`
	Pools string `xml:"pools,attr"`
}

// ParseMetadata finds Tabby's element among the children of <metadata> (nil if absent).
func ParseMetadata(inner string) (*Metadata, error) {
	d := xml.NewDecoder(strings.NewReader(inner))
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, nil // end of the metadata (or junk after it): no Tabby element
		}
		se, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if se.Name.Space != Namespace || se.Name.Local != "endpoint" {
			if err := d.Skip(); err != nil {
				return nil, nil
			}
			continue
		}
		var m Metadata
		if err := d.DecodeElement(&m, &se); err != nil {
			return nil, fmt.Errorf("parse tabby metadata: %w", err)
		}
		return &m, nil
	}
}

// DesiredEndpoints computes a domain's endpoints from its XML: one for each ethernet
// interface (a tap, no bridge) whose tap matches opts.TapPrefixes, only while the domain
// is active. An XML that does not parse is an error; bad metadata is a problem.
func DesiredEndpoints(d Domain, opts Options) (Desired, error) {
	var out Desired
	var x libvirtxml.Domain
	if err := x.Unmarshal(d.XML); err != nil {
		return out, fmt.Errorf("parse the XML of domain %s: %w", d.Name, err)
	}
	var md *Metadata
	if x.Metadata != nil {
		m, err := ParseMetadata(x.Metadata.XML)
		if err != nil {
			out.Problems = append(out.Problems, err.Error())
		}
		md = m
	}
	if md == nil {
		md = &Metadata{}
	}
	ns := opts.DefaultNamespace
	if md.Namespace != "" {
		if errs := validation.IsDNS1123Label(md.Namespace); len(errs) > 0 {
			out.Problems = append(out.Problems, fmt.Sprintf("metadata namespace %q: %s; using %q", md.Namespace, strings.Join(errs, ", "), ns))
		} else {
			ns = md.Namespace
		}
	}
	labels := map[string]string{}
	for _, l := range md.Labels {
		if p := labelProblem(l); p != "" {
			out.Problems = append(out.Problems, p)
			continue
		}
		labels[l.Key] = l.Value
	}
	labels[LabelNamespace] = ns
	labels[LabelOrchestrator] = "libvirt"
	hostname := md.Hostname
	if hostname == "" {
		hostname = sanitise(d.Name, 63)
	}
	var ports []v1.WorkloadEndpointPort
	seen := map[string]bool{}
	for _, mp := range md.Ports {
		p, problem := metadataPort(mp)
		if problem == "" && seen[p.Name] {
			problem = fmt.Sprintf("metadata port %q: named twice", p.Name)
		}
		if problem != "" {
			out.Problems = append(out.Problems, problem)
			continue
		}
		seen[p.Name] = true
		ports = append(ports, p)
	}
	fixed := map[string]MetadataInterface{}
	for _, mi := range md.Interfaces {
		hw, err := net.ParseMAC(mi.MAC)
		if err != nil {
			out.Problems = append(out.Problems, fmt.Sprintf("metadata interface mac %q: not a MAC address", mi.MAC))
			continue
		}
		fixed[hw.String()] = mi
	}
	if !d.Active || x.Devices == nil {
		return out, nil
	}
	for i, ifc := range x.Devices.Interfaces {
		if ifc.Source == nil || ifc.Source.Ethernet == nil {
			continue // not a bridge-less tap
		}
		if ifc.Target == nil || ifc.Target.Dev == "" || !hasPrefix(ifc.Target.Dev, opts.TapPrefixes) {
			continue
		}
		if ifc.MAC == nil {
			out.Problems = append(out.Problems, fmt.Sprintf("interface %d (%s) has no MAC address", i, ifc.Target.Dev))
			continue
		}
		hw, err := net.ParseMAC(ifc.MAC.Address)
		if err != nil {
			out.Problems = append(out.Problems, fmt.Sprintf("interface %d (%s): MAC %q: %v", i, ifc.Target.Dev, ifc.MAC.Address, err))
			continue
		}
		e := Endpoint{Name: EndpointName(opts.Node, d.Name, ifc.Target.Dev), Namespace: ns, Domain: d.Name, UUID: d.UUID,
			Tap: ifc.Target.Dev, MAC: hw.String(), Labels: labels, Hostname: hostname, Pools: splitList(md.Pools), Ports: ports}
		if mi, ok := fixed[e.MAC]; ok {
			if mi.IP != "" {
				ip, err := netip.ParseAddr(mi.IP)
				if err != nil || ip.Zone() != "" {
					out.Problems = append(out.Problems, fmt.Sprintf("metadata interface %s: ip %q is not an IP address", e.MAC, mi.IP))
				} else {
					e.IP = ip.Unmap()
				}
			}
			if mi.Pools != "" {
				e.Pools = splitList(mi.Pools)
			}
		}
		out.Endpoints = append(out.Endpoints, e)
	}
	sort.Slice(out.Endpoints, func(i, j int) bool { return out.Endpoints[i].Tap < out.Endpoints[j].Tap })
	return out, nil
}

// metadataPort checks one named port: a valid port name (IANA service name), protocol
// TCP, UDP or SCTP (default TCP), a port 1-65535.
func metadataPort(mp MetadataPort) (v1.WorkloadEndpointPort, string) {
	if errs := validation.IsValidPortName(mp.Name); len(errs) > 0 {
		return v1.WorkloadEndpointPort{}, fmt.Sprintf("metadata port name %q: %s", mp.Name, strings.Join(errs, ", "))
	}
	proto := strings.ToUpper(strings.TrimSpace(mp.Protocol))
	switch proto {
	case "":
		proto = "TCP"
	case "TCP", "UDP", "SCTP":
	default:
		return v1.WorkloadEndpointPort{}, fmt.Sprintf("metadata port %q: protocol %q is not TCP, UDP or SCTP", mp.Name, mp.Protocol)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(mp.Port), 10, 16)
	if err != nil || n == 0 {
		return v1.WorkloadEndpointPort{}, fmt.Sprintf("metadata port %q: port %q is not 1-65535", mp.Name, mp.Port)
	}
	return v1.WorkloadEndpointPort{Name: mp.Name, Protocol: proto, Port: uint16(n)}, ""
}

func labelProblem(l MetadataLabel) string {
	if strings.HasPrefix(l.Key, reservedLabel) {
		return fmt.Sprintf("metadata label %q: the tabby.dev/ prefix is reserved", l.Key)
	}
	if errs := validation.IsQualifiedName(l.Key); len(errs) > 0 {
		return fmt.Sprintf("metadata label key %q: %s", l.Key, strings.Join(errs, ", "))
	}
	if errs := validation.IsValidLabelValue(l.Value); len(errs) > 0 {
		return fmt.Sprintf("metadata label %s value %q: %s", l.Key, l.Value, strings.Join(errs, ", "))
	}
	return ""
}

func hasPrefix(s string, prefixes []string) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, p := range prefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// maxNameLen is the longest Kubernetes object name; hashLen hex chars of sha1 end a
// name that had to be cut or changed.
const (
	maxNameLen = 253
	hashLen    = 10
)

// EndpointName is the WorkloadEndpoint of a guest's tap: "<node>-libvirt-<domain>-<tap>",
// lower-case, like Calico's. Characters a Kubernetes name cannot hold become "-"; a
// name that had to be changed that way, or cut to 253 characters, ends with "-" and
// 10 hex chars of the sha1 of the unchanged name, so two domains never share one.
func EndpointName(node, domain, tap string) string {
	raw := node + "-libvirt-" + domain + "-" + tap
	name := sanitise(raw, maxNameLen)
	if name == strings.ToLower(raw) {
		return name
	}
	sum := sha1.Sum([]byte(raw))
	prefix := sanitise(raw, maxNameLen-hashLen-1)
	return prefix + "-" + hex.EncodeToString(sum[:])[:hashLen]
}

// sanitise lower-cases s, turns every character a DNS subdomain cannot hold into "-",
// cuts it to max and trims "-" and "." at both ends.
func sanitise(s string, max int) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			b[i] = '-'
		}
	}
	if len(b) > max {
		b = b[:max]
	}
	return strings.Trim(string(b), "-.")
}
