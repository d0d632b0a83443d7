"""config.json as a Hugging Face model folder holds it: the types and ranges of the fields lorapack reads.

Checked once, where the file is read, so that neither convert's metadata nor the validator's reference ever
meets a head count of 0, a string where a number belongs or a hidden size that does not split into heads.
"""

from __future__ import annotations

from typing import Any

from lorapack.errors import CheckpointError

from .jsonfile import describe, is_int, is_number

# positive integers, with a bound far above any real model (so a hostile value cannot size an allocation)
_POSITIVE = {
    "num_hidden_layers": 1 << 12, "n_layers": 1 << 12, "n_layer": 1 << 12, "num_layers": 1 << 12,
    "hidden_size": 1 << 20, "n_embd": 1 << 20, "dim": 1 << 20,
    "intermediate_size": 1 << 22, "n_inner": 1 << 22, "hidden_dim": 1 << 22,
    "num_attention_heads": 1 << 14, "n_head": 1 << 14, "n_heads": 1 << 14,
    "num_key_value_heads": 1 << 14, "n_kv_heads": 1 << 14, "head_dim": 1 << 16,
    "vocab_size": 1 << 24, "max_position_embeddings": 1 << 31, "sliding_window": 1 << 31,
    "original_max_position_embeddings": 1 << 31, "query_pre_attn_scalar": 1 << 20,
    "num_local_experts": 1 << 16, "num_experts": 1 << 16, "n_routed_experts": 1 << 16,
    "num_experts_per_tok": 1 << 16, "moe_intermediate_size": 1 << 22, "shared_expert_intermediate_size": 1 << 22,
    # linear attention (Qwen 3.5), MTP blocks, Gemma 4's per-layer shapes
    "linear_conv_kernel_dim": 1 << 10, "linear_key_head_dim": 1 << 16, "linear_value_head_dim": 1 << 16,
    "linear_num_key_heads": 1 << 14, "linear_num_value_heads": 1 << 14, "full_attention_interval": 1 << 12,
    "mtp_num_hidden_layers": 1 << 8, "global_head_dim": 1 << 16, "num_global_key_value_heads": 1 << 14,
    "num_kv_shared_layers": 1 << 12, "hidden_size_per_layer_input": 1 << 20, "vocab_size_per_layer_input": 1 << 24,
}
# 0 means "none" in some configs
_NON_NEGATIVE = ("sliding_window", "mtp_num_hidden_layers", "num_kv_shared_layers", "hidden_size_per_layer_input")
_POSITIVE_FLOATS = ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon", "norm_eps", "rope_theta",
                    "rope_local_base_freq")
_FINITE = ("partial_rotary_factor", "attn_logit_softcapping", "final_logit_softcapping",
           "embedding_multiplier", "residual_multiplier", "attention_multiplier", "logits_scaling")
_BOOLS = ("tie_word_embeddings", "is_causal", "attention_bias", "mlp_bias")


def check_config(config: dict[str, Any], where: str) -> None:
    """Raise CheckpointError naming `where` (the file) and the field for the first field that is unusable."""
    problems = _fields(config, "")
    if isinstance(config.get("text_config"), dict):
        problems += _fields(config["text_config"], "text_config.")
    elif config.get("text_config") is not None:
        problems.append("text_config is not an object")
    if problems:
        raise CheckpointError(*(f"{where}: {p}" for p in problems[:4]))


def _fields(c: dict[str, Any], prefix: str) -> list[str]:
    problems = []
    arch = c.get("architectures")
    if arch is not None and not (isinstance(arch, list) and all(isinstance(a, str) for a in arch)):
        problems.append(f"{prefix}architectures must be a list of class names, not {describe(arch)}")
    for key, bound in _POSITIVE.items():
        v = c.get(key)
        low = 0 if key in _NON_NEGATIVE else 1
        if v is not None and not (is_int(v) and low <= v <= bound):
            problems.append(f"{prefix}{key} is {describe(v)}; expected an integer from {low} to {bound}")
    for key in _FINITE:
        v = c.get(key)
        if v is not None and not is_number(v):
            problems.append(f"{prefix}{key} is {describe(v)}; expected a finite number")
    for key in _POSITIVE_FLOATS:
        v = c.get(key)
        if v is not None and not (is_number(v) and v > 0):
            problems.append(f"{prefix}{key} is {describe(v)}; expected a finite number above 0")
    for key in _BOOLS:
        v = c.get(key)
        if v is not None and not isinstance(v, bool):
            problems.append(f"{prefix}{key} is {describe(v)}; expected true or false")
    for key in ("rope_scaling", "rope_parameters"):
        problems += _rope(c.get(key), prefix + key)
    problems += _layers(c, prefix)
    return problems or _heads(c, prefix)


def _layers(c: dict[str, Any], prefix: str) -> list[str]:
    """Per-layer fields: layer_types a list of names, per_layer_config (Gemma 4) layer index → shapes."""
    problems = []
    types = c.get("layer_types")
    if types is not None and not (isinstance(types, list) and len(types) <= 1 << 12
                                  and all(isinstance(t, str) for t in types)):
        problems.append(f"{prefix}layer_types is {describe(types)}; expected a list of layer type names")
    per_layer = c.get("per_layer_config")
    if per_layer is not None:
        if not (isinstance(per_layer, dict) and len(per_layer) <= 1 << 12
                and all(isinstance(k, str) and k.isdecimal() and isinstance(v, dict) for k, v in per_layer.items())):
            return problems + [f"{prefix}per_layer_config must map layer indices to objects"]
        for i, layer in per_layer.items():
            for key in ("head_dim", "num_key_value_heads"):
                if (v := layer.get(key)) is not None and not (is_int(v) and 1 <= v <= _POSITIVE[key]):
                    problems.append(f"{prefix}per_layer_config.{i}.{key} is {describe(v)}; expected an integer "
                                    f"from 1 to {_POSITIVE[key]}")
    return problems


def _rope(r: Any, name: str) -> list[str]:
    if r is None:
        return []
    if not isinstance(r, dict):
        return [f"{name} is {describe(r)}; expected an object"]
    if all(isinstance(v, dict) for v in r.values()) and r:  # per attention type (Gemma 3)
        return [p for k, v in r.items() for p in _rope(v, f"{name}.{k}")]
    if bad := [k for k in ("full_attention", "sliding_attention") if k in r]:
        return [f"{name}.{bad[0]} must be an object, beside other attention types"]
    problems = []
    for key in ("rope_type", "type"):
        if r.get(key) is not None and not isinstance(r[key], str):
            problems.append(f"{name}.{key} is {describe(r[key])}; expected a string")
    for key, v in r.items():
        if key in ("long_factor", "short_factor"):
            if not (isinstance(v, list) and len(v) <= 1 << 16 and all(is_number(x) for x in v)):
                problems.append(f"{name}.{key} must be a list of finite numbers")
        elif key not in ("rope_type", "type", "mrope_section") and v is not None and not (
                is_number(v) or isinstance(v, bool)):
            problems.append(f"{name}.{key} is {describe(v)}; expected a finite number")
    return problems


def _heads(c: dict[str, Any], prefix: str) -> list[str]:
    """Shapes that must divide: hidden size into heads (when head_dim is implied), heads into KV groups."""
    hidden, heads, kv = c.get("hidden_size"), c.get("num_attention_heads"), c.get("num_key_value_heads")
    problems = []
    if hidden and heads and c.get("head_dim") is None and hidden % heads:
        problems.append(f"{prefix}hidden_size {hidden} does not split into {heads} attention heads")
    if heads and kv and heads % kv:
        problems.append(f"{prefix}num_attention_heads {heads} is not a multiple of num_key_value_heads {kv}")
    n_k, n_v = c.get("linear_num_key_heads"), c.get("linear_num_value_heads")
    if n_k and n_v and n_v % n_k:
        problems.append(f"{prefix}linear_num_value_heads {n_v} is not a multiple of linear_num_key_heads {n_k}")
    layers, shared = c.get("num_hidden_layers"), c.get("num_kv_shared_layers")
    if layers and shared is not None and shared > layers:
        problems.append(f"{prefix}num_kv_shared_layers {shared} exceeds num_hidden_layers {layers}")
    return problems
