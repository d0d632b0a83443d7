"""Phi-3: fused qkv_proj and gate_up_proj stay fused (attn_qkv, ffn_up); longrope factors become tensors."""

from __future__ import annotations

import math

import numpy as np
from gguf import Keys

from lorapack.errors import CheckpointError
from lorapack.spec.arch import Spec
from lorapack.spec.hparams import n_heads
from lorapack.spec.plan import f32, u32

A = "phi3"


def _rope_dims(h) -> int:
    n_embd, n_head = h.find(["hidden_size", "n_embd"]), h.find(["num_attention_heads", "n_head"])
    return int(h.rope.get("partial_rotary_factor", 1.0) * n_embd) // n_head


def metadata(h, file_type: int) -> list:
    if "original_max_position_embeddings" not in h.rope:
        raise CheckpointError("phi3 config lacks original_max_position_embeddings")
    kv = [
        u32(Keys.LLM.CONTEXT_LENGTH.format(arch=A), h.find(["n_positions", "max_position_embeddings"])),
        u32(Keys.Rope.SCALING_ORIG_CTX_LEN.format(arch=A), h.rope["original_max_position_embeddings"]),
        u32(Keys.LLM.EMBEDDING_LENGTH.format(arch=A), h.find(["hidden_size", "n_embd"])),
        u32(Keys.LLM.FEED_FORWARD_LENGTH.format(arch=A), h.find(["intermediate_size"])),
        u32(Keys.LLM.BLOCK_COUNT.format(arch=A), h.block_count),
        u32(Keys.Attention.HEAD_COUNT.format(arch=A), h.find(["num_attention_heads", "n_head"])),
        u32(Keys.Attention.HEAD_COUNT_KV.format(arch=A), h.find(["num_key_value_heads", "n_head_kv"])),
        f32(Keys.Attention.LAYERNORM_RMS_EPS.format(arch=A), h.find(["rms_norm_eps"])),
        u32(Keys.Rope.DIMENSION_COUNT.format(arch=A), _rope_dims(h)),
        f32(Keys.Rope.FREQ_BASE.format(arch=A), _rope_theta(h)),
        u32(Keys.General.FILE_TYPE, file_type),
        u32(Keys.Attention.SLIDING_WINDOW.format(arch=A), h.get("sliding_window") or 0),
    ]
    if (attn := _attn_factor(h)) is not None:
        kv.append(f32(Keys.Rope.SCALING_ATTN_FACTOR.format(arch=A), attn))
    return kv


def _rope_theta(h) -> float:
    if (theta := h.rope_full.get("rope_theta")) is None:
        raise CheckpointError("config.json gives no rope_theta (a legacy rope_scaling replaces rope_parameters)")
    return theta


def _attn_factor(h) -> float | None:
    if not h.rope.get("long_factor"):
        return None
    scale = h.find(["n_positions", "max_position_embeddings"]) / h.rope["original_max_position_embeddings"]
    orig = h.rope["original_max_position_embeddings"]
    kind = str(h.rope.get("rope_type", "")).lower()
    if kind in ("su", "longrope"):
        return math.sqrt(1 + math.log(scale) / math.log(orig)) if scale > 1.0 else 1.0
    if kind == "yarn":
        return 0.1 * math.log(scale) + 1.0 if scale > 1.0 else 1.0
    raise CheckpointError(f"phi3 rope scaling type {kind or '(missing)'} is not supported")


def rope_factors(h) -> list[tuple[str, np.ndarray]]:
    long_f, short_f = h.rope.get("long_factor"), h.rope.get("short_factor")
    if not long_f:
        return []
    if short_f is None or len(long_f) != len(short_f) or len(long_f) != _rope_dims(h) / 2:
        raise CheckpointError(f"phi3 rope long/short factors must both have {_rope_dims(h) // 2} entries")
    return [("rope_factors_long.weight", np.array(long_f, dtype=np.float32)),
            ("rope_factors_short.weight", np.array(short_f, dtype=np.float32))]


SPEC = Spec(
    name=A,
    hf_classes=("Phi3ForCausalLM",),
    metadata=metadata,
    tokenizer="phi3",
    generated=rope_factors,
    defaults={"num_key_value_heads": n_heads, "max_position_embeddings": 4096,
              "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "vocab_size": 32064,
              "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
)
