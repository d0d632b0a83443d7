"""Output types: which GGML type each tensor is stored as, and encoding values into those bytes.

The rules follow llama.cpp's converter: 1-D tensors, norms and non-weight tensors (biases) stay F32; a block
type falls back to F16 when a row does not split into whole blocks.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings

import numpy as np
from gguf import GGML_QUANT_SIZES, LlamaFileType, quants
from gguf import GGMLQuantizationType as QT

from lorapack.errors import LorapackError

from . import ggml_quant

OUTTYPES: dict[str, tuple[QT, LlamaFileType]] = {
    "f32": (QT.F32, LlamaFileType.ALL_F32),
    "f16": (QT.F16, LlamaFileType.MOSTLY_F16),
    "bf16": (QT.BF16, LlamaFileType.MOSTLY_BF16),
    "q8_0": (QT.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (QT.Q4_0, LlamaFileType.MOSTLY_Q4_0),
    "q5_0": (QT.Q5_0, LlamaFileType.MOSTLY_Q5_0),
}
ADAPTER_OUTTYPES = ("f32", "f16", "bf16", "q8_0")


# tensors llama.cpp's converter keeps in F32 whatever the file type (its tensor_force_quant list, by GGUF name)
ALWAYS_F32 = frozenset({"ffn_gate_inp", "ffn_gate_inp_shexp", "position_embd", "token_types", "ssm_conv1d",
                        "shortconv.conv", "time_mix_first", "time_mix_w1", "time_mix_w2", "time_mix_decay_w1",
                        "time_mix_decay_w2", "time_mix_lerp_fused", "altup_correct_coef", "altup_predict_coef"})


def parse_outtype(name: str, allowed=tuple(OUTTYPES)) -> QT:
    if name not in allowed:
        raise LorapackError(f"unknown output type {name!r}", hint=f"choose one of {', '.join(allowed)}")
    return OUTTYPES[name][0]


def file_type(qtype: QT) -> LlamaFileType:
    return next(ft for qt, ft in OUTTYPES.values() if qt == qtype)


def stored_type(name: str, shape: tuple[int, ...], wanted: QT) -> QT:
    """The type llama.cpp's converter would store tensor `name` (GGUF name) as, for file type `wanted`."""
    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return QT.F32
    if name.endswith(".weight") and name.split(".")[-2] in ALWAYS_F32:
        return QT.F32
    if not name.endswith((".weight", ".lora_a", ".lora_b")):
        return QT.F32
    block = GGML_QUANT_SIZES[wanted][0]
    if shape[-1] % block != 0:
        return QT.F16  # llama.cpp: "falling back to F16"
    return wanted


def nbytes(shape: tuple[int, ...], qtype: QT) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    n = int(np.prod(shape, dtype=np.int64))
    return n // block * size


def encode(values: np.ndarray, qtype: QT) -> np.ndarray:
    """Values (float32 or float16) → the stored bytes' array, exactly as gguf-py's quantizers produce them."""
    if qtype == QT.F32:
        return np.ascontiguousarray(values, dtype=np.float32)
    if qtype == QT.F16:
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused by the writer, by name
            return np.ascontiguousarray(values, dtype=np.float16)
    if (fast := ggml_quant.quantize(values, qtype)) is not None:  # ggml's C quantizer: the same bytes, faster
        return fast
    return quants.quantize(np.ascontiguousarray(values), qtype)


@functools.cache
def _bf16_table(qtype: QT) -> np.ndarray:
    """bf16 bits → stored bits for every one of the 65536 bf16 values, computed by the exact float path
    (bf16 → f32 → qtype) once; a lookup then converts a whole tensor bit-identically and ~15x faster."""
    f32 = (np.arange(65536, dtype=np.uint32) << 16).view(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        return encode(f32, qtype).view(np.uint16)


def direct_encoder(src_dtype: str, qtype: QT):
    """A function raw source values → stored values, when the conversion needs no arithmetic; else None."""
    if src_dtype == "BF16" and qtype == QT.F16:
        return _bf16_to_f16
    if src_dtype == "BF16" and qtype == QT.BF16:
        table = _bf16_table(qtype)
        return lambda raw: _lookup(table, raw)
    if (src_dtype, qtype) in (("F16", QT.F16), ("F32", QT.F32)):
        return lambda raw: raw
    return None


def _bf16_to_f16(raw: np.ndarray) -> np.ndarray:
    """bf16 bits → f16 values, bit for bit what bf16 → f32 → f16 (numpy, round to nearest even) gives for
    every finite value (tests/test_ggml_quant.py checks all 65536; a non-finite result is refused by the writer
    either way). Large blocks go through torch's vectorised, threaded cast: ~4x faster than the lookup."""
    if raw.size >= (1 << 20) and (torch := lazy_torch()) is not None:
        out = np.empty(raw.shape, np.float16)
        torch.from_numpy(out).copy_(torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16))
        return out
    return _lookup(_bf16_table(QT.F16), raw).view(np.float16)


@functools.cache
def lazy_torch():
    """torch, imported the first time a large tensor needs it (a small build never pays for the import)."""
    try:
        import torch
    except ImportError:
        return None
    # raw blocks are read-only views of the bytes read, which torch only reads (set once: catch_warnings is
    # not thread-safe, and two producers convert at once)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
    return torch


def loaded_torch():
    """torch if something has imported it already (the validator's reference does), else None: a path that
    merely benefits from it never pays for the import."""
    return lazy_torch() if "torch" in sys.modules else None


_POOL = None


def _lookup(table: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """table[raw], split across the cores for large tensors (numpy's take releases the GIL)."""
    global _POOL
    flat, out = raw.reshape(-1), np.empty(raw.shape, dtype=table.dtype)
    n, workers = flat.size, os.cpu_count() or 1
    if n < (1 << 20) or workers == 1:
        np.take(table, flat, out=out.reshape(-1))
        return out
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=workers)
    bounds = np.linspace(0, n, workers + 1, dtype=np.int64)
    dest = out.reshape(-1)
    list(_POOL.map(lambda i: np.take(table, flat[bounds[i]:bounds[i + 1]], out=dest[bounds[i]:bounds[i + 1]]),
                   range(workers)))
    return out
