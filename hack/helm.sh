#!/usr/bin/env bash
# Builds helm from the Go module proxy once and caches it by version:
#   $TABBY_CACHE/helm/$HELM_VERSION/helm
# Prints the path of the helm binary. A second run with the cache filled does nothing.
# A lock keeps two callers (two test binaries, make and a test) from building at once.
#
# The ldflags pin the Kubernetes version helm assumes when it has no cluster to ask
# (`helm template`, `helm lint`); without them helm assumes v1.20. Tests still pass
# --kube-version explicitly.
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.22.0}
# The Kubernetes version of the test API server (hack/k8s-bins.sh).
HELM_KUBE_VERSION=${HELM_KUBE_VERSION:-v1.32.13}
CACHE=${TABBY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tabby}
OUT="$CACHE/helm/$HELM_VERSION"
BIN="$OUT/helm"
mkdir -p "$OUT"

if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

exec 9>"$OUT/.lock"
flock 9
if [[ -x "$BIN" ]]; then
  echo "$BIN"
  exit 0
fi

echo "building helm $HELM_VERSION from the Go module proxy (one-time, ~3 min)" >&2
work=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT

minor=${HELM_KUBE_VERSION#v1.}; minor=${minor%%.*}
ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ld="$ld -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ld="$ld -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
done

# GOFLAGS= drops the repo's build tags (they are not helm's); CGO_ENABLED=0 for a
# static binary.
GOBIN="$work" GOFLAGS= CGO_ENABLED=0 go install -trimpath -ldflags "$ld" \
  "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
"$work/helm" version --short >/dev/null
mv "$work/helm" "$BIN"
echo "$BIN"
