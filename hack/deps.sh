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
  libvirt-daemon-system qemu-system-x86   # VMs: libvirtd + QEMU (TCG) for libvirt guests (test/vmguest)
  qemu-utils                              # VMs: qemu-img for guest disks
  busybox-static                          # VMs: the guest initramfs (test/vmguest builds it)
  libvirt-dev gcc                         # VMs: cgo build of libvirt.org/go/libvirt without libvirt_dlopen
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
# libvirt's NAT network would add virbr0 and its own dnsmasq to the host: never autostart
# it (test/vmguest puts guests on taps in namespaces the tests own).
if [[ -e /etc/libvirt/qemu/networks/autostart/default.xml || -L /etc/libvirt/qemu/networks/autostart/default.xml ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps: need root to remove /etc/libvirt/qemu/networks/autostart/default.xml" >&2
    exit 1
  fi
  rm -f /etc/libvirt/qemu/networks/autostart/default.xml
fi

go mod download
# Real Kubernetes control plane for the integration tests (built once, cached).
hack/k8s-bins.sh >/dev/null
# cnitool, the CNI runtime the CNI suites drive the plugin with.
hack/cnitool.sh >/dev/null
# helm, for test/helm (lint, template, install against the real API server).
hack/helm.sh >/dev/null
echo "deps: ok" >&2
