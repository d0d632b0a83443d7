"""Granite (IBM Granite 3.x): the llama layout and q/k permutation, with four multipliers that scale
attention, embeddings, residuals and logits. llama.cpp's GraniteModel ignores head_dim."""

from __future__ import annotations

from gguf import Keys

from lorapack.spec import kinds
from lorapack.spec.arch import Spec
from lorapack.spec.hparams import n_heads
from lorapack.spec.plan import f32

from .llama import llama_keys

A = "granite"
_MULTIPLIERS = (("attention_multiplier", Keys.Attention.SCALE), ("embedding_multiplier", Keys.LLM.EMBEDDING_SCALE),
                ("residual_multiplier", Keys.LLM.RESIDUAL_SCALE), ("logits_scaling", Keys.LLM.LOGIT_SCALE))


def metadata(h, file_type: int) -> list:
    h.raw.pop("head_dim", None)  # as llama.cpp: Granite's rope dimension is always hidden / heads
    kv = llama_keys(A, h, file_type)
    return kv + [f32(key.format(arch=A), v) for name, key in _MULTIPLIERS if (v := h.get(name))]


SPEC = Spec(
    name=A,
    hf_classes=("GraniteForCausalLM",),
    metadata=metadata,
    tokenizer="llama",
    transforms=(kinds.ROPE_QK,),
    # GraniteConfig's defaults (transformers 5)
    defaults={"num_key_value_heads": n_heads, "max_position_embeddings": 2048, "rms_norm_eps": 1e-6,
              "vocab_size": 32000, "rope_theta": 10000.0, "embedding_multiplier": 1.0,
              "logits_scaling": 1.0, "residual_multiplier": 1.0, "attention_multiplier": 1.0},
)
