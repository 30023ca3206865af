# syntax=docker/dockerfile:1
#
# One image with Tabby's three binaries in /usr/local/bin:
#   tabby-node  the per-node agent (the DaemonSet's main container runs it)
#   tabby-cni   the CNI plugin (an init container copies it to the host's /opt/cni/bin)
#   tabbyctl    the CLI (kubectl exec ... tabbyctl node status | node diags)
#
#   docker build -t tabby:dev --build-arg VERSION=$(git describe --tags --always --dirty) .
#
# The build tag libvirt_dlopen makes libvirt's Go binding load libvirt.so.0 with
# dlopen(3) when tabby-node first connects instead of linking it: the build needs no
# libvirt headers, but it does need cgo (the binding is C), so tabby-node and tabbyctl
# are dynamically linked against glibc and run on the same Debian release as the
# builder. tabby-cni uses no cgo and is built static (CGO_ENABLED=0): it runs on the
# host, whatever the host's libc is.

ARG GO_VERSION=1.26
ARG DEBIAN_RELEASE=bookworm

FROM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
ENV GOFLAGS=-tags=libvirt_dlopen GOTOOLCHAIN=local
# Modules first, so a source change does not download them again.
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    set -eu; \
    ldflags="-s -w -X github.com/tabbynet/tabby/ctl.Version=${VERSION} -X main.Version=${VERSION}"; \
    mkdir -p /out; \
    CGO_ENABLED=1 go build -trimpath -ldflags "$ldflags" -o /out/ ./cmd/tabby-node ./cmd/tabbyctl; \
    CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o /out/ ./cmd/tabby-cni; \
    /out/tabby-node --version; /out/tabbyctl version --client

FROM debian:${DEBIAN_RELEASE}-slim
# libvirt0: libvirt.so.0, which tabby-node dlopens only with VM endpoints on
# (--vm-endpoints; it talks to the host's libvirtd over its socket). iproute2 lets
# `kubectl exec` look at routes and links (ip route show proto 116) next to
# `tabbyctl node diags`. ca-certificates for the Kubernetes API server's TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libvirt0 iproute2 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/tabby-node /out/tabby-cni /out/tabbyctl /usr/local/bin/
# tabby-node needs root on the host network (netlink, BPF, the local API socket).
USER 0:0
ENTRYPOINT ["/usr/local/bin/tabby-node"]
