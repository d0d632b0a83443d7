"""Gemma 3 (text): norms stored as 1 + w (Gemma3RMSNorm multiplies by 1 + weight); token_embd trimmed to the
tokenizer's vocabulary; sliding-window and dual rope bases."""

from __future__ import annotations

from gguf import Keys

from ..hparams import text_params
from ..plan import f32, u32
from . import Arch
from .common import add_space_prefix, spm_or_bpe

A = "gemma3"


def metadata(h, file_type: int) -> list:
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


def vocab(ckpt, h) -> list:
    kv = spm_or_bpe(ckpt, h)
    return kv + [add_space_prefix(False)] if ckpt.file("tokenizer.model") else kv


_LAYER = "model.layers.{bid}"
ARCH = Arch(
    name=A,
    hf_architectures=("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"),
    tensors={
        "model.embed_tokens": "token_embd",
        "model.norm": "output_norm",
        "lm_head": "output",
        f"{_LAYER}.input_layernorm": "blk.{bid}.attn_norm",
        f"{_LAYER}.self_attn.q_proj": "blk.{bid}.attn_q",
        f"{_LAYER}.self_attn.k_proj": "blk.{bid}.attn_k",
        f"{_LAYER}.self_attn.v_proj": "blk.{bid}.attn_v",
        f"{_LAYER}.self_attn.o_proj": "blk.{bid}.attn_output",
        f"{_LAYER}.self_attn.q_norm": "blk.{bid}.attn_q_norm",
        f"{_LAYER}.self_attn.k_norm": "blk.{bid}.attn_k_norm",
        f"{_LAYER}.post_attention_layernorm": "blk.{bid}.post_attention_norm",
        f"{_LAYER}.pre_feedforward_layernorm": "blk.{bid}.ffn_norm",
        f"{_LAYER}.post_feedforward_layernorm": "blk.{bid}.post_ffw_norm",
        f"{_LAYER}.mlp.gate_proj": "blk.{bid}.ffn_gate",
        f"{_LAYER}.mlp.up_proj": "blk.{bid}.ffn_up",
        f"{_LAYER}.mlp.down_proj": "blk.{bid}.ffn_down",
    },
    metadata=metadata,
    vocab=vocab,
    norm_shift=1.0,
    trim_embeddings=True,
    defaults={"head_dim": 256, "num_key_value_heads": 4, "max_position_embeddings": 131072,
              "rms_norm_eps": 1e-6, "sliding_window": 4096, "vocab_size": 262208,
              "rope_local_base_freq": 10000.0, "rope_theta": 1_000_000.0},
)
