"""Gemma 4 (Gemma4ForCausalLM, and the text model of Gemma4ForConditionalGeneration): Gemma 3's layout with plain
norms (w, not 1 + w), sliding and full attention layers of different head sizes and KV-head counts, full layers
sharing K as V (attention_k_eq_v: no v_proj), per-layer input embeddings (E2B/E4B), a layer output scale, and
"proportional" rope on full layers expressed as rope_freqs (llama.cpp's Gemma4Model)."""

from __future__ import annotations

import numpy as np
from gguf import GGUFValueType as VT
from gguf import Keys

from lorapack.errors import CheckpointError
from lorapack.spec import kinds
from lorapack.spec.arch import MULTIMODAL_TEXT, Spec
from lorapack.spec.plan import array, u32

from .gemma3 import gemma3_keys

A = "gemma4"


def _full_layer(h, key: str):
    """`key` of the first full-attention layer's per_layer_config entry (transformers 5 keeps the full layers'
    head size and KV heads there), or None."""
    types = h.get("layer_types") or []
    for i, layer in (h.get("per_layer_config") or {}).items():
        if str(i).isdecimal() and int(i) < len(types) and types[int(i)] == "full_attention" and key in layer:
            return layer[key]
    return None


def head_dim_full(h) -> int:
    if (d := h.get("global_head_dim", _full_layer(h, "head_dim"))) is None:
        raise CheckpointError("config.json: gemma4 needs global_head_dim or a full-attention per_layer_config")
    return int(d)


def metadata(h, file_type: int) -> list:
    kv = gemma3_keys(A, h, file_type)
    types = h.get("layer_types")
    if not isinstance(types, list) or len(types) != h.block_count:
        raise CheckpointError("config.json: gemma4 needs layer_types, one per layer")
    swa = [t == "sliding_attention" for t in types]
    n_shared = h.find(["num_kv_shared_layers"])
    full, head_swa = head_dim_full(h), h.find(["head_dim"])
    kv += [u32(f"{A}.attention.shared_kv_layers", n_shared),
           u32(f"{A}.embedding_length_per_layer_input", h.get("hidden_size_per_layer_input") or 0),
           array(Keys.Attention.SLIDING_WINDOW_PATTERN.format(arch=A), swa, VT.BOOL),
           u32(Keys.Attention.KEY_LENGTH.format(arch=A), full), u32(Keys.Attention.VALUE_LENGTH.format(arch=A), full),
           u32(f"{A}.attention.key_length_swa", head_swa), u32(f"{A}.attention.value_length_swa", head_swa)]
    if (n_ff_exp := h.find(["expert_intermediate_size", "moe_intermediate_size"], None)) is not None:
        kv.append(u32(Keys.LLM.EXPERT_FEED_FORWARD_LENGTH.format(arch=A), n_ff_exp))
    if h.get("use_double_wide_mlp"):  # the KV-sharing layers' MLPs are twice as wide
        n_ff, first_shared = h.find(["intermediate_size"]), h.block_count - n_shared
        kv.append(array(Keys.LLM.FEED_FORWARD_LENGTH.format(arch=A),
                        [n_ff if i < first_shared else 2 * n_ff for i in range(h.block_count)], VT.INT32))
    kv_full, kv_swa = h.get("num_global_key_value_heads", _full_layer(h, "num_key_value_heads")), \
        h.get("num_key_value_heads")
    if kv_full is not None and kv_swa is not None:
        kv.append(array(Keys.Attention.HEAD_COUNT_KV.format(arch=A), [kv_swa if s else kv_full for s in swa],
                        VT.INT32))
    kv += [u32(Keys.Rope.DIMENSION_COUNT.format(arch=A), full),
           u32(f"{A}.rope.dimension_count_swa", int(head_swa * h.rope.get("partial_rotary_factor", 1.0)))]
    return kv


def rope_freqs(h) -> list[tuple[str, np.ndarray]]:
    """Full layers rotate only partial_rotary_factor of each head ("proportional" rope); ggml's neox rope rotates
    the first dimensions, so the unrotated ones get frequency factors of 1e30 (llama.cpp's Gemma4Model)."""
    full = h.rope.get("full_attention", {})
    if full.get("rope_type") != "proportional":
        raise CheckpointError(f"config.json: gemma4's full-attention rope_type {full.get('rope_type')!r} is not "
                              "'proportional'")
    d = head_dim_full(h)
    n_rot = int(d * full["partial_rotary_factor"] / 2)
    return [("rope_freqs.weight", np.array([1.0] * n_rot + [1e30] * (d // 2 - n_rot), np.float32))]


SPEC = Spec(
    name=A,
    hf_classes=("Gemma4ForCausalLM", "Gemma4ForConditionalGeneration"),
    metadata=metadata,
    tokenizer="gemma4",
    sliding_window=True,
    transforms=(kinds.VOCAB_TRIM,),
    prefixes=MULTIMODAL_TEXT,
    # llama.cpp names these scalars' tensors with a .weight it appends first
    renames=((".layer_scalar", ".layer_scalar.weight"), (".per_dim_scale", ".per_dim_scale.weight")),
    generated=rope_freqs,
    # Gemma4TextConfig's defaults (transformers 5)
    defaults={"head_dim": 256, "num_key_value_heads": 4, "max_position_embeddings": 131072, "rms_norm_eps": 1e-6,
              "sliding_window": 512, "vocab_size": 262144, "num_kv_shared_layers": 0,
              "hidden_size_per_layer_input": 256},
)
