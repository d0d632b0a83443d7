"""Llama family (open-llama, Llama 2/3, Mistral): q/k rows permuted for llama.cpp's rope; llama-3 rope factors."""

from __future__ import annotations

import math

import numpy as np
from gguf import Keys

from lorapack.spec import kinds
from lorapack.spec.arch import Spec
from lorapack.spec.hparams import head_dim, n_heads, text_params
from lorapack.spec.plan import u32


def llama_keys(arch: str, h, file_type: int) -> list:
    """llama.cpp's LlamaModel.set_gguf_parameters, for architectures derived from it."""
    rope_dim = h.get("head_dim") or h.get("hidden_size") // h.get("num_attention_heads")
    return text_params(arch, h, file_type) + [
        u32(Keys.LLM.VOCAB_SIZE.format(arch=arch), h.get("vocab_size")),
        u32(Keys.Rope.DIMENSION_COUNT.format(arch=arch), rope_dim),
    ]


def rope_freqs(h) -> list[tuple[str, np.ndarray]]:
    """Llama 3.1+ long-context rope: one factor per rotary frequency, as llama.cpp computes them."""
    rp = h.rope_full
    if str(rp.get("rope_type", "")).lower() != "llama3":
        return []
    base = rp.get("rope_theta", 10000.0)
    dim = h.get("head_dim") or h.get("hidden_size") // h.get("num_attention_heads")
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, lo, hi = rp.get("factor", 8.0), rp.get("low_freq_factor", 1.0), rp.get("high_freq_factor", 4.0)
    old_ctx = rp.get("original_max_position_embeddings", 8192)
    out = []
    for freq in freqs.astype(np.float32):
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / hi:
            out.append(1)
        elif wavelen > old_ctx / lo:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return [("rope_freqs.weight", np.array(out, dtype=np.float32))]


SPEC = Spec(
    name="llama",
    hf_classes=("LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM"),
    metadata=lambda h, file_type: llama_keys("llama", h, file_type),
    tokenizer="llama",
    transforms=(kinds.ROPE_QK,),
    generated=rope_freqs,
    defaults={"num_key_value_heads": n_heads, "head_dim": head_dim, "max_position_embeddings": 2048,
              "rms_norm_eps": 1e-6, "vocab_size": 32000, "rope_theta": 10000.0},
)
