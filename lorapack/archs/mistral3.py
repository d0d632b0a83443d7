"""Mistral Small 3.x (Mistral3ForConditionalGeneration): its text model, the llama layout and q/k permutation
under the name mistral3 (llama.cpp's Ministral3Model); the pixtral vision tower stays out (llama.cpp's mmproj).

llama.cpp's own LoRA converter mishandles these adapters (it writes the base model); lorapack writes the adapter
llama.cpp's runtime loads, shown by its logits against PEFT's (tests/test_llama_cpp.py)."""

from __future__ import annotations

from lorapack.spec import kinds
from lorapack.spec.arch import MULTIMODAL_TEXT, Spec

from .llama import llama_keys

SPEC = Spec(
    name="mistral3",
    hf_classes=("Mistral3ForConditionalGeneration",),
    metadata=lambda h, file_type: llama_keys("mistral3", h, file_type),
    tokenizer="llama",
    transforms=(kinds.ROPE_QK,),
    prefixes=MULTIMODAL_TEXT,
    # MistralConfig's defaults (transformers 5), for the text model
    defaults={"num_key_value_heads": 8, "head_dim": 128, "max_position_embeddings": 131072,
              "rms_norm_eps": 1e-6, "vocab_size": 32000, "rope_theta": 10000.0},
)
