package v1

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"strings"

	"github.com/tabbynet/tabby/api/v1/selector"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// ErrInvalid is wrapped by every validation failure.
var ErrInvalid = errors.New("invalid resource")

// ValidationError lists everything wrong with one object. Each entry names the field
// path and the bad value.
// +kubebuilder:object:generate=false
type ValidationError struct {
	Kind      string
	Namespace string
	Name      string
	Errs      field.ErrorList
}

func (e *ValidationError) Error() string {
	id := e.Name
	if e.Namespace != "" {
		id = e.Namespace + "/" + e.Name
	}
	msgs := make([]string, 0, len(e.Errs))
	for _, fe := range e.Errs {
		msgs = append(msgs, fe.Error())
	}
	return fmt.Sprintf("%s %q is invalid: %s", e.Kind, id, strings.Join(msgs, "; "))
}

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

// Validate checks one object on its own: its name, and every field of its spec. It does
// not default: call Default first for the object that will be written.
func Validate(obj Object) error {
	r, ok := ResourceOf(obj)
	if !ok {
		return fmt.Errorf("%w: %T is not a Tabby resource", ErrInvalid, obj)
	}
	errs := validateMeta(r, obj)
	switch o := obj.(type) {
	case *IPPool:
		errs = append(errs, validateIPPool(o)...)
	case *IPAMConfiguration:
		errs = append(errs, validateIPAMConfiguration(o)...)
	case *IPReservation:
		errs = append(errs, validateIPReservation(o)...)
	case *IPAMBlock:
		errs = append(errs, validateIPAMBlock(o)...)
	case *BlockAffinity:
		errs = append(errs, validateBlockAffinity(o)...)
	case *IPAMHandle:
		if o.Spec.HandleID == "" {
			errs = append(errs, field.Required(field.NewPath("spec", "handleID"), ""))
		}
	case *BGPConfiguration:
		errs = append(errs, validateBGPConfiguration(o)...)
	case *BGPPeer:
		errs = append(errs, validateBGPPeer(o)...)
	case *BGPFilter:
		errs = append(errs, validateBGPFilter(o)...)
	case *Node:
		errs = append(errs, validateNode(o)...)
	case *NodeStatus:
		if o.Spec.Node == "" {
			errs = append(errs, field.Required(field.NewPath("spec", "node"), ""))
		}
	case *WorkloadEndpoint:
		errs = append(errs, validateWorkloadEndpoint(o)...)
	case *HostEndpoint:
		errs = append(errs, validateHostEndpoint(o)...)
	case *NetworkPolicy:
		s := o.Spec
		errs = append(errs, validatePolicy(field.NewPath("spec"), s.Selector, "", s.ServiceAccountSelector, s.Types, s.Ingress, s.Egress)...)
	case *GlobalNetworkPolicy:
		s := o.Spec
		errs = append(errs, validatePolicy(field.NewPath("spec"), s.Selector, s.NamespaceSelector, s.ServiceAccountSelector, s.Types, s.Ingress, s.Egress)...)
	case *NetworkSet:
		errs = append(errs, validateNets(field.NewPath("spec", "nets"), o.Spec.Nets)...)
	case *GlobalNetworkSet:
		errs = append(errs, validateNets(field.NewPath("spec", "nets"), o.Spec.Nets)...)
	case *FelixConfiguration:
		errs = append(errs, validateFelixConfiguration(o)...)
	}
	if len(errs) == 0 {
		return nil
	}
	return &ValidationError{Kind: r.Kind, Namespace: obj.GetNamespace(), Name: obj.GetName(), Errs: errs}
}

// ValidateAgainst checks obj against other objects that will exist beside it: today,
// that an IPPool overlaps no other pool. Objects with obj's kind and name are skipped (an
// update replaces them).
func ValidateAgainst(obj Object, others []Object) error {
	pool, ok := obj.(*IPPool)
	if !ok {
		return nil
	}
	mine, err := netip.ParsePrefix(pool.Spec.CIDR)
	if err != nil {
		return nil // Validate reports it
	}
	var errs field.ErrorList
	for _, o := range others {
		other, ok := o.(*IPPool)
		if !ok || other.Name == pool.Name {
			continue
		}
		theirs, err := netip.ParsePrefix(other.Spec.CIDR)
		if err != nil {
			continue
		}
		if mine.Overlaps(theirs) {
			errs = append(errs, field.Invalid(field.NewPath("spec", "cidr"), pool.Spec.CIDR,
				fmt.Sprintf("overlaps IPPool %q (%s)", other.Name, other.Spec.CIDR)))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return &ValidationError{Kind: "IPPool", Name: pool.Name, Errs: errs}
}

func validateMeta(r Resource, obj Object) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("metadata")
	name := obj.GetName()
	if name == "" && obj.GetGenerateName() == "" {
		errs = append(errs, field.Required(p.Child("name"), "every resource needs a name"))
	} else if name != "" {
		for _, msg := range validation.IsDNS1123Subdomain(name) {
			errs = append(errs, field.Invalid(p.Child("name"), name, msg))
		}
	}
	if r.Namespaced && obj.GetNamespace() != "" {
		for _, msg := range validation.IsDNS1123Label(obj.GetNamespace()) {
			errs = append(errs, field.Invalid(p.Child("namespace"), obj.GetNamespace(), msg))
		}
	}
	if !r.Namespaced && obj.GetNamespace() != "" {
		errs = append(errs, field.Invalid(p.Child("namespace"), obj.GetNamespace(), r.Kind+" is cluster-scoped: remove the namespace"))
	}
	for k, v := range obj.GetLabels() {
		for _, msg := range validation.IsQualifiedName(k) {
			errs = append(errs, field.Invalid(p.Child("labels"), k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			errs = append(errs, field.Invalid(p.Child("labels").Key(k), v, msg))
		}
	}
	return errs
}

// validateCIDR checks a masked CIDR; bare addresses are accepted as /32 or /128 when
// allowBare is set.
func validateCIDR(p *field.Path, s string, allowBare bool) (netip.Prefix, field.ErrorList) {
	if allowBare && !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, field.ErrorList{field.Invalid(p, s, "not an IP address or CIDR")}
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	pfx, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, field.ErrorList{field.Invalid(p, s, "not a CIDR, e.g. 10.244.0.0/16")}
	}
	if pfx.Addr().Zone() != "" {
		return netip.Prefix{}, field.ErrorList{field.Invalid(p, s, "a CIDR has no zone")}
	}
	if m := pfx.Masked(); m != pfx {
		return netip.Prefix{}, field.ErrorList{field.Invalid(p, s, fmt.Sprintf("host bits set: the network address is %s", m))}
	}
	return pfx, nil
}

func validateNets(p *field.Path, nets []string) field.ErrorList {
	var errs field.ErrorList
	for i, n := range nets {
		_, e := validateCIDR(p.Index(i), n, true)
		errs = append(errs, e...)
	}
	return errs
}

func validateSelector(p *field.Path, s string) field.ErrorList {
	if s == "" {
		return nil
	}
	if _, err := selector.Parse(s); err != nil {
		return field.ErrorList{field.Invalid(p, s, err.Error())}
	}
	return nil
}

func validateSecretRef(p *field.Path, pw *BGPPassword) field.ErrorList {
	if pw == nil {
		return nil
	}
	if pw.SecretKeyRef == nil {
		return field.ErrorList{field.Required(p.Child("secretKeyRef"), "a password is read from a Secret")}
	}
	var errs field.ErrorList
	if pw.SecretKeyRef.Name == "" {
		errs = append(errs, field.Required(p.Child("secretKeyRef", "name"), ""))
	}
	if pw.SecretKeyRef.Key == "" {
		errs = append(errs, field.Required(p.Child("secretKeyRef", "key"), ""))
	}
	return errs
}

func validateASN(p *field.Path, asn *ASNumber) field.ErrorList {
	if asn != nil && *asn == 0 {
		return field.ErrorList{field.Invalid(p, uint32(*asn), "AS number must be 1-4294967295")}
	}
	return nil
}

func validateMAC(p *field.Path, s string) field.ErrorList {
	if s == "" {
		return nil
	}
	if hw, err := net.ParseMAC(s); err != nil || len(hw) != 6 {
		return field.ErrorList{field.Invalid(p, s, "not a 48-bit MAC address, e.g. 52:54:00:12:34:56")}
	}
	return nil
}

func isV6CIDR(s string) bool {
	p, err := netip.ParsePrefix(s)
	return err == nil && p.Addr().Is6()
}

func sameType(a, b any) bool { return reflect.TypeOf(a) == reflect.TypeOf(b) }
