"""Regenerate lorapack/spec/llama_cpp_names.json: the rows of llama.cpp's tensor-name table (gguf-py's
TensorNameMap, as vendored in the pinned llama.cpp) that the PyPI gguf==0.19.0 lacks, per architecture:
{"rows": [[HF pattern, GGUF pattern], …], "archs": {arch: [row index, …]}}, patterns with {bid}.

    .venv/bin/python scripts/update_names.py     (needs .cache/reference from scripts/fetch_reference.py)

Run it when the llama.cpp pin moves; tests/test_names.py fails while the file is stale.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "lorapack" / "spec" / "llama_cpp_names.json"
BLOCKS = 2  # rows for blocks 0 and 1 reveal each {bid} pattern

DUMP = r"""
import json, gguf
out = {}
for arch in gguf.MODEL_ARCH:
    tmap = gguf.get_tensor_name_map(arch, 2)
    out[gguf.MODEL_ARCH_NAMES[arch]] = {hf: name for hf, (_, name) in tmap.mapping.items()}
print(json.dumps(out))
"""


def tables(pythonpath: str | None) -> dict[str, dict[str, str]]:
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else {**os.environ, "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", DUMP], capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout)


def patterns(rows: dict[str, str]) -> dict[str, str]:
    """Rows for blocks 0 and 1 → {bid} patterns (kept only when both blocks agree)."""
    out = {}
    for hf, name in rows.items():
        if re.search(r"\b0\b", hf) and re.search(r"blk\.0\.", name):
            pattern, target = re.sub(r"\b0\b", "{bid}", hf, count=1), name.replace("blk.0.", "blk.{bid}.")
            if rows.get(pattern.format(bid=1)) == target.format(bid=1):
                out[pattern] = target
        elif "blk." not in name and not re.search(r"\b1\b", hf):
            out[hf] = name
    return out


def main() -> None:
    vendored = tables(str(ROOT / ".cache" / "reference" / "llama.cpp" / "gguf-py"))
    pypi = tables(None)
    diff = {}
    for arch, rows in sorted(vendored.items()):
        ours = patterns(pypi.get(arch, {}))
        theirs = patterns(rows)
        extra = {k: v for k, v in sorted(theirs.items()) if ours.get(k) != v}
        if extra:
            diff[arch] = extra
    rows = sorted({(hf, name) for extra in diff.values() for hf, name in extra.items()})
    index = {row: i for i, row in enumerate(rows)}
    doc = {"rows": [list(r) for r in rows],
           "archs": {arch: sorted(index[r] for r in extra.items()) for arch, extra in diff.items()}}
    OUT.write_text(json.dumps(doc, separators=(",", ":"), sort_keys=True) + "\n")
    print(f"{OUT.relative_to(ROOT)}: {sum(map(len, diff.values()))} rows over {len(diff)} architectures")


if __name__ == "__main__":
    main()
