"""Qwen2: the llama layout with q/k/v biases and no q/k permutation."""

from __future__ import annotations

from ..hparams import text_params
from . import Arch, n_heads
from .common import LLAMA_LIKE, spm_or_bpe


def metadata(h, file_type: int) -> list:
    return text_params("qwen2", h, file_type)


ARCH = Arch(
    name="qwen2",
    hf_architectures=("Qwen2ForCausalLM",),
    tensors=LLAMA_LIKE,
    metadata=metadata,
    vocab=spm_or_bpe,
    defaults={"num_key_value_heads": n_heads, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
              "vocab_size": 151936, "rope_theta": 10000.0},
)
