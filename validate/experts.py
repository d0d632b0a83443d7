"""Expert LoRA (PEFT target_parameters) checked against PEFT: kinds.EXPERT_STACK and the spec's row splits undone
here, on their own, and each expert's ΔW compared with the one PEFT's ParamWrapper computes for its forward."""

from __future__ import annotations

import numpy as np

from lorapack.formats.peft_config import wrapper_owner


def wrappers(layers: dict) -> dict[tuple[str, str], object]:
    """(owner module, parameter name) → PEFT ParamWrapper, for the adapter's layers (nested ones included)."""
    out = {}
    for module, layer in layers.items():
        if (param := getattr(layer, "parameter_name", None)) is not None:
            out[(wrapper_owner(module), param)] = (module, layer)
    return out


def target(names, stem: str) -> tuple[str, str, int, int, str] | None:
    """A stacked GGUF tensor's stem → (owner module, parameter, part index, parts, per-expert piece) in the
    model's own names (of `names.present`); None if it is no expert stack."""
    if names.table is None or "_exps." not in stem + ".":
        return None
    for hf in names.table.hf_names(stem.removesuffix(".weight")):
        owner, _, piece = hf.rpartition(".")
        param, index, n = piece, 0, 1
        for fused, pieces in names.spec.splits.items():
            split = [p.rpartition(".")[2] for p in pieces]
            if owner.endswith(fused.rpartition(".")[0]) and piece in split:
                param, index, n = fused.rpartition(".")[2], split.index(piece), len(split)
        known = (owner, f"{owner}.{param}", f"{owner}.0.{piece}.weight")
        if any(k in names.present for k in known):
            return owner, param, index, n, piece
    return None


def stacked_pair(a: np.ndarray, b: np.ndarray) -> bool:
    """Stored expert factors of the shapes llama.cpp's build_lora_mm_id reads: (E, r, in) and (E, out, r)."""
    return a.ndim == 3 and b.ndim == 3 and a.shape[0] == b.shape[0] and a.shape[1] == b.shape[2]


def undo_stack(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Stored (E, r, in) and (E, out, r) → the unscaled per-expert ΔW (E, out, in)."""
    return np.einsum("eor,eri->eoi", b, a)


def compare(parts: list[tuple[int, np.ndarray, np.ndarray, float]], want: np.ndarray) -> tuple[float, float]:
    """The parts (index, a, b, scale) stacked back along the rows of each expert, against PEFT's ΔW."""
    got = np.concatenate([undo_stack(a, b) * scale for _, a, b, scale in sorted(parts, key=lambda p: p[0])], axis=1)
    if got.shape != want.shape:
        return float("inf"), float("inf")
    diff = got.astype(np.float64) - want
    denom = float(np.linalg.norm(want))
    return float(np.linalg.norm(diff)) / denom if denom else float("inf"), float(np.max(np.abs(diff)))


def source_names(part: tuple, n_experts: int) -> list[str]:
    """The checkpoint's per-expert tensors one stack comes from, in expert order."""
    owner, piece = part[0], part[4]
    return [f"{owner}.{x}.{piece}.weight" for x in range(n_experts)]
