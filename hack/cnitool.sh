#!/usr/bin/env bash
# Installs cnitool (containernetworking/cni's reference runtime, used by test/cni as the
# container runtime) pinned to the CNI library version in go.mod, into
#   $TABBY_CACHE/bin/cnitool   (TABBY_CACHE defaults to ~/.cache/tabby)
# and prints its path. A second run with the binary in place does nothing.
set -euo pipefail

CNITOOL_VERSION=${CNITOOL_VERSION:-v1.3.0}
CACHE=${TABBY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tabby}
BIN="$CACHE/bin"
OUT="$BIN/cnitool"
STAMP="$BIN/.cnitool-$CNITOOL_VERSION"
mkdir -p "$BIN"

if [[ -x "$OUT" && -e "$STAMP" ]]; then
  echo "$OUT"
  exit 0
fi

exec 9>"$BIN/.cnitool.lock"
flock 9
if [[ -x "$OUT" && -e "$STAMP" ]]; then
  echo "$OUT"
  exit 0
fi

echo "installing cnitool $CNITOOL_VERSION into $BIN" >&2
# Outside any module, so go.mod of the caller's checkout is never touched.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
GOBIN="$BIN" CGO_ENABLED=0 go install "github.com/containernetworking/cni/cnitool@$CNITOOL_VERSION"
rm -f "$BIN"/.cnitool-v*
touch "$STAMP"
echo "$OUT"
