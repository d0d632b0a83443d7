"""Tensor names: llama.cpp's own table (gguf-py's TensorNameMap) plus what a spec adds, both directions.

Forward, an HF tensor name → its GGUF name; inverse, a GGUF name → the HF names llama.cpp accepts for it, of which
the caller picks the one its checkpoint or model has. Per-expert tensors (mlp.experts.N.gate_proj) are named by
their stacked form (mlp.experts.gate_proj), which is what llama.cpp maps.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import gguf

from .arch import Spec

_SUFFIXES = (".weight", ".bias")
_EXPERT = re.compile(r"(.*\.experts)\.(\d+)\.(\w+)\.(weight|bias)")
_BLOCK = re.compile(r"blk\.(\d+)\.")


@functools.cache
def _newer_rows() -> dict[str, dict[str, str]]:
    """Rows the pinned llama.cpp's gguf-py has and the PyPI gguf lacks (scripts/update_names.py)."""
    doc = json.loads((Path(__file__).parent / "llama_cpp_names.json").read_text(encoding="utf-8"))
    return {arch: dict(doc["rows"][i] for i in rows) for arch, rows in doc["archs"].items()}


class NameTable:
    """llama.cpp's name table for one architecture: the PyPI gguf's TensorNameMap, the pinned llama.cpp's newer
    rows, then the spec's own."""

    def __init__(self, spec: Spec, n_blocks: int):
        self.spec = spec
        self._tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH[spec.name.upper()], n_blocks)
        rows = {**_newer_rows().get(spec.name, {}), **spec.names}
        self._extra = {}
        for pattern, gguf_name in rows.items():
            for b in range(n_blocks) if "{bid}" in pattern else (0,):
                self._extra[pattern.format(bid=b)] = gguf_name.format(bid=b)
        self._inverse: dict[str, list[str]] | None = None

    def gguf_name(self, hf_name: str) -> str | None:
        """HF tensor name (…weight / …bias; per-expert names by their stacked form) → GGUF name, or None."""
        name = self.spec.text_name(hf_name)
        if part := expert_part(name):
            name = part[0]
        stem, _, suffix = name.rpartition(".")
        if f".{suffix}" not in _SUFFIXES:
            return None
        if stem in self._extra:
            return f"{self._extra[stem]}.{suffix}"
        return self._tmap.get_name(name, try_suffixes=_SUFFIXES)

    def hf_names(self, gguf_base: str) -> list[str]:
        """GGUF base name (no .weight) → every HF module name in the text model's terms that maps to it."""
        if self._inverse is None:
            inv: dict[str, list[str]] = {}
            for hf, gguf_name in self._extra.items():
                inv.setdefault(gguf_name, []).append(hf)
            for hf, (_, gguf_name) in self._tmap.mapping.items():
                inv.setdefault(gguf_name, []).append(hf)
            self._inverse = inv
        return self._inverse.get(gguf_base, [])

    def hf_module(self, gguf_name: str, present) -> tuple[str, str] | None:
        """GGUF tensor name → (HF module, 'weight'|'bias') among the names `present` contains; None when none."""
        base, _, suffix = gguf_name.rpartition(".")
        for hf in self.hf_names(base):
            if f"{hf}.{suffix}" in present or hf in present:
                return hf, suffix
        return None


@functools.lru_cache(maxsize=32)
def name_table(spec: Spec, n_blocks: int) -> NameTable:
    return NameTable(spec, n_blocks)


def expert_part(name: str) -> tuple[str, int] | None:
    """A per-expert tensor name → (its stacked name, expert id); None for any other name."""
    if m := _EXPERT.fullmatch(name):
        return f"{m.group(1)}.{m.group(3)}.{m.group(4)}", int(m.group(2))
    return None


def block_of(gguf_name: str) -> int | None:
    m = _BLOCK.match(gguf_name)
    return int(m.group(1)) if m else None
