"""Each transform kind (lorapack.spec.kinds) forward: HF values → what llama.cpp stores.

`forward` is the one function every stored tensor goes through — base weights, biases, lora_a, lora_b and DoRA
magnitudes alike — asked with the GGUF name and the tensor's role, so a q/k permutation reaches the rows of a
weight, of its lora_b and of its magnitude the same way.
"""

from __future__ import annotations

import numpy as np

from lorapack.errors import CheckpointError
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


def v_heads(model, gguf_name: str, role: str) -> tuple[int, int, int, int] | None:
    if not model.spec.has(kinds.V_HEAD_ORDER):
        return None
    return kinds.v_heads(gguf_name, role, model.h.get)


def tile_v_heads(values: np.ndarray, axis: int, start: int, n_k: int, per: int, d: int) -> np.ndarray:
    """kinds.V_HEAD_ORDER along `axis`, from index `start`: V heads grouped by K head (n_k, per, d) → tiled
    (per, n_k, d), as llama.cpp's _reorder_v_heads."""
    v = np.moveaxis(values, axis, 0)
    tail = v[start:]
    tail = tail.reshape(n_k, per, d, *tail.shape[1:]).swapaxes(0, 1).reshape(tail.shape)
    return np.moveaxis(np.concatenate([v[:start], tail]), 0, axis)


def stored_shape(model, gguf_name: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """kinds.CONV_SQUEEZE: llama.cpp squeezes the conv kernel's unit axes."""
    if model.spec.has(kinds.CONV_SQUEEZE) and kinds.is_conv(gguf_name):
        return tuple(d for d in shape if d != 1)
    return shape


def row_local(model, gguf_name: str, role: str) -> bool:
    """Whether the tensor can be transformed a block of rows at a time (no kind that reorders applies)."""
    reorders = role in kinds.ROW_ROLES and rope_heads(model, gguf_name) is not None
    return not (reorders or v_heads(model, gguf_name, role) or _neg_exp(model, gguf_name))


def _neg_exp(model, gguf_name: str) -> bool:
    return model.spec.has(kinds.SSM_A_LOG) and kinds.is_ssm_a(gguf_name)


def changes_values(model, gguf_name: str, role: str) -> bool:
    """Whether a value kind applies (the stored bits cannot be a plain cast of the checkpoint's)."""
    return bool(norm_offset(model, gguf_name, role)) or _neg_exp(model, gguf_name)


def forward_rows(model, gguf_name: str, role: str, values: np.ndarray) -> np.ndarray:
    """The value kinds that hold on any block of rows (the norm offset, in the values' own precision)."""
    if shift := norm_offset(model, gguf_name, role):
        values = values + values.dtype.type(shift)
    return values


def forward(model, gguf_name: str, role: str, values: np.ndarray) -> np.ndarray:
    """Every kind the architecture declares, on the whole tensor. Reorders are exact on encoded values too."""
    values = forward_rows(model, gguf_name, role, values)
    if _neg_exp(model, gguf_name):  # torch's exp in the values' own precision (F16 stays F16), as llama.cpp:
        import torch  # numpy's exp differs from torch's in the last bit

        values = (-torch.exp(torch.from_numpy(np.ascontiguousarray(values)))).numpy()
    if role in kinds.ROW_ROLES and (heads := rope_heads(model, gguf_name)) is not None:
        shape = values.shape
        values = llama_permute(values.reshape(shape[0], -1), heads).reshape(shape)
    if (where := v_heads(model, gguf_name, role)) is not None:
        axis = -1 if role in kinds.COLUMN_ROLES and kinds.v_head_columns(gguf_name) else 0
        start, n_k, per, d = where
        if values.shape[axis] != start + n_k * per * d:
            raise CheckpointError(f"{gguf_name}: {values.shape[axis] - start} V rows or columns, but config.json "
                                  f"declares {n_k * per} V heads of {d}")
        values = tile_v_heads(values, axis, *where)
    return values


def stack_experts(parts: list[np.ndarray]) -> np.ndarray:
    """Per-expert (out, in) matrices → llama.cpp's (experts, out, in) stack (kinds.EXPERT_STACK)."""
    return np.stack(parts, axis=0)


def expert_factors(a: np.ndarray, b: np.ndarray, n_experts: int) -> tuple[np.ndarray, np.ndarray]:
    """PEFT's ParamWrapper factors → llama.cpp's stacked ones (kinds.EXPERT_STACK): lora_A (E·r, in) grouped by
    expert → (E, r, in); lora_B (out, r·E), expert fastest → (E, out, r)."""
    r = a.shape[0] // n_experts
    return a.reshape(n_experts, r, a.shape[1]), b.reshape(b.shape[0], r, n_experts).transpose(2, 0, 1)
