"""LoRA's arithmetic, in one place (as PEFT and mlx-lm keep it on the LoRA module).

Words, used the same everywhere: *scaling* is PEFT's factor on B·A (α/r, or α/√r with rsLoRA); *weight* is the
user's --scale for an adapter (llama.cpp's per-adapter scale). Factors are in HF orientation: A (r, in), B (out, r);
for an embedding, PEFT's lora_embedding_A (r, vocab) and lora_embedding_B (dim, r), whose delta is (B·A)ᵀ.
"""

from __future__ import annotations

import math

import numpy as np


def scaling(alpha: float, rank: int, rslora: bool = False) -> float:
    """PEFT's scaling for one module."""
    return alpha / math.sqrt(rank) if rslora else alpha / rank


def llama_cpp_scaling(alpha: float, rank: int) -> float:
    """What llama.cpp multiplies B·A by for an adapter file's adapter.lora.alpha (0: no scaling)."""
    return alpha / rank if alpha else 1.0


def delta_rows(a: np.ndarray, b: np.ndarray, start: int, stop: int, embedding: bool) -> np.ndarray:
    """Rows [start, stop) of B·A (linear: output features; embedding: token ids of (B·A)ᵀ), float32, unscaled."""
    a, b = a.astype(np.float32, copy=False), b.astype(np.float32, copy=False)
    return (b @ a[:, start:stop]).T if embedding else b[start:stop] @ a


def dora_merge(w: np.ndarray, delta: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
    """DoRA as PEFT merges it: W' = m / ‖W + ΔW‖_row · (W + ΔW); returns W' − W (rows of w, delta, magnitude)."""
    full = w + delta
    return magnitude.reshape(-1, 1) / np.linalg.norm(full, axis=1, keepdims=True) * full - w


def contribution(x: np.ndarray, a: np.ndarray, b: np.ndarray, scale: float) -> np.ndarray:
    """What the adapter adds to a layer's output, as llama.cpp stores the factors: linear x (n, in) with a (r, in),
    b (out, r); embedding token ids x with a (vocab, r) gathered by id."""
    if x.dtype.kind == "i":
        return (a[x] @ b.T) * scale
    return ((x @ a.T) @ b.T) * scale


def dora_contribution(x: np.ndarray, w: np.ndarray, a: np.ndarray, b: np.ndarray, magnitude: np.ndarray,
                      scale: float) -> np.ndarray:
    """DoRA's y − Wx for y = m/‖W + s·BA‖_row · (Wx + s·BAx)."""
    norm = np.linalg.norm(w + scale * (b @ a), axis=1)
    ratio = magnitude.reshape(-1) / norm
    return (ratio - 1) * (x @ w.T) + ratio * contribution(x, a, b, scale)


def expert_delta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Stacked expert factors a (E, r, in), b (E, out, r) → (E, out, in) unscaled deltas."""
    return np.matmul(b.astype(np.float32), a.astype(np.float32))
