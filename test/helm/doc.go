// Package helm tests the Helm chart in charts/tabby with a real helm binary (built
// once from the Go module proxy by hack/helm.sh and cached) and, for installs, a real
// kube-apiserver (test/k8senv).
//
// The package owns:
//
//   - lint: `helm lint --strict` with the default values and each values file in
//     testdata;
//   - golden renders: `helm template` output for the default values and for
//     testdata/peers-vm.yaml, compared with testdata/*.golden (rewrite them with
//     `go test ./test/helm/ -run Golden -update`);
//   - the values schema: bad values fail at template time with a message that names
//     the field;
//   - install: `helm install` against the API server creates every object the chart
//     renders;
//   - RBAC: the list of permissions tabby-node and tabby-cni need, each with the code
//     that needs it (permissions_test.go), checked allowed for the chart's
//     ServiceAccounts, broader ones checked denied, and the datastore operations the
//     two binaries perform run as those ServiceAccounts.
//
// It imports the datastore, ipam and agent packages only to perform their operations
// under the chart's identities; it changes nothing in them. Missing helm or control
// plane binaries skip the tests loudly, and fail them under CI=true.
package helm
