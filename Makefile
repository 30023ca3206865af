# Tabby: make lab (a whole cluster on this machine), make deps (install what tests
# need), make test (everything CI runs).
SHELL := /bin/bash
GO ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/tabbynet/tabby/ctl.Version=$(VERSION) -X main.Version=$(VERSION)
BIN := bin
TEST_TIMEOUT ?= 25m
# libvirt's Go binding loads libvirt.so.0 when it first connects instead of linking it:
# no libvirt headers to build, and tabby-node runs (VM endpoints off) where there is no
# libvirt. The tag reaches every go command make runs, and the builds tests start.
export GOFLAGS := -tags=libvirt_dlopen

.PHONY: all deps build generate generate-bpf docs verify test unit bench lab clean

all: build

deps:
	hack/deps.sh

build:
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/ ./cmd/...

generate: generate-bpf
	$(GO) tool controller-gen object paths=./api/...
	$(GO) tool controller-gen crd:allowDangerousTypes=true paths=./api/... output:crd:dir=charts/tabby/crds

# The eBPF datapath: bpf2go compiles ebpf/bpf/*.c (clang, llvm-strip, libbpf-dev from
# hack/deps.sh) into the committed ebpf/tabby_bpfel.{go,o}. The stamp lets `make verify`
# notice, without clang, a C change that was not regenerated (or a hand-edited output).
BPF_STAMP := ebpf/bpf/generated.sha256
BPF_HASHED = ebpf/gen.go $(sort $(wildcard ebpf/bpf/*.c ebpf/bpf/*.h)) ebpf/tabby_bpfel.go ebpf/tabby_bpfel.o

generate-bpf:
	$(GO) generate ./ebpf/
	sha256sum $(BPF_HASHED) > $(BPF_STAMP)

docs:
	$(GO) run ./hack/apidocs -crds charts/tabby/crds -out docs/reference/resources.md

verify:
	hack/verify-generated.sh
	@diff -u $(BPF_STAMP) <(sha256sum $(BPF_HASHED)) >/dev/null || \
	  { echo "verify: eBPF objects are stale; run 'make generate-bpf'"; exit 1; }
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

# Everything: generated files, vet, unit tests and the suites against real components
# (kube-apiserver + etcd, network namespaces; needs root and `make deps`).
test: verify
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

# Fast unit tests only (no real components).
unit:
	$(GO) test -count=1 -short ./...

# One benchmark: make bench BENCH=<name>; its last line is the RESULT line.
bench:
	@bench/run.sh "$(BENCH)"

# The lab: a whole Tabby cluster on this machine (root): installs what it needs (apt
# packages, the cached kube-apiserver build, cnitool), builds the binaries, then
# `tabbyctl lab up`. Options: make lab LAB_ARGS="--nodes 2 --tor bird"; docs/lab.md.
lab:
	hack/deps.sh
	$(MAKE) --no-print-directory build
	$(BIN)/tabbyctl lab up $(LAB_ARGS)

clean:
	rm -rf $(BIN)
