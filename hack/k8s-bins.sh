#!/usr/bin/env bash
# Builds the real Kubernetes control-plane binaries the tests run against, from the Go
# module proxy, and caches them by version:
#   $TABBY_CACHE/k8s/$K8S_VERSION/{kube-apiserver,kubectl,etcd}
# A second run with the cache filled does nothing. Prints the cache directory.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.32.13}
ETCD_VERSION=${ETCD_VERSION:-v3.5.21}
CACHE=${TABBY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tabby}
OUT="$CACHE/k8s/$K8S_VERSION"
mkdir -p "$OUT"

if [[ -x "$OUT/kube-apiserver" && -x "$OUT/kubectl" && -x "$OUT/etcd" ]]; then
  echo "$OUT"
  exit 0
fi

exec 9>"$OUT/.lock"
flock 9
if [[ -x "$OUT/kube-apiserver" && -x "$OUT/kubectl" && -x "$OUT/etcd" ]]; then
  echo "$OUT"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
patch=${K8S_VERSION##*.}

# Highest staging version v0.<minor>.N with N <= patch that the proxy has.
staging_version() {
  local mod=$1 v best=""
  for v in $(go list -m -versions "k8s.io/$mod" 2>/dev/null | tr ' ' '\n' | grep -E "^v0\.$minor\.[0-9]+$"); do
    local p=${v##*.}
    if (( p <= patch )); then best=$v; fi
  done
  echo "$best"
}

if [[ ! -x "$OUT/kube-apiserver" || ! -x "$OUT/kubectl" ]]; then
  echo "building kube-apiserver and kubectl $K8S_VERSION (one-time, ~8 min)" >&2
  mkdir -p "$work/k8s" && cd "$work/k8s"
  go mod init tabby.dev/k8sbins >/dev/null 2>&1
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    for m in api apiextensions-apiserver apimachinery apiserver cli-runtime client-go \
      cloud-provider cluster-bootstrap code-generator component-base component-helpers \
      controller-manager cri-api cri-client csi-translation-lib dynamic-resource-allocation \
      endpointslice externaljwt kms kube-aggregator kube-controller-manager kube-proxy \
      kube-scheduler kubectl kubelet metrics mount-utils pod-security-admission \
      sample-apiserver; do
      v=$(staging_version "$m")
      [[ -n "$v" ]] || { echo "no k8s.io/$m v0.$minor.x on the proxy" >&2; exit 1; }
      echo "replace k8s.io/$m => k8s.io/$m $v"
    done
  } >"$work/mod.extra"
  cat "$work/mod.extra" >>go.mod
  cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  go mod tidy >/dev/null
  pkg=k8s.io/component-base/version
  ld="-s -w -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  ld="$ld -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION"
  CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$work/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
  CGO_ENABLED=0 go build -trimpath -ldflags "$ld" -o "$work/kubectl" k8s.io/kubernetes/cmd/kubectl
  mv "$work/kube-apiserver" "$work/kubectl" "$OUT/"
fi

if [[ ! -x "$OUT/etcd" ]]; then
  echo "building etcd $ETCD_VERSION (one-time, ~1 min)" >&2
  mkdir -p "$work/etcd" && cd "$work/etcd"
  go mod init tabby.dev/etcdbin >/dev/null 2>&1
  cat >main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null 2>&1
  go mod tidy >/dev/null 2>&1
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/etcd-bin" .
  mv "$work/etcd-bin" "$OUT/etcd"
fi
echo "$OUT"
