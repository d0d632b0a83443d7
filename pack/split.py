"""llama.cpp's split GGUF (`--split-max-size`): one model in NAME-00001-of-0000N.gguf … files, as gguf-py's
GGUFWriter cuts it for `convert_hf_to_gguf.py --split-max-size`.

A new shard starts before a tensor whose bytes would take the current shard's tensor data (padding not
counted) past the limit, unless the shard is still empty (a tensor larger than the limit gets a shard of its
own). The first shard holds every metadata key, then split.no, split.count and split.tensors.count; the
others hold only those three. A model that fits in one shard is written as one ordinary file, without them.
"""

from __future__ import annotations

import re
from pathlib import Path

from gguf import GGUFValueType as VT

from lorapack.errors import LorapackError
from lorapack.formats.gguf import SPLIT_COUNT, SPLIT_NO, SPLIT_TENSORS, shard_path
from lorapack.spec.plan import KV, Plan, i32
from lorapack.spec.types import nbytes

_SIZE = re.compile(r"([0-9]+)([KMG]?)")
_UNIT = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3}  # decimal, as convert_hf_to_gguf.py reads them
MAX_SHARDS = 65535  # split.count is a UINT16


def parse_size(text: str) -> int:
    """'0' (no split), 'N' bytes, or N followed by K, M or G (powers of 1000, as llama.cpp's converter)."""
    m = _SIZE.fullmatch(text.strip())
    if m is None:
        raise LorapackError(f"--split-max-size {text!r} is not a size",
                            hint="a number of bytes, optionally followed by K, M or G (e.g. 4G, 500M)")
    return int(m[1]) * _UNIT[m[2]]


def shards(plan: Plan, max_bytes: int) -> list[Plan]:
    """The plan cut into shards of at most max_bytes of tensor data each; [plan] when it fits in one."""
    groups: list[list] = [[]]
    used = 0
    for t in plan.tensors:
        size = nbytes(t.shape, t.qtype)
        if max_bytes and groups[-1] and used + size > max_bytes:
            groups.append([])
            used = 0
        groups[-1].append(t)
        used += size
    if len(groups) == 1:
        return [plan]
    if len(groups) > MAX_SHARDS:
        raise LorapackError(f"--split-max-size {max_bytes} would cut the model into {len(groups)} files; "
                            f"a split GGUF has at most {MAX_SHARDS}", hint="choose a larger size")
    n, total = len(groups), len(plan.tensors)

    def split_keys(i: int) -> list[KV]:
        return [KV(SPLIT_NO, VT.UINT16, i), KV(SPLIT_COUNT, VT.UINT16, n), i32(SPLIT_TENSORS, total)]

    first = Plan(dict(plan.kv), groups[0])
    first.add(*split_keys(0))
    return [first] + [Plan({kv.key: kv for kv in split_keys(i)}, g) for i, g in enumerate(groups[1:], 1)]


def split_files(path: Path, plan: Plan, max_bytes: int) -> dict[Path, Plan]:
    """path → plan, or each shard's file name → its plan when the model is split."""
    parts = shards(plan, max_bytes)
    if len(parts) == 1:
        return {path: plan}
    return {shard_path(path, i, len(parts)): p for i, p in enumerate(parts)}
