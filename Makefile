# Two commands for a fresh machine: `make demo` (the main job on the embedded default
# model) and `make test` (the test suite). Both build .venv first when needed.
.PHONY: setup demo test lint
VENV ?= .venv
export HF_HUB_OFFLINE ?= 1

setup:
	@scripts/setup.sh

demo: setup
	$(VENV)/bin/edgekit plan smollm2-135m --target cpu --ctx 8192
	$(VENV)/bin/edgekit quantize smollm2-135m --target cpu

test: setup
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q

lint: setup
	$(VENV)/bin/ruff check edgekit tests
