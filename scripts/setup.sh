#!/usr/bin/env bash
# Create .venv/ at the repository root and install lorapack into it (editable) with llama.cpp and test tools.
# Idempotent: a second run only checks. llama-cpp-python compiles llama.cpp once (~10 min); pip's wheel cache
# keeps the result for later runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.lorapack-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch is pinned to the CPU build that lies on this machine's disk (an unpinned torch pulls CUDA)
  .venv/bin/python -m pip install -q "torch==2.13.0"
  CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
    .venv/bin/python -m pip install -q -e '.[llama,dev]'
  touch "$stamp"
fi
.venv/bin/python -c "import lorapack, gguf, numpy, torch, safetensors, peft, llama_cpp" \
  || { echo "setup: imports failed" >&2; exit 1; }
