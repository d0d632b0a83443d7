"""Transform kinds: the ways llama.cpp's stored tensors differ from the HF checkpoint's, named once.

A spec lists the kinds it needs; convert/transforms.py implements each forward, validate/inverse.py each inverse,
independently. Tensors are in numpy order; a weight is (..., out, in), lora_a (..., r, in), lora_b (..., out, r),
a DoRA magnitude or bias (out,). A row kind acts on the `out` axis (weight, lora_b, magnitude, bias), a column kind
on the `in` axis (weight, lora_a), a value kind on the values of the weight itself.
"""

# rows of attn_q (num_attention_heads) and attn_k (num_key_value_heads): llama.cpp's rope wants each head's
# interleaved halves contiguous (LlamaModel.permute)
ROPE_QK = "rope_qk"
# values of every *_norm weight: Gemma's RMSNorm multiplies by (1 + w); llama.cpp stores 1 + w
NORM_OFFSET = "norm_offset"
# rows of token_embd / output beyond the tokenizer's vocabulary are dropped (Gemma 3's padded embedding)
VOCAB_TRIM = "vocab_trim"
# per-expert HF tensors (mlp.experts.N.*_proj) become one 3-D tensor (experts, out, in): ffn_*_exps; a PEFT
# target_parameters adapter's (E·r, in) / (out, r·E) factors become (E, r, in) / (E, out, r) the same way
EXPERT_STACK = "expert_stack"

ROWS = (ROPE_QK,)
ALL = (ROPE_QK, NORM_OFFSET, VOCAB_TRIM, EXPERT_STACK)

# roles a transform is asked about
WEIGHT, BIAS, LORA_A, LORA_B, MAGNITUDE = "weight", "bias", "lora_a", "lora_b", "magnitude"
ROW_ROLES = (WEIGHT, BIAS, LORA_B, MAGNITUDE)


def rope_heads(gguf_name: str, n_head: int, n_head_kv: int | None) -> int | None:
    """Heads the rope permutation groups rows by, for the GGUF tensor `gguf_name` (None: not a q/k tensor)."""
    kind = gguf_name.split(".")[2] if gguf_name.startswith("blk.") and gguf_name.count(".") >= 2 else ""
    if kind == "attn_q":
        return n_head
    if kind == "attn_k":
        return n_head_kv or n_head
    return None


def is_norm(gguf_name: str) -> bool:
    return gguf_name.endswith("_norm.weight")
