package v1

import (
	"fmt"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// protocolNumbers maps the protocol names rules accept to their IP protocol numbers.
var protocolNumbers = map[string]int{
	"TCP": 6, "UDP": 17, "ICMP": 1, "ICMPv6": 58, "SCTP": 132, "UDPLite": 136,
}

// ProtocolNumber returns the IP protocol number of a rule protocol: a name from
// TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite (any case) or a number 1-255.
func ProtocolNumber(p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		if p.IntVal < 1 || p.IntVal > 255 {
			return 0, fmt.Errorf("protocol number must be 1-255")
		}
		return int(p.IntVal), nil
	}
	for name, n := range protocolNumbers {
		if strings.EqualFold(name, p.StrVal) {
			return n, nil
		}
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil && n >= 1 && n <= 255 {
		return n, nil
	}
	return 0, fmt.Errorf("unknown protocol: use TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or a number 1-255")
}

// PortRange is an inclusive range of ports, or a named port when Name is set.
// +kubebuilder:object:generate=false
type PortRange struct {
	First, Last uint16
	Name        string
}

// ParsePort reads a rule port: a number (80), a range ("80:90") or a named port ("http").
func ParsePort(p intstr.IntOrString) (PortRange, error) {
	if p.Type == intstr.Int {
		if p.IntVal < 0 || p.IntVal > 65535 {
			return PortRange{}, fmt.Errorf("port must be 0-65535")
		}
		return PortRange{First: uint16(p.IntVal), Last: uint16(p.IntVal)}, nil
	}
	s := p.StrVal
	if lo, hi, ok := strings.Cut(s, ":"); ok {
		a, err1 := strconv.ParseUint(lo, 10, 16)
		b, err2 := strconv.ParseUint(hi, 10, 16)
		if err1 != nil || err2 != nil {
			return PortRange{}, fmt.Errorf("a port range is two numbers 0-65535, e.g. 8080:8090")
		}
		if a > b {
			return PortRange{}, fmt.Errorf("port range is reversed: %d > %d", a, b)
		}
		return PortRange{First: uint16(a), Last: uint16(b)}, nil
	}
	if n, err := strconv.ParseUint(s, 10, 16); err == nil {
		return PortRange{First: uint16(n), Last: uint16(n)}, nil
	}
	if msgs := validation.IsValidPortName(s); len(msgs) > 0 {
		return PortRange{}, fmt.Errorf("not a port, range or port name: %s", strings.Join(msgs, ", "))
	}
	return PortRange{Name: s}, nil
}

func validatePolicy(p *field.Path, sel, nsSel, saSel string, types []PolicyType, ingress, egress []Rule) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, validateSelector(p.Child("selector"), sel)...)
	errs = append(errs, validateSelector(p.Child("namespaceSelector"), nsSel)...)
	errs = append(errs, validateSelector(p.Child("serviceAccountSelector"), saSel)...)
	seen := map[PolicyType]bool{}
	for i, t := range types {
		if t != PolicyTypeIngress && t != PolicyTypeEgress {
			errs = append(errs, field.NotSupported(p.Child("types").Index(i), t, []string{"Ingress", "Egress"}))
		}
		if seen[t] {
			errs = append(errs, field.Duplicate(p.Child("types").Index(i), t))
		}
		seen[t] = true
	}
	if len(types) > 0 && len(ingress) > 0 && !seen[PolicyTypeIngress] {
		errs = append(errs, field.Invalid(p.Child("ingress"), len(ingress), "ingress rules need Ingress in types"))
	}
	if len(types) > 0 && len(egress) > 0 && !seen[PolicyTypeEgress] {
		errs = append(errs, field.Invalid(p.Child("egress"), len(egress), "egress rules need Egress in types"))
	}
	for i := range ingress {
		errs = append(errs, validateRule(p.Child("ingress").Index(i), &ingress[i])...)
	}
	for i := range egress {
		errs = append(errs, validateRule(p.Child("egress").Index(i), &egress[i])...)
	}
	return errs
}

func validateRule(p *field.Path, r *Rule) field.ErrorList {
	var errs field.ErrorList
	switch r.Action {
	case ActionAllow, ActionDeny, ActionPass, ActionLog:
	case "":
		errs = append(errs, field.Required(p.Child("action"), "Allow, Deny, Pass or Log"))
	default:
		errs = append(errs, field.NotSupported(p.Child("action"), r.Action, []string{"Allow", "Deny", "Pass", "Log"}))
	}
	if r.IPVersion != nil && *r.IPVersion != 4 && *r.IPVersion != 6 {
		errs = append(errs, field.NotSupported(p.Child("ipVersion"), *r.IPVersion, []string{"4", "6"}))
	}
	proto := 0
	if r.Protocol != nil {
		n, err := ProtocolNumber(*r.Protocol)
		if err != nil {
			errs = append(errs, field.Invalid(p.Child("protocol"), r.Protocol.String(), err.Error()))
		}
		proto = n
	}
	if r.NotProtocol != nil {
		if _, err := ProtocolNumber(*r.NotProtocol); err != nil {
			errs = append(errs, field.Invalid(p.Child("notProtocol"), r.NotProtocol.String(), err.Error()))
		}
	}
	for _, ic := range []struct {
		name string
		f    *ICMPFields
	}{{"icmp", r.ICMP}, {"notICMP", r.NotICMP}} {
		if ic.f == nil {
			continue
		}
		if proto != 1 && proto != 58 {
			errs = append(errs, field.Invalid(p.Child(ic.name), "set", "needs protocol ICMP or ICMPv6"))
		}
		if ic.f.Code != nil && ic.f.Type == nil {
			errs = append(errs, field.Required(p.Child(ic.name, "type"), "code needs a type"))
		}
		if ic.f.Type != nil && (*ic.f.Type < 0 || *ic.f.Type > 254) {
			errs = append(errs, field.Invalid(p.Child(ic.name, "type"), *ic.f.Type, "must be 0-254"))
		}
		if ic.f.Code != nil && (*ic.f.Code < 0 || *ic.f.Code > 255) {
			errs = append(errs, field.Invalid(p.Child(ic.name, "code"), *ic.f.Code, "must be 0-255"))
		}
	}
	errs = append(errs, validateEntity(p.Child("source"), &r.Source, proto)...)
	errs = append(errs, validateEntity(p.Child("destination"), &r.Destination, proto)...)
	return errs
}

func validateEntity(p *field.Path, e *EntityRule, proto int) field.ErrorList {
	var errs field.ErrorList
	errs = append(errs, validateNets(p.Child("nets"), e.Nets)...)
	errs = append(errs, validateNets(p.Child("notNets"), e.NotNets)...)
	errs = append(errs, validateSelector(p.Child("selector"), e.Selector)...)
	errs = append(errs, validateSelector(p.Child("notSelector"), e.NotSelector)...)
	errs = append(errs, validateSelector(p.Child("namespaceSelector"), e.NamespaceSelector)...)
	for _, ports := range []struct {
		name string
		list []intstr.IntOrString
	}{{"ports", e.Ports}, {"notPorts", e.NotPorts}} {
		if len(ports.list) > 0 && proto != 6 && proto != 17 && proto != 132 && proto != 136 {
			errs = append(errs, field.Invalid(p.Child(ports.name), len(ports.list), "ports need protocol TCP, UDP, SCTP or UDPLite"))
		}
		for i, port := range ports.list {
			if _, err := ParsePort(port); err != nil {
				errs = append(errs, field.Invalid(p.Child(ports.name).Index(i), port.String(), err.Error()))
			}
		}
	}
	if sa := e.ServiceAccounts; sa != nil {
		errs = append(errs, validateSelector(p.Child("serviceAccounts", "selector"), sa.Selector)...)
	}
	return errs
}

func validatePositiveDuration(p *field.Path, d *metav1.Duration) field.ErrorList {
	if d != nil && d.Duration <= 0 {
		return field.ErrorList{field.Invalid(p, d.Duration.String(), "must be a positive duration, e.g. 30s")}
	}
	return nil
}
