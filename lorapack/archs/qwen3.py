"""Qwen3: the Qwen2 layout without q/k/v biases, with RMS norms on each head's queries and keys
(llama.cpp's Qwen3Model, a Qwen2Model with MODEL_ARCH.QWEN3)."""

from __future__ import annotations

from lorapack.spec.arch import Spec
from lorapack.spec.hparams import n_heads, text_params

SPEC = Spec(
    name="qwen3",
    hf_classes=("Qwen3ForCausalLM",),
    metadata=lambda h, file_type: text_params("qwen3", h, file_type),
    defaults={"num_key_value_heads": n_heads, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
              "vocab_size": 151936, "rope_theta": 10000.0, "head_dim": 128},
)
