#!/usr/bin/env bash
# GPU figures in one call (issue 19; docs/gpu.md). On a CUDA machine with the travelling folder
# (benchmarks/gpu_prepare.py makes it):   benchmarks/gpu_check.sh --out "$OUT"
# Here, tiny shapes on the installed CPU build:  benchmarks/gpu_check.sh --cpu --out /tmp/gc
# Everything is in benchmarks/gpu_check.py (standard library only at the top level); this picks
# the Python: $PYTHON, else .venv's for --cpu / --no-build when there is one, else python3.
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-}
if [ -z "$py" ]; then
  py=python3
  for arg in "$@"; do
    if { [ "$arg" = "--cpu" ] || [ "$arg" = "--no-build" ]; } && [ -x .venv/bin/python ]; then
      py=.venv/bin/python
    fi
  done
fi
exec "$py" benchmarks/gpu_check.py "$@"
