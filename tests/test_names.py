"""Every architecture's effective name table (the PyPI gguf's TensorNameMap plus what its spec adds) against
llama.cpp's own, gguf-py's TensorNameMap as vendored in the pinned llama.cpp (the PyPI gguf lacks names the
vendored one has, e.g. Qwen3.5's nextn MTP tensors): the two must agree on every HF name either knows."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from lorapack.spec.arch import registry
from lorapack.spec.names import NameTable

BLOCKS = 4
VENDORED = r"""
import json, sys
import gguf
out = {}
for arch in json.loads(sys.argv[1]):
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.upper()], int(sys.argv[2]))
    out[arch] = {hf: name for hf, (_, name) in tmap.mapping.items()}
print(json.dumps(out))
"""


def test_name_tables_equal_llama_cpps(reference):
    specs = {s.name: s for s in registry().values()}
    env = {**os.environ, "PYTHONPATH": str(reference / "gguf-py")}
    proc = subprocess.run([sys.executable, "-c", VENDORED, json.dumps(sorted(specs)), str(BLOCKS)],
                          capture_output=True, text=True, env=env, check=True)
    theirs_all = json.loads(proc.stdout)
    compared, differ = 0, []
    for arch, spec in sorted(specs.items()):
        ours, theirs = NameTable(spec, BLOCKS), theirs_all[arch]
        for hf in sorted(set(theirs) | set(ours._extra)):
            got = ours.gguf_name(hf + ".weight")
            want = theirs[hf] + ".weight" if hf in theirs else None
            compared += 1
            if got != want:
                differ.append(f"{arch}: {hf}: lorapack {got}, llama.cpp {want}")
    print(f"{compared} HF names over {len(specs)} architectures compared with the vendored gguf-py's "
          f"TensorNameMap; {len(differ)} differ")
    print("\n".join(differ))
    assert compared > 1000 and not differ


def test_every_spec_names_a_tokenizer_route():
    from lorapack.convert.tokenizers import ROUTES

    bad = {s.name: s.tokenizer for s in registry().values() if s.tokenizer not in ROUTES}
    print(f"{len(registry())} HF classes; tokenizer routes {sorted(ROUTES)}")
    assert not bad
