# heketi-csi developer tasks. `make help` lists them.

PY ?= .venv/bin/python

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "} {printf "  %-12s %s\n", $$1, $$2}'

.PHONY: protos
protos: ## Regenerate services/common/proto/ from protos/ (commit the result)
	$(PY) tools/protogen.py
