"""Gemma 2: norms stored as 1 + w, attention and final logit soft-capping, a sliding window on alternate layers;
llama.cpp's Gemma2Model writes its own short list of keys (no RoPE base) and never an lm_head (always tied)."""

from __future__ import annotations

from gguf import Keys

from lorapack.spec import kinds
from lorapack.spec.arch import Spec
from lorapack.spec.plan import f32, u32

A = "gemma2"


def metadata(h, file_type: int) -> list:
    heads = h.get("num_attention_heads")
    return [
        u32(Keys.LLM.CONTEXT_LENGTH.format(arch=A), h.get("max_position_embeddings")),
        u32(Keys.LLM.EMBEDDING_LENGTH.format(arch=A), h.get("hidden_size")),
        u32(Keys.LLM.BLOCK_COUNT.format(arch=A), h.block_count),
        u32(Keys.LLM.FEED_FORWARD_LENGTH.format(arch=A), h.get("intermediate_size")),
        u32(Keys.Attention.HEAD_COUNT.format(arch=A), heads),
        u32(Keys.Attention.HEAD_COUNT_KV.format(arch=A), h.get("num_key_value_heads") or heads),
        f32(Keys.Attention.LAYERNORM_RMS_EPS.format(arch=A), h.get("rms_norm_eps")),
        u32(Keys.Attention.KEY_LENGTH.format(arch=A), h.get("head_dim")),
        u32(Keys.Attention.VALUE_LENGTH.format(arch=A), h.get("head_dim")),
        u32(Keys.General.FILE_TYPE, file_type),
        f32(Keys.LLM.ATTN_LOGIT_SOFTCAPPING.format(arch=A), h.get("attn_logit_softcapping")),
        f32(Keys.LLM.FINAL_LOGIT_SOFTCAPPING.format(arch=A), h.get("final_logit_softcapping")),
        u32(Keys.Attention.SLIDING_WINDOW.format(arch=A), h.get("sliding_window")),
    ]


SPEC = Spec(
    name=A,
    hf_classes=("Gemma2ForCausalLM",),
    metadata=metadata,
    tokenizer="gemma2",
    sliding_window=True,
    transforms=(kinds.NORM_OFFSET,),
    skip=("rotary_emb.inv_freq", "lm_head.weight"),  # llama.cpp's GEMMA2 has no output tensor: always tied
    # Gemma2Config's defaults (transformers 5)
    defaults={"head_dim": 256, "num_key_value_heads": 4, "max_position_embeddings": 8192, "rms_norm_eps": 1e-6,
              "vocab_size": 256000, "hidden_size": 2304, "intermediate_size": 9216, "num_attention_heads": 8,
              "attn_logit_softcapping": 50.0, "final_logit_softcapping": 30.0, "sliding_window": 4096},
)
