"""Compare two GGUF files key by key and tensor by tensor (used against llama.cpp's converters' output)."""

from __future__ import annotations

import numpy as np
from gguf import GGUFReader

# provenance keys the issue lets differ (and keys that only lorapack writes)
PROVENANCE = ("general.name", "general.basename", "general.size_label", "general.finetune", "general.version",
              "general.file_type", "general.quantization_version", "general.license", "general.tags",
              "general.languages", "general.base_model", "general.organization", "general.quantized_by",
              "general.repo_url", "general.url", "general.description")


def fields(r: GGUFReader) -> dict:
    out = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF.") or k.startswith(PROVENANCE) or k.startswith("lorapack."):
            continue
        out[k] = ([t.name for t in f.types], f.contents())
    return out


def diff(ours: str, ref: str, check_bytes: bool = True) -> list[str]:
    a, b = GGUFReader(ours), GGUFReader(ref)
    problems = []
    fa, fb = fields(a), fields(b)
    for k in sorted(set(fa) | set(fb)):
        if k not in fa:
            problems.append(f"missing key {k}")
        elif k not in fb:
            problems.append(f"extra key {k}")
        elif fa[k] != fb[k]:
            problems.append(f"key {k}: {str(fa[k])[:120]} != {str(fb[k])[:120]}")
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    for n in sorted(set(ta) | set(tb)):
        if n not in ta:
            problems.append(f"missing tensor {n}")
        elif n not in tb:
            problems.append(f"extra tensor {n}")
        else:
            x, y = ta[n], tb[n]
            if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape):
                problems.append(f"tensor {n}: {x.tensor_type.name}{list(x.shape)} != {y.tensor_type.name}{list(y.shape)}")
            elif check_bytes and not np.array_equal(np.asarray(x.data).view(np.uint8), np.asarray(y.data).view(np.uint8)):
                problems.append(f"tensor {n}: bytes differ")
    return problems
