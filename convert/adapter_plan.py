"""Adapters → plans in llama.cpp's adapter format, and merged weights for the merged layout."""

from __future__ import annotations

import json

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf import Keys

from .arch import llama_permute
from .base import BaseModel, general_keys
from .peft import Adapter, LoraModule
from .plan import KV, Plan, PlannedTensor, array, f32, string, u32
from .types import stored_type

FINGERPRINT = "lorapack.base.fingerprint"


def lora_factors(m: LoraModule, fold: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(lora_a, lora_b) as llama.cpp stores them, numpy order: a (r, in) — (vocab, r) for embeddings — and
    b (out, r). The q/k row permutation goes on b; a scale factor, when folded, multiplies b in float32."""
    a, b = m.read_a(), m.read_b()
    if m.qk_heads is not None:
        b = llama_permute(b, m.qk_heads)
    if m.embedding:
        a = a.T  # llama.cpp gathers rows of lora_a by token id
    if fold != 1.0:
        b = b.astype(np.float32) * np.float32(fold)
    return a, b


def lora_tensors(adapter: Adapter, outtype: QT, folds: dict[str, float]) -> list[PlannedTensor]:
    out = []
    for m in adapter.modules:
        r = m.rank
        a_shape = (m.a.shape[1], r) if m.embedding else (r, m.a.shape[1])
        b_shape = (m.b.shape[0], r)
        fold = folds.get(m.module, 1.0)
        for suffix, shape, pick in ((".lora_a", a_shape, 0), (".lora_b", b_shape, 1)):
            name = m.base_name + suffix
            produce = lambda m=m, fold=fold, pick=pick: lora_factors(m, fold)[pick]  # noqa: E731
            out.append(PlannedTensor(name, shape, stored_type(name, shape, outtype), produce, m.module))
    return out


def adapter_kv(adapter: Adapter, alpha: float, folded: bool, fingerprint: str) -> list[KV]:
    return [
        string(Keys.Adapter.TYPE, "lora"),
        f32(Keys.Adapter.LORA_ALPHA, alpha),
        string("lorapack.adapter.name", adapter.name),
        f32("lorapack.adapter.lora_alpha", adapter.lora_alpha),
        u32("lorapack.adapter.rank", max(m.rank for m in adapter.modules)),
        string("lorapack.adapter.scaling", "rslora" if adapter.config.get("use_rslora") else "alpha/r"),
        KV("lorapack.adapter.scale_folded_into_lora_b", VT.BOOL, folded),
        array("lorapack.adapter.targets", adapter.targets, VT.STRING),
        string("lorapack.adapter.config", json.dumps(adapter.config, sort_keys=True)),
        array("lorapack.adapter.source_files", sorted(adapter.file_hashes), VT.STRING),
        array("lorapack.adapter.source_sha256", [adapter.file_hashes[k] for k in sorted(adapter.file_hashes)],
              VT.STRING),
        string(FINGERPRINT, fingerprint),
    ]


def adapter_plan(adapter: Adapter, model: BaseModel, outtype: QT) -> Plan:
    """A standalone adapter GGUF in llama.cpp's format (general.type=adapter, <tensor>.lora_a/.lora_b)."""
    alpha, folds = adapter.gguf_alpha()
    folded = any(f != 1.0 for f in folds.values())
    plan = Plan()
    general = general_keys(model, "adapter")
    plan.add(general[0], general[1], string(Keys.General.NAME, adapter.name))
    plan.add(*adapter_kv(adapter, alpha, folded, model.ckpt.fingerprint()))
    plan.tensors = lora_tensors(adapter, outtype, folds)
    return plan
