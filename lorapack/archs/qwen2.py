"""Qwen2: the llama layout with q/k/v biases and no q/k permutation."""

from __future__ import annotations

from lorapack.spec.arch import Spec
from lorapack.spec.hparams import n_heads, text_params

SPEC = Spec(
    name="qwen2",
    hf_classes=("Qwen2ForCausalLM",),
    metadata=lambda h, file_type: text_params("qwen2", h, file_type),
    defaults={"num_key_value_heads": n_heads, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
              "vocab_size": 151936, "rope_theta": 10000.0},
)
