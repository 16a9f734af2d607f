# heketi-csi developer tasks. `make help` lists them.

PY ?= .venv/bin/python
export CSI_SANITY ?= $(HOME)/.cache/heketi-csi/bin/csi-sanity

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: setup
setup: ## Install GlusterFS, the virtualenv and csi-sanity; start glusterd (idempotent)
	bash tools/setup.sh

.PHONY: test
test: setup lint ## Set up, lint, and run every test (unit, integration, conformance)
	$(PY) -m pytest -ra tests

.PHONY: lint
lint: ## ruff and mypy --strict
	$(PY) -m ruff check services tests bench tools devtools
	$(PY) -m mypy services tools devtools

.PHONY: demo
demo: setup ## Set up and play a volume's whole life on a local cluster
	$(PY) -m devtools.demo

.PHONY: up
up: setup ## Set up and keep a local cluster running until Ctrl-C
	$(PY) -m devtools.localcluster

.PHONY: bench
bench: setup ## Run the benchmarks under bench/ and print their numbers
	$(PY) -m bench

.PHONY: protos
protos: ## Regenerate services/common/proto/ from protos/ (commit the result)
	$(PY) tools/protogen.py
