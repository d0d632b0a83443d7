"""Hyper-parameters → GGUF keys, following what llama.cpp's converter writes for text models."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable

from gguf import GGUFValueType as VT
from gguf import Keys

from lorapack.errors import CheckpointError

from .plan import KV, array, f32, string, u32

log = logging.getLogger(__name__)


@dataclass
class HParams:
    """The config flattened as llama.cpp sees it: text_config lifted to the top, rope parameters gathered."""

    raw: dict[str, Any]
    rope: dict[str, Any]
    block_count: int  # llama.cpp's blocks: the text model's layers, then any MTP blocks
    n_layers: int = 0  # the text model's own layers (num_hidden_layers)

    def find(self, keys: Iterable[str], default: Any = ...) -> Any:
        for k in keys:
            if self.raw.get(k) is not None:  # null in config.json means "not set"
                return self.raw[k]
        if default is ...:
            raise CheckpointError(f"config.json lacks all of {list(keys)}")
        return default

    def get(self, key: str, default: Any = None) -> Any:
        """The value, or `default` when the key is absent or null (null in config.json means "not set")."""
        value = self.raw.get(key)
        return default if value is None else value

    @property
    def rope_full(self) -> dict[str, Any]:
        return self.rope.get("full_attention", self.rope)


def flatten(config: dict[str, Any], defaults: dict[str, Any]) -> HParams:
    """`defaults`: what transformers' config class fills in when config.json omits a key; a callable default
    is computed from the other hyper-parameters."""
    hp = dict(config)
    if isinstance(hp.get("text_config"), dict):
        hp = {**hp, **hp["text_config"]}
    for key, value in defaults.items():
        if hp.get(key) is None and key != "rope_theta":
            hp[key] = value(hp) if callable(value) else value
    # as transformers: a legacy rope_scaling replaces rope_parameters; rope_theta then comes from the top level
    # or the class default
    h = HParams(hp, dict(hp.get("rope_scaling") or hp.get("rope_parameters") or {}), 0)
    if "rope_theta" in defaults and "rope_theta" not in hp and not hp.get("rope_parameters"):
        hp["rope_theta"] = defaults["rope_theta"]
    h.block_count = h.n_layers = h.find(["n_layers", "num_hidden_layers", "n_layer", "num_layers"])
    _mirror_rope(h)
    return h


def _mirror_rope(h: HParams) -> None:
    """Older configs keep rope fields at the top level; gather them as llama.cpp does."""
    rope = h.rope
    if "full_attention" in rope or "sliding_attention" in rope:
        return
    keys = {
        "rope_theta": ["global_rope_theta", "rope_global_theta", "rope_theta_global", "rope_theta",
                       "rotary_emb_base"],
        "partial_rotary_factor": ["partial_rotary_factor", "rope_pct", "rope_percent"],
        "original_max_position_embeddings": ["original_max_position_embeddings"],
    }
    local = h.find(["local_rope_theta", "rope_local_theta", "rope_theta_local", "swa_rope_theta",
                    "rope_local_base_freq"], None)
    if local is not None:
        rope["sliding_attention"] = {"rope_theta": local}
    for key, names in keys.items():
        value = h.find(names, None)
        if key not in rope and value is not None:
            rope[key] = value
    if "rope_type" not in rope and rope.get("type") is not None:
        rope["rope_type"] = rope["type"]


def text_params(arch: str, h: HParams, file_type: int) -> list[KV]:
    """The keys every text model gets (llama.cpp's TextModel.set_gguf_parameters, for dense models)."""
    A = arch
    kv = [u32(Keys.LLM.BLOCK_COUNT.format(arch=A), h.block_count)]
    optional = [
        (Keys.LLM.CONTEXT_LENGTH, ["max_position_embeddings", "n_ctx", "n_positions", "max_length",
                                   "max_sequence_length", "model_max_length"], u32),
        (Keys.LLM.EMBEDDING_LENGTH, ["hidden_size", "n_embd", "dim"], u32),
        (Keys.LLM.FEED_FORWARD_LENGTH, ["prefix_dense_intermediate_size", "dense_intermediate_size",
                                        "intermediate_size", "n_inner", "hidden_dim"], u32),
        (Keys.Attention.HEAD_COUNT, ["num_attention_heads", "n_head", "n_heads"], u32),
        (Keys.Attention.HEAD_COUNT_KV, ["num_key_value_heads", "n_kv_heads"], u32),
    ]
    for key, names, make in optional:
        if (v := h.find(names, None)) is not None:
            kv.append(make(key.format(arch=A), v))
    if h.get("is_causal") is False:
        raise CheckpointError("non-causal (embedding) models are not supported")
    kv += rope_scaling(A, h)
    if (sections := h.rope.get("mrope_section")) is not None:  # padded to [time, height, width, extra]
        kv.append(array(Keys.Rope.DIMENSION_SECTIONS.format(arch=A), [*sections, 0, 0, 0, 0][:4], VT.INT32))
    if (theta := h.rope_full.get("rope_theta")) is not None:
        kv.append(f32(Keys.Rope.FREQ_BASE.format(arch=A), theta))
    if (swa := h.rope.get("sliding_attention", {}).get("rope_theta")) is not None:
        kv.append(f32(Keys.Rope.FREQ_BASE_SWA.format(arch=A), swa))
    if (eps := h.find(["rms_norm_eps", "norm_eps"], None)) is not None:
        kv.append(f32(Keys.Attention.LAYERNORM_RMS_EPS.format(arch=A), eps))
    if (eps := h.find(["layer_norm_eps", "layer_norm_epsilon", "norm_epsilon"], None)) is not None:
        kv.append(f32(Keys.Attention.LAYERNORM_EPS.format(arch=A), eps))
    kv += expert_params(A, h)
    if (head_dim := h.get("head_dim")) is not None:
        kv += [u32(Keys.Attention.KEY_LENGTH.format(arch=A), head_dim),
               u32(Keys.Attention.VALUE_LENGTH.format(arch=A), head_dim)]
    kv.append(u32(Keys.General.FILE_TYPE, file_type))
    return kv


_GATING = {"softmax": 1, "sigmoid": 2, "sqrtsoftplus": 3}  # gguf.ExpertGatingFuncType


def expert_params(A: str, h: HParams) -> list[KV]:
    """Mixture-of-experts counts and the router's scoring function, as TextModel writes them."""
    kv = []
    for key, names in ((Keys.LLM.EXPERT_COUNT, ["num_local_experts", "num_experts", "n_routed_experts"]),
                       (Keys.LLM.EXPERT_USED_COUNT, ["num_experts_per_tok", "num_experts_per_token", "top_k_experts"]),
                       (Keys.LLM.EXPERT_GROUP_COUNT, ["n_group"]), (Keys.LLM.EXPERT_GROUP_USED_COUNT, ["topk_group"])):
        if (v := h.find(names, None)) is not None:
            kv.append(u32(key.format(arch=A), v))
    func = h.find(["score_function", "scoring_func", "score_func", "moe_router_activation",
                   "moe_router_activation_func", "expert_selection_fn"], None)
    if func is not None:
        if func not in _GATING:
            raise CheckpointError(f"config.json: expert scoring function {func!r} is not supported")
        kv.append(u32(Keys.LLM.EXPERT_GATING_FUNC.format(arch=A), _GATING[func]))
    return kv


def rope_scaling(A: str, h: HParams) -> list[KV]:
    rp = h.rope_full
    rope_type, factor = rp.get("rope_type"), rp.get("factor")
    if rope_type == "linear" and factor is not None:
        return [string(Keys.Rope.SCALING_TYPE.format(arch=A), "linear"),
                f32(Keys.Rope.SCALING_FACTOR.format(arch=A), factor)]
    if rope_type == "yarn" and factor is not None:
        if rp.get("original_max_position_embeddings") is None:
            raise CheckpointError("config.json: yarn rope scaling needs original_max_position_embeddings")
        kv = [string(Keys.Rope.SCALING_TYPE.format(arch=A), "yarn"),
              f32(Keys.Rope.SCALING_FACTOR.format(arch=A), factor),
              u32(Keys.Rope.SCALING_ORIG_CTX_LEN.format(arch=A), rp["original_max_position_embeddings"])]
        optional = [(Keys.Rope.SCALING_YARN_EXT_FACTOR, rp.get("extrapolation_factor")),
                    (Keys.Rope.SCALING_YARN_ATTN_FACTOR, rp.get("attention_factor", rp.get("attn_factor"))),
                    (Keys.Rope.SCALING_YARN_BETA_FAST, rp.get("beta_fast")),
                    (Keys.Rope.SCALING_YARN_BETA_SLOW, rp.get("beta_slow"))]
        return kv + [f32(k.format(arch=A), v) for k, v in optional if v is not None]
    if rope_type in ("su", "longrope"):
        return [string(Keys.Rope.SCALING_TYPE.format(arch=A), "longrope")]
    # llama3 and Gemma 4's proportional rope become rope_freqs tensors (the specs' generated)
    if rope_type not in (None, "default", "dynamic", "proportional") and str(rope_type).lower() != "llama3":
        log.warning("unknown RoPE type %r: no scaling keys written", rope_type)
    return []


def n_heads(hp: dict) -> int:
    """Default for num_key_value_heads: as many as the query heads."""
    return hp["num_attention_heads"]


def head_dim(hp: dict) -> int:
    return hp["hidden_size"] // hp["num_attention_heads"]
