#!/usr/bin/env bash
# Runs one benchmark: bench/run.sh <name>. Each benchmark is a Go program in
# bench/<name>/ that sets up and tears down what it needs and prints, as its last line:
#   RESULT <name> ours=<n><unit> ref=<n><unit>|- ratio=<n>|- goal=<goal> ok|short
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:-}
available=$(find bench -mindepth 2 -maxdepth 2 -name main.go -printf '%h\n' | xargs -rn1 basename | sort | tr '\n' ' ')
if [[ -z "$name" ]]; then
  echo "usage: make bench BENCH=<name>   (available: ${available:-none yet})" >&2
  exit 2
fi
if [[ ! -f "bench/$name/main.go" ]]; then
  echo "bench: no benchmark \"$name\" (available: ${available:-none yet})" >&2
  exit 2
fi
exec go run "./bench/$name" "${@:2}"
