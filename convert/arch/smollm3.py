"""SmolLM3: the llama layout and q/k permutation under its own architecture name; llama.cpp's runtime skips
RoPE on every 4th layer as transformers' no_rope_layer_interval does (nothing to write for it)."""

from __future__ import annotations

from .llama import llama_derived

# SmolLM3Config's defaults (transformers 5)
ARCH = llama_derived("smollm3", ("SmolLM3ForCausalLM",),
                     {"num_key_value_heads": 4, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
                      "vocab_size": 128256, "rope_theta": 2_000_000.0})
