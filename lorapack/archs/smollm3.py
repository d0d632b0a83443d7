"""SmolLM3: the llama layout and q/k permutation under its own architecture name; llama.cpp's runtime skips
RoPE on every 4th layer as transformers' no_rope_layer_interval does (nothing to write for it)."""

from __future__ import annotations

from lorapack.spec import kinds
from lorapack.spec.arch import Spec

from .llama import llama_keys

SPEC = Spec(
    name="smollm3",
    hf_classes=("SmolLM3ForCausalLM",),
    metadata=lambda h, file_type: llama_keys("smollm3", h, file_type),
    tokenizer="llama",
    transforms=(kinds.ROPE_QK,),
    # SmolLM3Config's defaults (transformers 5)
    defaults={"num_key_value_heads": 4, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
              "vocab_size": 128256, "rope_theta": 2_000_000.0},
)
