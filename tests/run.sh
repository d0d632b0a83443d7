#!/usr/bin/env bash
# Set up (.venv, lorapack, llama.cpp), fetch llama.cpp's converters (the reference), build the samples,
# then run the whole test suite. Exits non-zero when a test fails or none ran.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python scripts/fetch_reference.py >/dev/null
.venv/bin/python samples/make_samples.py
.venv/bin/python samples/make_gemma.py >/dev/null
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider "$@"
