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
# linear attention (Gated DeltaNet) with more V heads than K heads: HF groups the V heads by K head
# [k0v0, k0v1, k1v0, k1v1], llama.cpp stores them tiled [k0v0, k1v0, k0v1, k1v1] so that ggml broadcasts K over
# them. Rows of the V part of attn_qkv and ssm_conv1d, of attn_gate, ssm_alpha, ssm_beta; the values of ssm_a and
# ssm_dt; columns of ssm_out (llama.cpp's _LinearAttentionVReorderBase)
V_HEAD_ORDER = "v_head_order"
# values of ssm_a: the checkpoint keeps A_log, llama.cpp stores A = -exp(A_log)
SSM_A_LOG = "ssm_a_log"
# ssm_conv1d: the checkpoint's Conv1d weight (channels, 1, kernel) is stored squeezed, (channels, kernel)
CONV_SQUEEZE = "conv_squeeze"

ALL = (ROPE_QK, NORM_OFFSET, VOCAB_TRIM, EXPERT_STACK, V_HEAD_ORDER, SSM_A_LOG, CONV_SQUEEZE)

# roles a transform is asked about
WEIGHT, BIAS, LORA_A, LORA_B, MAGNITUDE = "weight", "bias", "lora_a", "lora_b", "magnitude"
ROW_ROLES = (WEIGHT, BIAS, LORA_B, MAGNITUDE)
COLUMN_ROLES = (WEIGHT, LORA_A)


def rope_heads(gguf_name: str, n_head: int, n_head_kv: int | None) -> int | None:
    """Heads the rope permutation groups rows by, for the GGUF tensor `gguf_name` (None: not a q/k tensor)."""
    kind = gguf_name.split(".")[2] if gguf_name.startswith("blk.") and gguf_name.count(".") >= 2 else ""
    if kind == "attn_q":
        return n_head
    if kind == "attn_k":
        return n_head_kv or n_head
    return None


def is_norm(gguf_name: str) -> bool:
    """A norm llama.cpp offsets under NORM_OFFSET: every *norm.weight (the MTP block's nextn.enorm/hnorm too)
    except linear attention's gated norm (ssm_norm), which multiplies by w itself."""
    return gguf_name.endswith("norm.weight") and not gguf_name.endswith("ssm_norm.weight")


def _stem(gguf_name: str) -> str:
    return gguf_name.split(".")[2] if gguf_name.startswith("blk.") and gguf_name.count(".") >= 2 else ""


def is_conv(gguf_name: str) -> bool:
    return _stem(gguf_name) == "ssm_conv1d"


def is_ssm_a(gguf_name: str) -> bool:
    return _stem(gguf_name) == "ssm_a"


def v_head_columns(gguf_name: str) -> bool:
    """Whether V_HEAD_ORDER reorders this tensor's columns (ssm_out) rather than its rows."""
    return _stem(gguf_name) == "ssm_out"


def v_heads(gguf_name: str, role: str, get) -> tuple[int, int, int, int] | None:
    """Where V_HEAD_ORDER acts on a tensor in this role: (first row or column, K heads, V heads per K head,
    head size), or None. `get(key)` reads the config; the axis is the rows, or the columns for ssm_out."""
    n_k, n_v = get("linear_num_key_heads") or 0, get("linear_num_value_heads") or 0
    if not n_k or not n_v or n_k == n_v:
        return None
    d_k, d_v, per = get("linear_key_head_dim"), get("linear_value_head_dim"), n_v // n_k
    stem = _stem(gguf_name)
    if v_head_columns(gguf_name):
        return (0, n_k, per, d_v) if role in COLUMN_ROLES else None
    if role not in ROW_ROLES:
        return None
    if stem in ("attn_qkv", "ssm_conv1d"):  # q and k first, each n_k heads of d_k
        return 2 * n_k * d_k, n_k, per, d_v
    if stem == "attn_gate":
        return 0, n_k, per, d_v
    if stem in ("ssm_alpha", "ssm_beta", "ssm_a", "ssm_dt"):
        return 0, n_k, per, 1
    return None
