#!/usr/bin/env bash
# Create .venv/ at the repository root and install lorapack into it (editable) with llama.cpp and test tools.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=${LORAPACK_WHEELS:-$HOME/.cache/lorapack-wheels}
LLAMA_PIN=0.3.36
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.lorapack-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch is pinned to the CPU build that lies on this machine's disk (an unpinned torch pulls CUDA)
  .venv/bin/python -m pip install -q "torch==2.13.0"
  if ! ls "$WHEELS"/llama_cpp_python-$LLAMA_PIN-*.whl >/dev/null 2>&1; then
    # llama.cpp's default build uses every feature of the build CPU (-march=native), AMX included; where the
    # kernel does not grant AMX tiles (containers, some VMs) q8_0/q4_0 models then die with SIGILL. Build an
    # AVX2 baseline once (~10 min) and keep the wheel outside the repository for later runs.
    mkdir -p "$WHEELS"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
      .venv/bin/python -m pip wheel -q --no-deps --no-cache-dir "llama-cpp-python==$LLAMA_PIN" -w "$WHEELS"
  fi
  # setuptools >= 77 (SPDX `license`, pyproject.toml's [build-system]) in the venv itself, so that lorapack's
  # own wheel builds offline: pip wheel --no-deps --no-build-isolation . (tests/test_packaging.py does)
  .venv/bin/python -m pip install -q "setuptools>=77"
  .venv/bin/python -m pip install -q --no-build-isolation --find-links "$WHEELS" --only-binary llama-cpp-python \
    -e '.[llama,dev]'
  touch "$stamp"
fi
.venv/bin/python -c "import lorapack, gguf, numpy, torch, safetensors, peft, llama_cpp, setuptools as s; assert int(s.__version__.split('.')[0]) >= 77" \
  || { echo "setup: imports failed" >&2; exit 1; }
