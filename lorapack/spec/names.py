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

from lorapack.errors import CheckpointError

from .arch import Spec

_SUFFIXES = (".weight", ".bias")
_EXPERT = re.compile(r"(.*\.experts)\.(\d+)\.(\w+)\.(weight|bias)")
_BLOCK = re.compile(r"blk\.(\d+)\.")
_LAYER = re.compile(r"model\.layers\.(\d+)\.(.*)")


@functools.cache
def _newer_rows() -> dict[str, dict[str, str]]:
    """Rows the pinned llama.cpp's gguf-py has and the PyPI gguf lacks (scripts/update_names.py)."""
    doc = json.loads((Path(__file__).parent / "llama_cpp_names.json").read_text(encoding="utf-8"))
    return {arch: dict(doc["rows"][i] for i in rows) for arch, rows in doc["archs"].items()}


class NameTable:
    """llama.cpp's name table for one architecture: the PyPI gguf's TensorNameMap, the pinned llama.cpp's newer
    rows, then the spec's own."""

    def __init__(self, spec: Spec, n_blocks: int, n_layers: int | None = None):
        """`n_blocks` counts llama.cpp's blocks; `n_layers` the text model's own, when MTP blocks follow them."""
        self.spec = spec
        self.n_layers = n_blocks if n_layers is None else n_layers
        self._tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH[spec.name.upper()], n_blocks)
        rows = {**_newer_rows().get(spec.name, {}), **spec.names}
        self._extra = {}
        for pattern, gguf_name in rows.items():
            for b in range(n_blocks) if "{bid}" in pattern else (0,):
                self._extra[pattern.format(bid=b)] = gguf_name.format(bid=b)
        self._inverse: dict[str, list[str]] | None = None

    def gguf_name(self, hf_name: str) -> str | None:
        """HF tensor name (…weight / …bias; per-expert names by their stacked form) → GGUF name, or None."""
        name = self._renamed(self._from_mtp(self.spec.text_name(hf_name)))
        if part := expert_part(name):
            name = part[0]
        stem, _, suffix = name.rpartition(".")
        if f".{suffix}" not in _SUFFIXES:  # a bare parameter (A_log): the table's row for the whole name
            return self._tmap.get_name(name)
        if stem in self._extra:
            return f"{self._extra[stem]}.{suffix}"
        return self._tmap.get_name(name, try_suffixes=_SUFFIXES)

    def _from_mtp(self, name: str) -> str:
        """llama.cpp's MTP naming: mtp.layers.I.* → model.layers.{N+I}.*, mtp.fc.* → model.layers.N.eh_proj.*."""
        if not self.spec.mtp or not name.startswith(("mtp.", "model.mtp.")):
            return name
        parts = name.removeprefix("model.").split(".", 3)
        if len(parts) == 4 and parts[1] == "layers" and parts[2].isdecimal():
            return f"model.layers.{self.n_layers + int(parts[2])}.{parts[3]}"
        if len(parts) == 3 and parts[1] in self.spec.mtp:
            return f"model.layers.{self.n_layers}.{self.spec.mtp[parts[1]]}.{parts[2]}"
        return name

    def _renamed(self, name: str, back: bool = False) -> str:
        """The spec's parameter renames (llama.cpp's dt_bias → dt_proj.bias), or their inverse."""
        for old, new in self.spec.renames:
            old, new = (new, old) if back else (old, new)
            if name.endswith(old):
                return name[: -len(old)] + new
        return name

    def _to_mtp(self, hf_module: str) -> str:
        """The inverse of _from_mtp, on a module name (no .weight)."""
        m = _LAYER.fullmatch(hf_module)
        if not self.spec.mtp or m is None or int(m.group(1)) < self.n_layers:
            return hf_module
        i, rest = int(m.group(1)) - self.n_layers, m.group(2)
        top = {v: k for k, v in self.spec.mtp.items()}
        return f"mtp.{top[rest]}" if i == 0 and rest in top else f"mtp.layers.{i}.{rest}"

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
        """GGUF tensor name → (HF module, its parameter: 'weight', 'bias', 'A_log' …) among the names `present`
        contains; None when none."""
        base, _, suffix = gguf_name.rpartition(".")
        if f".{suffix}" in _SUFFIXES:
            candidates = [(hf, suffix) for hf in self.hf_names(base)]
        else:  # rows naming a bare parameter (ssm_a ← A_log)
            candidates = [tuple(hf.rsplit(".", 1)) for hf in self.hf_names(gguf_name)]
        for module, param in candidates:
            full = self._renamed(f"{self._to_mtp(module)}.{param}", back=True)
            module, _, param = full.rpartition(".")
            # a module's weight or bias may be named by the module; a bare parameter only by itself
            if full in present or (f".{param}" in _SUFFIXES and module in present):
                return module, param
        return None


@functools.lru_cache(maxsize=32)
def name_table(spec: Spec, n_blocks: int, n_layers: int | None = None) -> NameTable:
    return NameTable(spec, n_blocks, n_layers)


def mtp_layers(spec: Spec, config: dict, tensor_names) -> int:
    """MTP blocks llama.cpp appends (its _QwenMtpMixin): config.json's mtp_num_hidden_layers, else as many as the
    checkpoint has (mtp.layers.I.*). 0 when the checkpoint has none, whatever the config says: transformers
    saves no MTP tensors, and llama.cpp cannot load a file whose nextn blocks are missing."""
    if not spec.mtp:
        return 0
    found = {int(p[2]) for n in tensor_names
             if (p := spec.text_name(n).removeprefix("model.").split(".", 3))[:2] == ["mtp", "layers"]
             and len(p) == 4 and p[2].isdecimal()}
    if not found:
        return 0
    n = int(config.get("mtp_num_hidden_layers") or max(found) + 1)
    if found != set(range(n)):
        raise CheckpointError(f"config.json: mtp_num_hidden_layers is {n}, the checkpoint has MTP layers "
                              f"{sorted(found)}")
    return n


def expert_part(name: str) -> tuple[str, int] | None:
    """A per-expert tensor name → (its stacked name, expert id); None for any other name."""
    if m := _EXPERT.fullmatch(name):
        return f"{m.group(1)}.{m.group(3)}.{m.group(4)}", int(m.group(2))
    return None


def block_of(gguf_name: str) -> int | None:
    m = _BLOCK.match(gguf_name)
    return int(m.group(1)) if m else None
