"""Mistral Small 3.x (Mistral3ForConditionalGeneration): its text model, the llama layout and q/k permutation
under the name mistral3 (llama.cpp's Ministral3Model); the pixtral vision tower stays out (llama.cpp's mmproj).

llama.cpp's own LoRA converter mishandles these adapters (it writes the base model); lorapack writes the adapter
llama.cpp's runtime loads, shown by its logits against PEFT's (tests/test_llama_cpp.py)."""

from __future__ import annotations

from .llama import llama_derived

# MistralConfig's defaults (transformers 5), for the text model
ARCH = llama_derived("mistral3", ("Mistral3ForConditionalGeneration",),
                     {"num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 131072,
                      "rms_norm_eps": 1e-6, "vocab_size": 32000, "rope_theta": 10000.0})
