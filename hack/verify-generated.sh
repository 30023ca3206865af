#!/usr/bin/env bash
# Fails when generated files (deepcopy, CRDs) differ from what the Go types generate.
# It generates into a scratch copy of the module, so the work tree is never touched.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp go.mod go.sum "$work/"
cp -r api "$work/api"
mkdir -p "$work/charts/tabby/crds"
(cd "$work" && go tool controller-gen object paths=./api/... &&
  go tool controller-gen crd:allowDangerousTypes=true paths=./api/... output:crd:dir=charts/tabby/crds)
status=0
for f in $(cd "$work" && find api -name 'zz_generated.*.go') $(cd "$work" && find charts -name '*.yaml'); do
  if ! cmp -s "$work/$f" "$f"; then
    echo "verify-generated: $f is stale; run 'make generate'" >&2
    diff -u "$f" "$work/$f" | head -20 >&2 || true
    status=1
  fi
done
extra=$(comm -13 <(cd "$work" && find charts/tabby/crds -name '*.yaml' | sort) <(find charts/tabby/crds -name '*.yaml' | sort))
if [[ -n "$extra" ]]; then
  echo "verify-generated: CRD files no type generates: $extra" >&2
  status=1
fi
[[ $status -eq 0 ]] && echo "verify-generated: ok"
exit $status
