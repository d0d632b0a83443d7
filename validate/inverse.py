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


def reorders_rows(spec: Spec, config: dict, gguf_name: str, role: str) -> bool:
    return role in kinds.ROW_ROLES and rope_heads(spec, config, gguf_name) is not None


def undo_order(spec: Spec, config: dict, gguf_name: str, role: str, values: np.ndarray) -> np.ndarray:
    """The row and column reorders undone (values otherwise untouched): valid for any values in GGUF order."""
    if role in kinds.ROW_ROLES and (heads := rope_heads(spec, config, gguf_name)) is not None:
        shape = values.shape
        values = undo_rope_permutation(values.reshape(shape[0], -1), heads).reshape(shape)
    return values


def undo(spec: Spec, config: dict, gguf_name: str, role: str, values: np.ndarray) -> np.ndarray:
    """Every kind the architecture declares, inverted, on a whole tensor (float32)."""
    values = undo_order(spec, config, gguf_name, role, values)
    if shift := norm_offset(spec, gguf_name, role):
        values = values - np.float32(shift)
    return values
