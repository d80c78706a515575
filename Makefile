# Secrets Store CSI Driver (Python distribution) — developer entry points.
SHELL := /bin/bash
.DEFAULT_GOAL := help
include hack/versions.env

VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PATH := $(CURDIR)/$(VENV)/bin:$(TOOLS_CACHE)/kube-$(KUBE_VERSION)/bin:$(TOOLS_CACHE)/tools/bin:$(PATH)
# Where the local control plane keeps its state, kubeconfig and logs.
export SSCSI_CLUSTER_DIR ?= /tmp/sscsi-cluster
export KUBECONFIG_PATH := $(SSCSI_CLUSTER_DIR)/admin.kubeconfig

PROTOS := $(wildcard proto/sscsi_proto/*.proto)

.PHONY: node-tools images
.PHONY: live-tools olm-up e2e-olm demo-emulator
.PHONY: wheels chaos
.PHONY: help setup proto lint typecheck unit e2e test tools olm-tools cluster-up cluster-down demo sanity clean lock bundle bundle-validate bench bench-scale node-up node-down e2e-node

help:
	@echo "make setup        create $(VENV) and install the project + dev tools (pinned by constraints.txt)"
	@echo "make wheels       a wheel per part + the meta-package into build/wheels (README \"Packaging\")"
	@echo "make tools        build kube-apiserver/etcd/... csi-sanity, kwok from Go modules into $(TOOLS_CACHE)"
	@echo "make cluster-up   start etcd + apiserver + controller-manager + scheduler; kubeconfig: $(KUBECONFIG_PATH)"
	@echo "make cluster-down stop the local control plane"
	@echo "make test         lint + typecheck + unit + e2e (real control plane)"
	@echo "make demo         real node + OLM: the operator installed from its catalog, a pod's secret read and rotated"
	@echo "make bundle       regenerate the OLM bundle and file-based catalog from their sources"
	@echo "make bench        our driver vs the upstream Go driver -> bench-results/ (median+range of 3 rounds; ~15 min)"
	@echo "make bench-scale  500-volume node, M=10/25/50 simulated nodes, 20 min soak, both drivers (<= 45 min)"
	@echo "make bundle-validate  operator-sdk bundle validate (operatorframework suite) + opm validate"
	@echo "make node-tools   livenessprobe, upstream e2e provider from ../shared/upstream-src"
	@echo "make live-tools   kube-proxy, CoreDNS, registry, OLM v0 (olm, catalog, package-server), grpc_health_probe"
	@echo "make olm-up       node-up + OLM v0 installed in the node cluster (kubectl get packagemanifests)"
	@echo "make e2e-olm      OLM installs, upgrades and uninstalls the operator on the real node (tests/olm)"
	@echo "make demo-emulator  the driver alone, driven by the kubelet emulator on the local control plane"
	@echo "make images       buildah-build the node tier's images (hack/images.sh; also import|push|names)"
	@echo "make chaos        chaos soak on the real node: DURATION=60m SEED=<n> (docs/chaos.md) -> chaos-results/"

# One distribution per layer directory (README "Packaging"); the top-level one is the meta-package.
PARTS := kube proto driver provider operator cli
PART_DISTS := secrets-store-csi-py $(PARTS:%=secrets-store-csi-py-%)

# Every part editable, in compat mode (its directory on sys.path: a package added later imports
# without a reinstall); then the meta-package, whose extras the installed parts already satisfy.
$(STAMP): pyproject.toml constraints.txt $(PARTS:%=%/pyproject.toml)
	python3.11 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -c constraints.txt --config-settings editable_mode=compat $(PARTS:%=-e ./%)
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[driver,provider,operator,cli,dev,bench]'
	touch $@

setup: $(STAMP)

# Regenerate constraints.txt from a fresh resolve (run when a pyproject's ranges change).
lock:
	rm -rf /tmp/sscsi-lock-venv && python3.11 -m venv /tmp/sscsi-lock-venv
	/tmp/sscsi-lock-venv/bin/pip install -q $(PARTS:%=./%) '.[dev,bench]'
	/tmp/sscsi-lock-venv/bin/pip freeze $(PART_DISTS:%=--exclude %) > constraints.txt
	rm -rf $(PARTS:%=%/build) build/bdist.*

# Wheels of every part and the meta-package, for installs without an index serving the parts:
#   pip install --find-links build/wheels 'secrets-store-csi-py[cli]'   (README "Packaging")
wheels: $(STAMP)
	rm -rf build/wheels
	$(VENV)/bin/pip wheel -q --no-deps --no-build-isolation -w build/wheels $(PARTS:%=./%) .
	rm -rf $(PARTS:%=%/build) build/bdist.*

proto: $(STAMP)
	$(PY) hack/gen_proto.py

lint: $(STAMP)
	$(VENV)/bin/ruff check driver operator kube proto provider cli tests hack
	$(VENV)/bin/ruff format --check driver operator kube provider cli tests hack
	$(VENV)/bin/lint-imports
	$(PY) hack/module_size.py
	$(PY) hack/gen_proto.py --check

# hack/*.py are checked as modules too (a run of its own: mypy takes packages or files, not both).
typecheck: $(STAMP)
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy hack

unit: $(STAMP)
	$(PY) -m pytest -q tests/unit

tools:
	hack/build-tools.sh kube csi-sanity kwok

olm-tools:
	hack/build-tools.sh olm

# The real-node tier's upstream pieces, built from their release source (../shared/upstream-src).
node-tools:
	hack/build-tools.sh node

images: node-tools
	hack/images.sh build

# config/ (kustomize) | operator-sdk generate bundle, then opm for the catalog; hack/bundle.py --help
# for the options that make another release (version, images, replaces) into another directory.
bundle: $(STAMP) tools olm-tools
	$(PY) hack/bundle.py

bundle-validate: $(STAMP) tools olm-tools
	hack/bundle-validate.sh

cluster-up: tools
	hack/cluster-up.sh

cluster-down:
	-hack/kwok.sh down
	hack/cluster-down.sh

e2e: $(STAMP) tools
	$(PY) -m pytest -q tests/e2e

# csi-sanity skips, each needing a Controller service this node-only plugin does not have
# (upstream runs sanity with the same Controller skip):
#  - [Controller Server]: every spec calls ControllerGetCapabilities/CreateVolume.
#  - "should remove target path" and "NodeStageVolume ... no volume capability": both call
#    CreateVolume unconditionally before the node call under test.
# The publish success paths csi-sanity cannot reach are covered by tests/e2e (kubelet emulator).
SANITY_SKIP := \[Controller Server\]|should remove target path|NodeStageVolume.*should fail when no volume capability is provided
sanity: $(STAMP) tools
	hack/sanity.sh --ginkgo.skip='$(SANITY_SKIP)' --ginkgo.no-color

test: lint typecheck unit bundle-validate sanity e2e e2e-node e2e-olm

# The product: control plane, real node, registry, OLM; the operator installed from its catalog.
demo: $(STAMP)
	PYTHONPATH=tests $(PY) hack/demo.py

demo-emulator: $(STAMP) tools
	PYTHONPATH=tests $(PY) hack/demo_emulator.py

# The real-node tier: containerd + kubelet + locally built images (skips itself when the machine
# cannot run it; see docs/real-node.md).
node-up: $(STAMP) tools node-tools live-tools
	hack/node-up.sh

node-down:
	hack/node-down.sh

e2e-node: $(STAMP) tools node-tools live-tools
	$(PY) -m pytest -q tests/node

# The OLM-live tier (docs/install-olm.md): registry, kube-proxy, CoreDNS, OLM v0 on the real node.
live-tools:
	hack/build-tools.sh live

olm-up: node-up olm-tools
	hack/olm-up.sh

# Take `flock /run/sscsi-node.lock` around it when other work may use the node (docs/real-node.md).
e2e-olm: $(STAMP) tools node-tools live-tools olm-tools
	$(PY) -m pytest -q tests/olm

# The chaos soak (docs/chaos.md): seeded overlapping faults under pod churn and rotation, invariants checked
# all along; exit 1 with the seed on a violation. EVERY_KIND=1: each fault kind once before any repeats.
DURATION ?= 60m
SEED ?=
chaos: $(STAMP) tools node-tools live-tools
	flock /run/sscsi-node.lock env PYTHONPATH=tests:hack $(PY) -m chaos --duration $(DURATION) \
	  $(if $(SEED),--seed $(SEED)) $(if $(EVERY_KIND),--every-kind) $(CHAOS_ARGS)

# 3 rounds, drivers interleaved (ours, upstream, ...); more: make bench BENCH_ARGS='--repeats 5'
bench: $(STAMP)
	hack/build-tools.sh upstream-driver
	PYTHONPATH=tests:hack $(PY) -m bench --out bench-results $(BENCH_ARGS)

# Parts alone: make bench-scale SCALE_ARGS='--only cluster --nodes 10,25' (python -m bench.scale --help)
bench-scale: $(STAMP)
	hack/build-tools.sh upstream-driver
	PYTHONPATH=tests:hack $(PY) -m bench.scale --out bench-results $(SCALE_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
