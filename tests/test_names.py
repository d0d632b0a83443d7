"""Every architecture's name table against llama.cpp's own, gguf-py's TensorNameMap as vendored in the pinned
llama.cpp (the PyPI gguf lacks names the vendored one has): the two must agree on every HF pattern lorapack maps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = r"""
import json, sys
import gguf
from lorapack.convert.arch import supported
out = {}
for arch in {a.name: a for a in supported().values()}.values():
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.name.upper()], 4)
    for pattern, ours in arch.tensors.items():
        hf = pattern.format(bid=1)
        theirs = tmap.get_name(hf + ".weight", try_suffixes=(".weight", ".bias"))
        out[f"{arch.name}: {hf}"] = [ours.format(bid=1) + ".weight", theirs]
print(json.dumps(out))
"""


def test_name_tables_equal_llama_cpps(reference):
    env = {**os.environ, "PYTHONPATH": str(reference / "gguf-py")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True)
    table = json.loads(proc.stdout)
    differ = {k: v for k, v in table.items() if v[0] != v[1]}
    print(f"{len(table)} HF patterns compared with the vendored gguf-py's TensorNameMap; {len(differ)} differ")
    for k, (ours, theirs) in differ.items():
        print(f"  {k}: lorapack {ours}, llama.cpp {theirs}")
    assert not differ
