"""Each transform kind's inverse, written here on its own: what llama.cpp stored → the HF checkpoint's values.

Deliberately not lorapack.convert's code (tests/test_isolation.py): a check that reused the converter's forward
would repeat its mistakes instead of catching them. Roles and orientations as in lorapack.spec.kinds.
"""

from __future__ import annotations

import numpy as np

from lorapack.spec import kinds
from lorapack.spec.arch import Spec


def undo_rope_permutation(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp stores each head's q/k rows as [pairs…]; HF as [first halves…, second halves…]."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_heads(spec: Spec, config: dict, gguf_name: str) -> int | None:
    if not spec.has(kinds.ROPE_QK):
        return None
    return kinds.rope_heads(gguf_name, config["num_attention_heads"], config.get("num_key_value_heads"))


def norm_offset(spec: Spec, gguf_name: str, role: str = kinds.WEIGHT) -> float:
    """What llama.cpp added to a stored value (Gemma's 1 + w)."""
    return 1.0 if spec.has(kinds.NORM_OFFSET) and role == kinds.WEIGHT and kinds.is_norm(gguf_name) else 0.0


def v_heads(spec: Spec, config: dict, gguf_name: str, role: str) -> tuple[int, int, int, int] | None:
    return kinds.v_heads(gguf_name, role, config.get) if spec.has(kinds.V_HEAD_ORDER) else None


def group_v_heads(values: np.ndarray, axis: int, start: int, n_k: int, per: int, d: int) -> np.ndarray:
    """llama.cpp's tiled V heads (per K-head copy, then K head) back to HF's grouping by K head."""
    v = np.moveaxis(values, axis, 0)
    tail = v[start:].reshape(per, n_k, d, *v.shape[1:])
    tail = np.swapaxes(tail, 0, 1).reshape(v[start:].shape)
    return np.moveaxis(np.concatenate([v[:start], tail]), 0, axis)


def whole_tensor(spec: Spec, config: dict, gguf_name: str, role: str) -> bool:
    """Whether undoing needs the whole tensor: a reorder, exp/log or reshape applies (else only the norm offset,
    which holds on any block of rows)."""
    reorders = (role in kinds.ROW_ROLES and rope_heads(spec, config, gguf_name) is not None) or \
        v_heads(spec, config, gguf_name, role) is not None
    exp_log = spec.has(kinds.SSM_A_LOG) and kinds.is_ssm_a(gguf_name)
    return reorders or exp_log or (spec.has(kinds.CONV_SQUEEZE) and kinds.is_conv(gguf_name))


def undo_order(spec: Spec, config: dict, gguf_name: str, role: str, values: np.ndarray) -> np.ndarray:
    """The row and column reorders undone (values otherwise untouched): valid for any values in GGUF order."""
    if role in kinds.ROW_ROLES and (heads := rope_heads(spec, config, gguf_name)) is not None:
        shape = values.shape
        values = undo_rope_permutation(values.reshape(shape[0], -1), heads).reshape(shape)
    if (where := v_heads(spec, config, gguf_name, role)) is not None:
        axis = -1 if kinds.v_head_columns(gguf_name) else 0
        values = group_v_heads(values, axis, *where)
    return values


def undo(spec: Spec, config: dict, gguf_name: str, role: str, values: np.ndarray) -> np.ndarray:
    """Every kind the architecture declares, inverted, on a whole tensor (float32), in the checkpoint's shape."""
    values = undo_order(spec, config, gguf_name, role, values)
    if shift := norm_offset(spec, gguf_name, role):
        values = values - np.float32(shift)
    if spec.has(kinds.SSM_A_LOG) and kinds.is_ssm_a(gguf_name):
        with np.errstate(divide="ignore", invalid="ignore"):  # a positive A (a defect) becomes NaN: it fails
            values = np.log(-values.astype(np.float64)).astype(np.float32)
    if spec.has(kinds.CONV_SQUEEZE) and kinds.is_conv(gguf_name):
        if values.ndim != 2:  # llama.cpp's loader wants (channels, kernel)
            raise ValueError(f"{gguf_name} is {values.ndim}-D, not squeezed to (channels, kernel)")
        values = values[:, None, :]  # a depthwise Conv1d's (channels, 1, kernel)
    return values
