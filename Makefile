# heketi-csi developer tasks. `make help` lists them.

PY ?= .venv/bin/python
CSI_SANITY_VERSION := $(shell sed -n 's/^CSI_SANITY_VERSION=//p' tools/test-setup.sh)
export CSI_SANITY ?= $(HOME)/.cache/heketi-csi/csi-sanity-$(CSI_SANITY_VERSION)/bin/csi-sanity

# One clock for every phase of a run (.ci/run sets it before setup.sh; sub-makes inherit it).
ifndef HCSI_T0
export HCSI_T0 := $(shell date +%s)
endif
PHASE = @printf '\n==> [%5ds] %s\n' "$$(( $$(date +%s) - $(HCSI_T0) ))"

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: setup
setup: ## Install GlusterFS and the virtualenv; start glusterd (idempotent; all the demo needs)
	bash tools/setup.sh

.PHONY: test-setup
test-setup: setup ## What the tests need on top: Go, csi-sanity, Kubernetes, etcd, sidecars, helm (cached)
	bash tools/test-setup.sh

.PHONY: test
test: check ## Everything CI runs: lint, the fast suite, the pool's fault tests, the real-Kubernetes suites, the compose stack
	$(MAKE) test-pool
	$(MAKE) test-e2e
	$(MAKE) compose-test
	$(PHASE) "make test: done"

.PHONY: check
check: test-setup ## Lint and the fast suite (unit, integration, csi-sanity, fuzz, the chart)
	$(PHASE) "lint: ruff, mypy --strict"
	$(MAKE) lint
	$(PHASE) "the fast suite: unit, integration, csi-sanity, fuzz (two runs side by side)"
	$(PY) tools/fast_suite.py

.PHONY: test-pool
test-pool: test-setup ## The GlusterFS pool's slow fault tests (partition, power-off, two servers down, the node's view of them; ~3 min)
	$(PHASE) "the gluster pool's fault tests"
	$(PY) -m pytest -ra -m pool_faults tests/integration/test_gluster_pool.py \
		tests/integration/test_node_on_pool.py

.PHONY: test-e2e
test-e2e: test-setup ## Local Kubernetes up, `make e2e`, the upstream suite's CI subset, down (KEEP_CLUSTER=1 keeps it)
	$(PHASE) "the upstream storage suite: e2e.test and ginkgo (built once per version)"
	$(PY) -m devtools.k8s build kubernetes-e2e
	$(PHASE) "local Kubernetes: clear what an earlier run left, then up"
	$(PY) -m devtools.k8s down
	@status=0; \
	$(PY) -m devtools.k8s up && $(MAKE) e2e && $(MAKE) e2e-upstream-ci || status=$$?; \
	if [ "$${KEEP_CLUSTER:-0}" = 1 ]; then echo "keeping the cluster: make k8s-down"; \
	else $(PY) -m devtools.k8s down || status=1; fi; \
	exit $$status

.PHONY: lint
lint: ## ruff and mypy --strict
	$(PY) -m ruff check services tests bench tools devtools
	$(PY) -m mypy services tools devtools

# The driver image (devtools/k8s/driver_image.py): needs only python3 and Docker.
IMAGE_PY ?= python3
BASE_IMAGE ?=
BUILD_NETWORK ?=
REGISTRY ?=
IMAGE_ARGS = $(if $(BASE_IMAGE),--base-image "$(BASE_IMAGE)") $(if $(BUILD_NETWORK),--network "$(BUILD_NETWORK)")

.PHONY: image
image: ## Build the driver image heketi-csi:<version> with your Docker and print its size (BASE_IMAGE=, BUILD_NETWORK= optional)
	$(IMAGE_PY) -m devtools.k8s.driver_image image $(IMAGE_ARGS)

.PHONY: push
push: ## Tag the image <REGISTRY>/heketi-csi:<version> and push it: make push REGISTRY=registry.example.com/storage
	@test -n "$(REGISTRY)" || { echo 'error: REGISTRY is missing: make push REGISTRY=<host[:port][/path]>' >&2; exit 2; }
	$(IMAGE_PY) -m devtools.k8s.driver_image image $(IMAGE_ARGS)
	$(IMAGE_PY) -m devtools.k8s.driver_image push --registry "$(REGISTRY)"

.PHONY: demo
demo: setup ## Set up and play a volume's whole life on a local cluster
	$(PY) -m devtools.demo

.PHONY: up
up: setup ## Set up and keep a local cluster running until Ctrl-C
	$(PY) -m devtools.localcluster

.PHONY: bench
bench: setup ## Run the benchmarks under bench/ and print their numbers
	$(PY) -m bench

.PHONY: compose-test
compose-test: test-setup ## docker-compose.yml for real: images (cached), up, demo, down -v, nothing left
	$(PHASE) "the compose stack"
	$(PY) -m pytest -ra tests/compose

.PHONY: k8s-build
k8s-build: ## Build Kubernetes, etcd and the CSI sidecars from the Go module proxy (cached)
	$(PY) -m devtools.k8s build

.PHONY: k8s-up
k8s-up: setup ## Start the local single-node Kubernetes (host processes)
	$(PY) -m devtools.k8s up

.PHONY: e2e
e2e: setup ## Deploy the driver into the running local Kubernetes and run the real-cluster suite
	$(PHASE) "deploy the driver, then the real-cluster suite (tests/e2e)"
	$(PY) -m devtools.k8s deploy
	$(PY) -m pytest -ra tests/e2e

E2E_UPSTREAM_PROCS ?= 4

.PHONY: e2e-upstream
e2e-upstream: setup ## Deploy the driver and run the whole upstream storage suite (e2e.test) against it
	$(PY) -m devtools.k8s build kubernetes-e2e
	$(PY) -m devtools.k8s deploy
	$(PY) -m devtools.k8s e2e-upstream --subset all --procs $(E2E_UPSTREAM_PROCS)

.PHONY: e2e-upstream-ci
e2e-upstream-ci: ## The upstream storage suite's CI subset against the driver `make e2e` deployed
	$(PHASE) "the upstream storage suite's CI subset"
	$(PY) -m devtools.k8s build kubernetes-e2e
	$(PY) -m devtools.k8s e2e-upstream --subset ci --procs $(E2E_UPSTREAM_PROCS)

.PHONY: k8s-down
k8s-down: ## Stop the local Kubernetes and undo every change it made to the host
	$(PY) -m devtools.k8s down

.PHONY: k8s-kubeconfig
k8s-kubeconfig: ## Print the path of the local cluster's admin kubeconfig
	@$(PY) -m devtools.k8s kubeconfig

.PHONY: helm
helm: ## Build helm from the Go module proxy (cached) and fetch the chart's validation schemas
	$(PY) -m devtools.k8s build helm

.PHONY: heketi
heketi: ## Build a real Heketi v10.3.0 and heketi-cli from the Go module proxy (cached); the tests run it (mock executor)
	$(PY) -m devtools.k8s build heketi

.PHONY: helm-lint
helm-lint: helm ## helm lint --strict charts/heketi-csi
	$$($(PY) -c 'from devtools.k8s.helm import helm_path; print(helm_path())') lint --strict charts/heketi-csi

.PHONY: chart-test
chart-test: helm ## The chart's tests: lint, strict validation (oldest/newest Kubernetes), parity with k8s/base
	$(PY) -m pytest -q tests/unit/test_chart.py tests/unit/test_versions.py tests/integration/test_rendered_commands.py

.PHONY: versions
versions: ## Write the sidecar versions of devtools/k8s/versions.env into k8s/base and the chart
	$(PY) -m devtools.k8s.pins

.PHONY: protos
protos: ## Regenerate services/common/proto/ from protos/ (commit the result)
	$(PY) tools/protogen.py
