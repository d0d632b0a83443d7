"""The validator's own map from GGUF tensor names back to Hugging Face modules, and inverses of llama.cpp's
transforms. Written independently of lorapack.convert on purpose: a check that reused the converter's code
would repeat its mistakes instead of catching them."""

from __future__ import annotations

import re

import numpy as np

# GGUF block tensor kind → HF module inside model.layers.N (per architecture where they differ)
_BLOCK = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "attn_qkv": "self_attn.qkv_proj", "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm", "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm",
}
_ARCH_BLOCK = {
    "phi3": {"ffn_up": "mlp.gate_up_proj"},
    "gemma3": {"ffn_norm": "pre_feedforward_layernorm", "post_attention_norm": "post_attention_layernorm",
               "post_ffw_norm": "post_feedforward_layernorm"},
}
_ARCH_BLOCK["gemma2"] = _ARCH_BLOCK["gemma3"]
_GLOBAL = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_RX = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|bias)$")
GENERATED = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")


# transformers 5 nests a multimodal model's text model as model.language_model.* (what PEFT names), while
# checkpoints keep language_model.model.*; the validator works in the text model's own names, model.*
_NESTED = (("model.language_model.", "model."), ("language_model.model.", "model."),
           ("language_model.lm_head.", "lm_head."))


# a multimodal checkpoint's other towers: llama.cpp's text model leaves them out (images go to its mmproj file)
TOWERS = ("vision_tower.", "multi_modal_projector.", "vision_model.", "audio_tower.", "model.vision_tower.",
          "model.multi_modal_projector.", "model.audio_tower.")


def canonical(name: str) -> str:
    """A module or tensor name of a (possibly multimodal) model in the text model's own terms."""
    dotted = name + "."
    for old, new in _NESTED:
        if dotted.startswith(old):
            return (new + dotted[len(old):])[:-1]
    return name


def hf_module(arch: str, gguf_name: str) -> tuple[str, str] | None:
    """GGUF tensor name → (HF module name, 'weight'|'bias'), or None for tensors llama.cpp generates."""
    if gguf_name in GENERATED:
        return None
    if m := _RX.match(gguf_name):
        bid, kind, suffix = m.groups()
        module = _ARCH_BLOCK.get(arch, {}).get(kind) or _BLOCK.get(kind)
        return (f"model.layers.{bid}.{module}", suffix) if module else None
    stem, _, suffix = gguf_name.rpartition(".")
    return (_GLOBAL[stem], suffix) if stem in _GLOBAL else None


def undo_rope_permutation(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp stores each head's q/k rows as [pairs…]; HF as [first halves…, second halves…]."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


PERMUTED = ("llama", "granite", "mistral3", "smollm3")  # llama.cpp's LlamaModel and its descendants


def permuted_heads(arch: str, module: str, config: dict) -> int | None:
    if arch not in PERMUTED:
        return None
    if module.endswith("q_proj"):
        return config["num_attention_heads"]
    if module.endswith("k_proj"):
        return config.get("num_key_value_heads") or config["num_attention_heads"]
    return None


def norm_offset(arch: str, module: str) -> float:
    """Gemma's RMSNorm multiplies by (1 + w); llama.cpp stores 1 + w."""
    return 1.0 if arch in ("gemma2", "gemma3") and module.endswith("norm") else 0.0
