"""Phi-3: fused qkv_proj and gate_up_proj stay fused (attn_qkv, ffn_up); longrope factors become tensors."""

from __future__ import annotations

import math

import numpy as np
from gguf import Keys

from lorapack.errors import CheckpointError
from lorapack.formats.jsonfile import is_int, read_json

from ..plan import f32, u32
from ..vocab import bpe_vocab, overlay_added, special_keys, spm_tokens, vocab_keys
from . import Arch, n_heads
from .common import tokenizer_config

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


def vocab(ckpt, h) -> list:
    if tokenizer_config(ckpt).get("tokenizer_class") == "GPT2Tokenizer":
        return bpe_vocab(ckpt.path, h.get("vocab_size"))
    if not ckpt.file("tokenizer.model"):
        raise CheckpointError(f"phi3 needs {ckpt.path / 'tokenizer.model'}")
    tokens, scores, types = spm_tokens(ckpt.path, h.get("vocab_size"), normalize=False)
    _overlay_tokenizer_json(ckpt, tokens, scores, types)
    return vocab_keys("llama", "default", tokens, types, scores) + special_keys(ckpt.path, n_vocab=len(tokens))


def _overlay_tokenizer_json(ckpt, tokens, scores, types) -> None:
    """Phi-3 also takes added tokens from tokenizer.json (llama.cpp's Phi3 converter does)."""
    path = ckpt.file("tokenizer.json")
    if not path:
        return
    added = read_json(path, CheckpointError, max_bytes=1 << 30).get("added_tokens") or []
    if not (isinstance(added, list) and all(isinstance(d, dict) and is_int(d.get("id")) and d["id"] >= 0
                                            and isinstance(d.get("content"), str) for d in added)):
        raise CheckpointError("tokenizer.json: added_tokens must be a list of {id, content} entries")
    for data in added:
        overlay_added(tokens, scores, types, data["id"], data, normalize=False)


ARCH = Arch(
    name=A,
    hf_architectures=("Phi3ForCausalLM",),
    tensors={
        "model.embed_tokens": "token_embd",
        "model.norm": "output_norm",
        "lm_head": "output",
        "model.layers.{bid}.input_layernorm": "blk.{bid}.attn_norm",
        "model.layers.{bid}.self_attn.qkv_proj": "blk.{bid}.attn_qkv",
        "model.layers.{bid}.self_attn.o_proj": "blk.{bid}.attn_output",
        "model.layers.{bid}.post_attention_layernorm": "blk.{bid}.ffn_norm",
        "model.layers.{bid}.mlp.gate_up_proj": "blk.{bid}.ffn_up",
        "model.layers.{bid}.mlp.down_proj": "blk.{bid}.ffn_down",
    },
    metadata=metadata,
    vocab=vocab,
    extra_tensors=rope_factors,
    defaults={"num_key_value_heads": n_heads, "max_position_embeddings": 4096,
              "original_max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "vocab_size": 32064,
              "rope_theta": 10000.0, "partial_rotary_factor": 1.0},
)
