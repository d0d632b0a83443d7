"""Rows and helpers shared by the llama-family tables."""

from __future__ import annotations

from gguf import Keys

from lorapack.errors import CheckpointError
from lorapack.formats.jsonfile import read_json

from ..plan import boolean
from ..vocab import bpe_vocab, spm_vocab

# HF module name → GGUF name, where HF and llama.cpp agree across architectures
LLAMA_LIKE = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
    "model.layers.{bid}.input_layernorm": "blk.{bid}.attn_norm",
    "model.layers.{bid}.self_attn.q_proj": "blk.{bid}.attn_q",
    "model.layers.{bid}.self_attn.k_proj": "blk.{bid}.attn_k",
    "model.layers.{bid}.self_attn.v_proj": "blk.{bid}.attn_v",
    "model.layers.{bid}.self_attn.o_proj": "blk.{bid}.attn_output",
    "model.layers.{bid}.post_attention_layernorm": "blk.{bid}.ffn_norm",
    "model.layers.{bid}.mlp.gate_proj": "blk.{bid}.ffn_gate",
    "model.layers.{bid}.mlp.up_proj": "blk.{bid}.ffn_up",
    "model.layers.{bid}.mlp.down_proj": "blk.{bid}.ffn_down",
}


def spm_or_bpe(ckpt, h) -> list:
    """tokenizer.model when present (SentencePiece), else tokenizer.json as byte-level BPE."""
    if ckpt.file("tokenizer.model"):
        return spm_vocab(ckpt.path, h.find(["vocab_size_per_layer_input", "vocab_size"], None))
    return bpe_vocab(ckpt.path, h.get("vocab_size"))


def tokenizer_config(ckpt) -> dict:
    path = ckpt.file("tokenizer_config.json")
    return read_json(path, CheckpointError) if path else {}


def add_space_prefix(value: bool):
    return boolean(Keys.Tokenizer.ADD_PREFIX, value)
