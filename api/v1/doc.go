// Package v1 holds Tabby's resource types (API group tabby.dev, version v1), their
// defaults and their validation: the one place every resource is checked, the same for
// tabbyctl, the datastore and the CRD schema generated from these types.
//
// Field names and shapes follow Calico's projectcalico.org/v3 API, so a Calico user
// reads Tabby YAML at once. The package imports nothing of Tabby's except its own
// selector language (api/v1/selector).
//
// +kubebuilder:object:generate=true
// +groupName=tabby.dev
package v1
