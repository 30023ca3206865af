package v1

// Defaults applied by Default. They are the values a Calico user expects.
const (
	DefaultBlockSizeV4  = 26
	DefaultBlockSizeV6  = 122
	DefaultNodeSelector = "all()"
	DefaultListenPort   = 179
)

// Default fills unset fields of obj with their defaults, in place. It is idempotent and
// leaves anything already set alone; it never fails (bad values are Validate's job).
func Default(obj Object) {
	switch o := obj.(type) {
	case *IPPool:
		if o.Spec.BlockSize == 0 {
			o.Spec.BlockSize = DefaultBlockSizeV4
			if isV6CIDR(o.Spec.CIDR) {
				o.Spec.BlockSize = DefaultBlockSizeV6
			}
		}
		if o.Spec.NodeSelector == "" {
			o.Spec.NodeSelector = DefaultNodeSelector
		}
		if len(o.Spec.AllowedUses) == 0 {
			o.Spec.AllowedUses = []IPPoolAllowedUse{IPPoolAllowedUseWorkload, IPPoolAllowedUseTunnel}
		}
	case *IPAMConfiguration:
		if o.Spec.AutoAllocateBlocks == nil {
			t := true
			o.Spec.AutoAllocateBlocks = &t
		}
	case *BGPPeer:
		if o.Spec.NextHopMode == "" {
			o.Spec.NextHopMode = NextHopAuto
		}
	case *NetworkPolicy:
		o.Spec.Types = defaultTypes(o.Spec.Types, o.Spec.Egress)
	case *GlobalNetworkPolicy:
		o.Spec.Types = defaultTypes(o.Spec.Types, o.Spec.Egress)
	}
	setTypeMeta(obj)
}

// defaultTypes is Calico's rule: Ingress always, Egress when there are egress rules.
func defaultTypes(types []PolicyType, egress []Rule) []PolicyType {
	if len(types) > 0 {
		return types
	}
	out := []PolicyType{PolicyTypeIngress}
	if len(egress) > 0 {
		out = append(out, PolicyTypeEgress)
	}
	return out
}

// setTypeMeta sets apiVersion and kind from the Go type when they are empty.
func setTypeMeta(obj Object) {
	gvk := obj.GetObjectKind().GroupVersionKind()
	if gvk.Kind != "" && gvk.Version != "" {
		return
	}
	for _, r := range Resources {
		if sameType(r.New(), obj) {
			obj.GetObjectKind().SetGroupVersionKind(r.GVK())
			return
		}
	}
}

// ResourceOf returns the Resource of an object by its Go type.
func ResourceOf(obj Object) (Resource, bool) {
	for _, r := range Resources {
		if sameType(r.New(), obj) {
			return r, true
		}
	}
	return Resource{}, false
}
