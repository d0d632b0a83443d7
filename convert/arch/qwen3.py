"""Qwen3: the Qwen2 layout without q/k/v biases, with RMS norms on each head's queries and keys
(llama.cpp's Qwen3Model, a Qwen2Model with MODEL_ARCH.QWEN3)."""

from __future__ import annotations

from ..hparams import text_params
from . import Arch, n_heads
from .common import LLAMA_LIKE, spm_or_bpe


def metadata(h, file_type: int) -> list:
    return text_params("qwen3", h, file_type)


ARCH = Arch(
    name="qwen3",
    hf_architectures=("Qwen3ForCausalLM",),
    tensors={**LLAMA_LIKE, "model.layers.{bid}.self_attn.q_norm": "blk.{bid}.attn_q_norm",
             "model.layers.{bid}.self_attn.k_norm": "blk.{bid}.attn_k_norm"},
    metadata=metadata,
    vocab=spm_or_bpe,
    defaults={"num_key_value_heads": n_heads, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
              "vocab_size": 151936, "rope_theta": 10000.0, "head_dim": 128},
)
