# Two commands for a fresh machine: `make demo` (the main job on the embedded default
# model) and `make test` (the checks, then the test suite). Both build .venv first when needed.
.PHONY: setup demo test check lint typecheck docs docs-check
VENV ?= .venv
export HF_HUB_OFFLINE ?= 1
# what ruff formats and lints
PY_SRC = edgekit tests scripts benchmarks

setup:
	@scripts/setup.sh

demo: setup
	$(VENV)/bin/edgekit plan smollm2-135m --target cpu --ctx 8192
	$(VENV)/bin/edgekit quantize smollm2-135m --target cpu

# the habits (seconds), then the suite (minutes)
test: check
	HF_HUB_OFFLINE=1 $(VENV)/bin/python -m pytest -q

# every check runs, so one pass shows every kind of failure; exit 1 if any failed
check: setup
	@rc=0; \
	echo "== ruff format --check"; $(VENV)/bin/ruff format --check $(PY_SRC) || rc=1; \
	echo "== ruff check"; $(VENV)/bin/ruff check $(PY_SRC) || rc=1; \
	echo "== mypy (strictness: [tool.mypy] in pyproject.toml)"; $(VENV)/bin/mypy || rc=1; \
	echo "== docs/cli.md is the CLI's --help"; $(VENV)/bin/python scripts/gen_cli_docs.py --check || rc=1; \
	exit $$rc

lint: setup
	$(VENV)/bin/ruff format --check $(PY_SRC)
	$(VENV)/bin/ruff check $(PY_SRC)

typecheck: setup
	$(VENV)/bin/mypy

# rewrite docs/cli.md after a change to a command's options or help
docs: setup
	$(VENV)/bin/python scripts/gen_cli_docs.py

docs-check: setup
	$(VENV)/bin/python scripts/gen_cli_docs.py --check
