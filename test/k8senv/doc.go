// Package k8senv runs a real, throw-away Kubernetes control plane (etcd and
// kube-apiserver, no controllers, no nodes) on 127.0.0.1 for Tabby's
// integration tests.
//
// The package owns:
//
//   - locating the cached control-plane binaries (kube-apiserver, kubectl,
//     etcd) built by hack/k8s-bins.sh, see [BinDir];
//   - starting one environment: a temporary directory (or the caller's
//     [Options.Dir]), free loopback ports,
//     an etcd and a kube-apiserver with token authentication, RBAC and a
//     self-signed serving certificate, an admin kubeconfig and
//     [k8s.io/client-go/rest.Config], optional CRDs, see [Start];
//   - stopping it again, killing both process groups and removing the
//     directory, see [Env.Stop];
//   - the TestMain glue that shares one environment per test package and
//     decides between skipping (developer machines) and failing (CI=true)
//     when the environment cannot start, see [Main] and [Require].
//
// Nothing in here knows about Tabby's own API types: callers pass the CRD
// directory in [Options].
//
// Every child process runs in its own process group with
// Pdeathsig=SIGKILL, so a crashed or killed test binary does not leave an
// apiserver or etcd behind. Set TABBY_KEEP_ENV=1 to keep the temporary
// directory (logs, kubeconfig, etcd data) after Stop for debugging.
package k8senv
