"""Adapters → plans in llama.cpp's adapter format, and merged weights for the merged layout."""

from __future__ import annotations

import json

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf import Keys

from lorapack.spec import keys, kinds
from lorapack.spec.plan import KV, Later, Plan, PlannedTensor, array, f32, string, u32
from lorapack.spec.types import stored_type

from .base import BaseModel, general_keys
from .peft import Adapter, LoraModule
from .transforms import expert_factors, forward


def lora_factors(model: BaseModel, m: LoraModule, fold: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(lora_a, lora_b) as llama.cpp stores them, numpy order: a (r, in) — (vocab, r) for embeddings — and
    b (out, r), each through the architecture's transforms as the base weight's rows and columns; a scaling
    factor, when folded, multiplies b in float32."""
    a, b = m.read_a(), m.read_b()
    if m.experts:  # kinds.EXPERT_STACK: PEFT's grouped factors → llama.cpp's stacks
        a, b = expert_factors(a, b, m.experts)
    a = forward(model, m.base_name, kinds.LORA_A, a)
    b = forward(model, m.base_name, kinds.LORA_B, b)
    if m.embedding:
        a = a.T  # llama.cpp gathers rows of lora_a by token id
    if fold != 1.0:
        b = b.astype(np.float32) * np.float32(fold)
    return a, b


def lora_tensors(model: BaseModel, adapter: Adapter, outtype: QT, folds: dict[str, float]) -> list[PlannedTensor]:
    out = []
    for m in adapter.modules:
        r = m.rank
        a_shape = (m.a.shape[1], r) if m.embedding else (r, m.a.shape[1])
        b_shape = (m.out_features, r)
        if m.experts:
            a_shape, b_shape = (m.experts, *a_shape), (m.experts, *b_shape)
        fold = folds.get(m.module, 1.0)
        for suffix, shape, pick in ((".lora_a", a_shape, 0), (".lora_b", b_shape, 1)):
            name = m.base_name + suffix
            produce = lambda m=m, fold=fold, pick=pick: lora_factors(model, m, fold)[pick]  # noqa: E731
            out.append(PlannedTensor(name, shape, stored_type(name, shape, outtype), produce, m.module))
    return out


def adapter_kv(adapter: Adapter, alpha: float, folded: bool, fingerprint: str | Later) -> list[KV]:
    return [
        string(Keys.Adapter.TYPE, "lora"),
        f32(Keys.Adapter.LORA_ALPHA, alpha),
        *([array(Keys.Adapter.ALORA_INVOCATION_TOKENS, adapter.invocation_tokens, VT.UINT32)]
          if adapter.invocation_tokens else []),
        string(keys.ADAPTER_NAME, adapter.name),
        f32(keys.ADAPTER_LORA_ALPHA, adapter.lora_alpha),
        u32(keys.ADAPTER_RANK, max(m.rank for m in adapter.modules)),
        string(keys.ADAPTER_SCALING, "rslora" if adapter.config.get("use_rslora") else "alpha/r"),
        KV(keys.ADAPTER_FOLDED, VT.BOOL, folded),
        array(keys.ADAPTER_TARGETS, adapter.targets, VT.STRING),
        string(keys.ADAPTER_CONFIG, json.dumps(adapter.config, sort_keys=True)),
        array(keys.ADAPTER_SOURCE_FILES, sorted(adapter.file_hashes), VT.STRING),
        array(keys.ADAPTER_SOURCE_SHA256, [adapter.file_hashes[k] for k in sorted(adapter.file_hashes)],
              VT.STRING),
        string(keys.FINGERPRINT, fingerprint),
    ]


def adapter_plan(adapter: Adapter, model: BaseModel, outtype: QT) -> Plan:
    """A standalone adapter GGUF in llama.cpp's format (general.type=adapter, <tensor>.lora_a/.lora_b)."""
    alpha, folds = adapter.gguf_alpha()
    folded = any(f != 1.0 for f in folds.values())
    plan = Plan()
    general = general_keys(model, "adapter")
    plan.add(general[0], general[1], string(Keys.General.NAME, adapter.name))
    plan.add(*adapter_kv(adapter, alpha, folded, Later(64, model.ckpt.fingerprint)))
    plan.tensors = lora_tensors(model, adapter, outtype, folds)
    return plan
