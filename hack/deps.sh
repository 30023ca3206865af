#!/usr/bin/env bash
# Installs everything Tabby's tests and benchmarks need on a fresh Debian machine:
# apt packages, Go tools pinned in go.mod, and the cached kube-apiserver/etcd/kubectl
# build. Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, one concern a line. Later issues add theirs here.
APT_PACKAGES=(
  iproute2 iputils-ping ethtool tcpdump   # namespaces, veths, probes
  git ca-certificates                     # module fetches
  frr bird2 gobgpd                        # BGP peers we did not write (interop, benches)
  clang llvm libbpf-dev linux-libc-dev bpftool  # eBPF: make generate-bpf (bpf2go), inspecting maps
  iperf3 iptables                         # bench/policy: TCP throughput, the iptables reference
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "deps: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

go mod download
# Real Kubernetes control plane for the integration tests (built once, cached).
hack/k8s-bins.sh >/dev/null
# cnitool, the CNI runtime the CNI suites drive the plugin with.
hack/cnitool.sh >/dev/null
echo "deps: ok" >&2
