"""Each transform kind (lorapack.spec.kinds) forward: HF values → what llama.cpp stores.

`forward` is the one function every stored tensor goes through — base weights, biases, lora_a, lora_b and DoRA
magnitudes alike — asked with the GGUF name and the tensor's role, so a q/k permutation reaches the rows of a
weight, of its lora_b and of its magnitude the same way.
"""

from __future__ import annotations

import numpy as np

from lorapack.spec import kinds


def llama_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: per head, interleaved halves become contiguous (numpy order, rows first)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_heads(model, gguf_name: str) -> int | None:
    if not model.spec.has(kinds.ROPE_QK):
        return None
    return kinds.rope_heads(gguf_name, model.n_head, model.n_head_kv)


def norm_offset(model, gguf_name: str, role: str) -> float:
    return 1.0 if model.spec.has(kinds.NORM_OFFSET) and role == kinds.WEIGHT and kinds.is_norm(gguf_name) else 0.0


def row_local(model, gguf_name: str, role: str) -> bool:
    """Whether the tensor can be transformed a block of rows at a time (no kind that reorders rows applies)."""
    return not (role in kinds.ROW_ROLES and rope_heads(model, gguf_name) is not None)


def forward_rows(model, gguf_name: str, role: str, values: np.ndarray) -> np.ndarray:
    """The value kinds only, valid on any block of rows (the norm offset, in the values' own precision)."""
    if shift := norm_offset(model, gguf_name, role):
        values = values + values.dtype.type(shift)
    return values


def forward(model, gguf_name: str, role: str, values: np.ndarray) -> np.ndarray:
    """Every kind the architecture declares, on the whole tensor. Row reorders are exact on encoded values too."""
    values = forward_rows(model, gguf_name, role, values)
    if role in kinds.ROW_ROLES and (heads := rope_heads(model, gguf_name)) is not None:
        shape = values.shape
        values = llama_permute(values.reshape(shape[0], -1), heads).reshape(shape)
    return values


def stack_experts(parts: list[np.ndarray]) -> np.ndarray:
    """Per-expert (out, in) matrices → llama.cpp's (experts, out, in) stack (kinds.EXPERT_STACK)."""
    return np.stack(parts, axis=0)


def expert_factors(a: np.ndarray, b: np.ndarray, n_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """PEFT's ParamWrapper factors → llama.cpp's stacked ones (kinds.EXPERT_STACK): lora_A (E·r, in) grouped by
    expert → (E, r, in); lora_B (out, r·E), expert fastest → (E, out, r)."""
    r = a.shape[0] // n_experts
    return a.reshape(n_experts, r, a.shape[1]), b.reshape(b.shape[0], r, n_experts).transpose(2, 0, 1)
