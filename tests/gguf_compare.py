"""Compare two GGUF files key by key and tensor by tensor (used against llama.cpp's converters' output).

Deliberately independent of lorapack's reader: a minimal parse that keeps each metadata value's raw bytes, so
equality is byte equality of the encoded value (type included), and tensor data is compared byte for byte.
"""

from __future__ import annotations

import mmap
import struct

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

# provenance keys the issue lets differ (and keys only lorapack writes)
PROVENANCE = ("general.name", "general.basename", "general.size_label", "general.finetune", "general.version",
              "general.file_type", "general.quantization_version", "general.license", "general.tags",
              "general.languages", "general.base_model", "general.organization", "general.quantized_by",
              "general.repo_url", "general.url", "general.description", "general.dataset")
_SIZE = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def parse(path: str):
    f = open(path, "rb")
    m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    pos = 24
    _, _, n_t, n_kv = struct.unpack_from("<IIQQ", m, 0)

    def string():
        nonlocal pos
        (n,) = struct.unpack_from("<Q", m, pos)
        pos += 8 + n
        return bytes(m[pos - n:pos]).decode()

    def skip(vt):
        nonlocal pos
        if vt == 8:
            string()
        elif vt == 9:
            sub, count = struct.unpack_from("<IQ", m, pos)
            pos += 12
            for _ in range(count) if sub in (8, 9) else ():
                skip(sub)
            pos += 0 if sub in (8, 9) else _SIZE[sub] * count
        else:
            pos += _SIZE[vt]

    kv = {}
    for _ in range(n_kv):
        key = string()
        start = pos
        (vt,) = struct.unpack_from("<I", m, pos)
        pos += 4
        skip(vt)
        kv[key] = bytes(m[start:pos])
    tensors = {}
    for _ in range(n_t):
        name = string()
        (nd,) = struct.unpack_from("<I", m, pos)
        ne = struct.unpack_from(f"<{nd}Q", m, pos + 4)
        qt, off = struct.unpack_from("<IQ", m, pos + 4 + 8 * nd)
        pos += 4 + 8 * nd + 12
        tensors[name] = (GGMLQuantizationType(qt), tuple(ne), off)
    data = pos + (32 - pos % 32) % 32
    return m, kv, tensors, data


def _nbytes(qt, ne) -> int:
    block, size = GGML_QUANT_SIZES[qt]
    return int(np.prod(ne)) // block * size


def diff(ours: str, ref: str, check_bytes: bool = True) -> list[str]:
    ma, ka, ta, da = parse(ours)
    mb, kb, tb, db = parse(ref)
    problems = []
    for k in sorted(set(ka) | set(kb)):
        if k.startswith(PROVENANCE) or k.startswith("lorapack."):
            continue
        if k not in ka:
            problems.append(f"missing key {k}")
        elif k not in kb:
            problems.append(f"extra key {k}")
        elif ka[k] != kb[k]:
            problems.append(f"key {k}: {ka[k][:60]!r} != {kb[k][:60]!r}")
    for n in sorted(set(ta) | set(tb)):
        if n not in ta:
            problems.append(f"missing tensor {n}")
        elif n not in tb:
            problems.append(f"extra tensor {n}")
        elif ta[n][:2] != tb[n][:2]:
            problems.append(f"tensor {n}: {ta[n][0].name}{list(ta[n][1])} != {tb[n][0].name}{list(tb[n][1])}")
        elif check_bytes:
            size = _nbytes(*ta[n][:2])
            a, b = da + ta[n][2], db + tb[n][2]
            if ma[a:a + size] != mb[b:b + size]:
                problems.append(f"tensor {n}: bytes differ")
    return problems
