"""Architecture tables: one module per architecture, each defining `ARCH`.

An `Arch` says how HF tensor names map to GGUF names, which transforms llama.cpp applies (q/k row permutation,
Gemma's norm offset), which metadata keys it writes, and how the tokenizer is read. Adding an architecture means
adding one module here and listing it in `_MODULES`.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import numpy as np

from lorapack.errors import UnsupportedArchitecture

if TYPE_CHECKING:
    from ..checkpoint import BaseCheckpoint
    from ..hparams import HParams
    from ..plan import KV

_MODULES = ("llama", "phi3", "gemma2", "gemma3", "granite", "mistral3", "qwen2", "qwen3", "smollm3")


@dataclass(frozen=True)
class Arch:
    name: str  # GGUF architecture name
    hf_architectures: tuple[str, ...]
    # HF module name pattern ({bid} = block index) → GGUF base name; .weight/.bias carry over
    tensors: dict[str, str]
    metadata: Callable[[HParams, int], list[KV]]
    vocab: Callable[[BaseCheckpoint, HParams], list[KV]]
    permute_qk: bool = False  # llama.cpp reorders q/k rows for its rope layout
    norm_shift: float = 0.0  # Gemma stores (w - 1); llama.cpp stores w
    trim_embeddings: bool = False  # Gemma 3: drop token_embd rows beyond the tokenizer's vocabulary
    extra_tensors: Callable[[HParams], list[tuple[str, np.ndarray]]] = lambda h: []
    skip: tuple[str, ...] = ("rotary_emb.inv_freq",)
    # transformers' defaults for keys config.json may omit (value, or callable of the raw config)
    defaults: dict = field(default_factory=dict)
    _compiled: list = field(default_factory=list, compare=False, repr=False)

    def map_name(self, hf_name: str) -> tuple[str, int | None] | None:
        """HF tensor name → (GGUF tensor name, block id), or None when the table has no row for it."""
        if not self._compiled:
            for pattern, gguf_name in self.tensors.items():
                rx = re.escape(pattern).replace(r"\{bid\}", r"(?P<bid>\d+)")
                self._compiled.append((re.compile(rf"{rx}\.(weight|bias)"), gguf_name))
        name = hf_name.replace("language_model.", "")
        for rx, gguf_name in self._compiled:
            if m := rx.fullmatch(name):
                bid = m.groupdict().get("bid")
                suffix = m.group(m.lastindex)
                return f"{gguf_name.format(bid=bid)}.{suffix}", (int(bid) if bid is not None else None)
        return None


def supported() -> dict[str, Arch]:
    """HF architecture class name → Arch."""
    table: dict[str, Arch] = {}
    for mod in _MODULES:
        arch = importlib.import_module(f"{__name__}.{mod}").ARCH
        table.update({hf: arch for hf in arch.hf_architectures})
    return table


def arch_for(config: dict) -> Arch:
    table = supported()
    names = config.get("architectures") or []
    text_names = (config.get("text_config") or {}).get("architectures") or []
    for name in [*names, *text_names]:
        if name in table:
            return table[name]
    shown = ", ".join(names) or f"model_type {config.get('model_type')!r}"
    raise UnsupportedArchitecture(
        f"unsupported architecture {shown}",
        hint=f"supported: {', '.join(sorted(table))}",
    )


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: per head, interleaved halves become contiguous (numpy order, rows first)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def n_heads(hp: dict) -> int:
    return hp["num_attention_heads"]


def head_dim(hp: dict) -> int:
    return hp["hidden_size"] // hp["num_attention_heads"]
