"""Gemma 3 (text, and the text model of Gemma3ForConditionalGeneration): norms stored as 1 + w (Gemma3RMSNorm
multiplies by 1 + weight); token_embd trimmed to the tokenizer's vocabulary; sliding-window and dual rope bases."""

from __future__ import annotations

from gguf import Keys

from lorapack.spec import kinds
from lorapack.spec.arch import MULTIMODAL_TEXT, Spec
from lorapack.spec.hparams import text_params
from lorapack.spec.plan import f32, u32

A = "gemma3"


def gemma3_keys(A: str, h, file_type: int) -> list:
    """llama.cpp's Gemma3Model.set_gguf_parameters, for architectures derived from it."""
    kv = text_params(A, h, file_type) + [
        u32(Keys.LLM.CONTEXT_LENGTH.format(arch=A), h.get("max_position_embeddings", 131072)),
        u32(Keys.Attention.HEAD_COUNT.format(arch=A), h.get("num_attention_heads", 8)),
        f32(Keys.Attention.LAYERNORM_RMS_EPS.format(arch=A), h.get("rms_norm_eps", 1e-6)),
        u32(Keys.Attention.KEY_LENGTH.format(arch=A), h.get("head_dim", 256)),
        u32(Keys.Attention.VALUE_LENGTH.format(arch=A), h.get("head_dim", 256)),
        f32(Keys.Rope.FREQ_BASE.format(arch=A), h.rope_full.get("rope_theta", 1_000_000.0)),
    ]
    if softcap := h.get("final_logit_softcapping"):
        kv.append(f32(Keys.LLM.FINAL_LOGIT_SOFTCAPPING.format(arch=A), softcap))
    if h.get("sliding_window_pattern") != 1:
        kv.append(u32(Keys.Attention.SLIDING_WINDOW.format(arch=A), h.get("sliding_window")))
    kv.append(u32(Keys.Attention.HEAD_COUNT_KV.format(arch=A), h.get("num_key_value_heads", 4)))
    return kv


def metadata(h, file_type: int) -> list:
    return gemma3_keys(A, h, file_type)


SPEC = Spec(
    name=A,
    hf_classes=("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"),
    metadata=metadata,
    tokenizer="gemma3",
    sliding_window=True,
    transforms=(kinds.NORM_OFFSET, kinds.VOCAB_TRIM),
    prefixes=MULTIMODAL_TEXT,
    defaults={"head_dim": 256, "num_key_value_heads": 4, "max_position_embeddings": 131072,
              "rms_norm_eps": 1e-6, "sliding_window": 4096, "vocab_size": 262208,
              "rope_local_base_freq": 10000.0, "rope_theta": 1_000_000.0},
)
