"""Qwen3-MoE (Qwen3MoeForCausalLM, Qwen3-30B-A3B / 235B-A22B): Qwen3's attention with q/k norms, and a sparse MLP —
a softmax router (ffn_gate_inp) over experts that llama.cpp stores stacked, one 3-D ffn_{gate,up,down}_exps tensor
per block (llama.cpp's Qwen3MoeModel). Checkpoints keep each expert apart (mlp.experts.N.*_proj); transformers 5
and PEFT see them fused (mlp.experts.gate_up_proj, down_proj), adapted through target_parameters."""

from __future__ import annotations

from gguf import Keys

from lorapack.spec import kinds
from lorapack.spec.arch import Spec
from lorapack.spec.hparams import text_params
from lorapack.spec.plan import u32

A = "qwen3moe"


def metadata(h, file_type: int) -> list:
    kv = text_params(A, h, file_type)
    if (n_ff := h.get("moe_intermediate_size")) is not None:
        kv.append(u32(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH.format(arch=A), n_ff))
    if (n_shared := h.get("shared_expert_intermediate_size")) is not None:
        kv.append(u32(Keys.LLM.EXPERT_SHARED_FEED_FORWARD_LENGTH.format(arch=A), n_shared))
    return kv


SPEC = Spec(
    name=A,
    hf_classes=("Qwen3MoeForCausalLM",),
    metadata=metadata,
    tokenizer="bpe",  # TextModel's set_vocab: tokenizer.json only
    transforms=(kinds.EXPERT_STACK,),
    # PEFT's fused gate_up_proj LoRA lands on llama.cpp's two stacks, rows split in halves
    splits={"mlp.experts.gate_up_proj": ("mlp.experts.gate_proj", "mlp.experts.up_proj")},
    # Qwen3MoeConfig's defaults (transformers 5)
    defaults={"num_key_value_heads": 4, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
              "vocab_size": 151936, "rope_theta": 10000.0, "head_dim": 128, "num_experts": 128,
              "num_experts_per_tok": 8, "moe_intermediate_size": 768, "norm_topk_prob": False},
)
