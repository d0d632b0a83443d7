"""Validation speed and memory, and how they scale with model size.

    .venv/bin/python benchmarks/bench_validate.py [--models llama-tiny,gemma3-270m,llama-1.5b]

Each model's separate f16 artifact is built once, then `lorapack validate` (no --end-to-end) runs in a fresh
process: wall time and that process's peak RSS. Targets (issue 3): Gemma 3 270M with its rank-16 all-linear
adapter (252 adapter tensors, 236 base tensors) under 15 s and 2 GB on 2 cores. Results:
benchmarks/results/validate.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import DATA, RESULTS, ROOT, make_llama_15b, measure

MODELS = {
    "llama-tiny": lambda: (ROOT / "samples/out/llama/base", ROOT / "samples/out/llama/adapters/plain"),
    "gemma3-270m": lambda: (ROOT / "samples/out/gemma3-270m/base", ROOT / "samples/out/gemma3-270m/adapters/tuned"),
    "llama-1.5b": lambda: make_llama_15b(DATA / "llama-1.5b"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    args = ap.parse_args()
    lorapack = str(Path(sys.executable).parent / "lorapack")
    results = {}
    for name in args.models.split(","):
        base, adapter = MODELS[name]()
        art = DATA / f"validate-{name}"
        measure([lorapack, "build", str(base), f"a={adapter}", "--layout", "separate", "-o", str(art), "--force",
                 "--quiet"])
        run = measure([lorapack, "validate", str(art), "--base", str(base), f"a={adapter}", "--quiet"])
        params = sum(p.stat().st_size for p in base.glob("*.safetensors")) // 2
        results[name] = {**run, "approx_params": params}
        print(f"  {name:12s} ~{params / 1e6:7.0f}M params  validate {run['wall_s']:6.2f} s  "
              f"peak {run['peak_rss_mib']:7.1f} MiB", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "validate.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved {RESULTS / 'validate.json'}")


if __name__ == "__main__":
    main()
