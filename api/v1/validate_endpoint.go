package v1

import (
	"fmt"
	"net/netip"

	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// MaxInterfaceNameLen is the kernel's limit on interface names (IFNAMSIZ - 1).
const MaxInterfaceNameLen = 15

func validateInterfaceName(p *field.Path, s string) field.ErrorList {
	if s == "" {
		return field.ErrorList{field.Required(p, "")}
	}
	if len(s) > MaxInterfaceNameLen {
		return field.ErrorList{field.Invalid(p, s, fmt.Sprintf("longer than the kernel limit of %d characters", MaxInterfaceNameLen))}
	}
	for _, c := range s {
		if c <= ' ' || c == '/' || c == ':' || c > '~' {
			return field.ErrorList{field.Invalid(p, s, "interface names have no spaces, '/' or ':'")}
		}
	}
	return nil
}

func validatePorts(p *field.Path, ports []WorkloadEndpointPort) field.ErrorList {
	var errs field.ErrorList
	for i, port := range ports {
		pp := p.Index(i)
		for _, msg := range validation.IsValidPortName(port.Name) {
			errs = append(errs, field.Invalid(pp.Child("name"), port.Name, msg))
		}
		switch port.Protocol {
		case "TCP", "UDP", "SCTP":
		default:
			errs = append(errs, field.NotSupported(pp.Child("protocol"), port.Protocol, []string{"TCP", "UDP", "SCTP"}))
		}
		if port.Port == 0 {
			errs = append(errs, field.Invalid(pp.Child("port"), 0, "must be 1-65535"))
		}
	}
	return errs
}

func validateWorkloadEndpoint(o *WorkloadEndpoint) field.ErrorList {
	p := field.NewPath("spec")
	s := o.Spec
	var errs field.ErrorList
	switch s.Orchestrator {
	case OrchestratorPod, OrchestratorLibvirt:
	default:
		errs = append(errs, field.NotSupported(p.Child("orchestrator"), s.Orchestrator, []string{OrchestratorPod, OrchestratorLibvirt}))
	}
	if s.Workload == "" {
		errs = append(errs, field.Required(p.Child("workload"), "the pod or domain name"))
	}
	if s.Node == "" {
		errs = append(errs, field.Required(p.Child("node"), ""))
	}
	errs = append(errs, validateInterfaceName(p.Child("interfaceName"), s.InterfaceName)...)
	errs = append(errs, validateMAC(p.Child("mac"), s.MAC)...)
	for i, n := range s.IPNetworks {
		np := p.Child("ipNetworks").Index(i)
		pfx, e := validateCIDR(np, n, true)
		errs = append(errs, e...)
		if len(e) == 0 && pfx.Bits() != pfx.Addr().BitLen() {
			errs = append(errs, field.Invalid(np, n, fmt.Sprintf("a workload address is a single address (/%d)", pfx.Addr().BitLen())))
		}
	}
	errs = append(errs, validatePorts(p.Child("ports"), s.Ports)...)
	errs = append(errs, validateNets(p.Child("allowSpoofedSourcePrefixes"), s.AllowSpoofedSourcePrefixes)...)
	return errs
}

func validateHostEndpoint(o *HostEndpoint) field.ErrorList {
	p := field.NewPath("spec")
	var errs field.ErrorList
	if o.Spec.Node == "" {
		errs = append(errs, field.Required(p.Child("node"), ""))
	}
	if o.Spec.InterfaceName == "" && len(o.Spec.ExpectedIPs) == 0 {
		errs = append(errs, field.Required(p.Child("interfaceName"), "give interfaceName or expectedIPs"))
	}
	if o.Spec.InterfaceName != "" && o.Spec.InterfaceName != "*" {
		errs = append(errs, validateInterfaceName(p.Child("interfaceName"), o.Spec.InterfaceName)...)
	}
	for i, ip := range o.Spec.ExpectedIPs {
		if _, err := netip.ParseAddr(ip); err != nil {
			errs = append(errs, field.Invalid(p.Child("expectedIPs").Index(i), ip, "not an IP address"))
		}
	}
	errs = append(errs, validatePorts(p.Child("ports"), o.Spec.Ports)...)
	return errs
}

func validateFelixConfiguration(o *FelixConfiguration) field.ErrorList {
	p := field.NewPath("spec")
	errs := validateConfigName(field.NewPath("metadata", "name"), o.Name)
	errs = append(errs, validatePositiveDuration(p.Child("routeRefreshInterval"), o.Spec.RouteRefreshInterval)...)
	errs = append(errs, validatePositiveDuration(p.Child("reportingInterval"), o.Spec.ReportingInterval)...)
	for k, d := range o.Spec.BPFConntrackTimeouts {
		errs = append(errs, validatePositiveDuration(p.Child("bpfConntrackTimeouts").Key(k), &d)...)
	}
	for name, port := range map[string]*int{"prometheusMetricsPort": o.Spec.PrometheusMetricsPort, "healthPort": o.Spec.HealthPort} {
		if port != nil && (*port < 1 || *port > 65535) {
			errs = append(errs, field.Invalid(p.Child(name), *port, "must be 1-65535"))
		}
	}
	if o.Spec.RouteTableProtocol != nil {
		v := *o.Spec.RouteTableProtocol
		switch v {
		case 2, 3, 4, 11, 12, 16, 17, 18, 42, 80, 186, 187, 188, 189, 192:
			errs = append(errs, field.Invalid(p.Child("routeTableProtocol"), v, "is a protocol number another routing daemon or the kernel uses"))
		default:
			if v < 1 || v > 255 {
				errs = append(errs, field.Invalid(p.Child("routeTableProtocol"), v, "must be 1-255"))
			}
		}
	}
	if pfx := o.Spec.InterfacePrefix; pfx != "" && len(pfx) > 8 {
		errs = append(errs, field.Invalid(p.Child("interfacePrefix"), pfx, "at most 8 characters, so names fit the kernel limit"))
	}
	return errs
}
