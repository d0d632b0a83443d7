"""Output types: which GGML type each tensor is stored as, and encoding values into those bytes.

The rules follow llama.cpp's converter: 1-D tensors, norms and non-weight tensors (biases) stay F32; a block
type falls back to F16 when a row does not split into whole blocks.
"""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, LlamaFileType
from gguf import GGMLQuantizationType as QT
from gguf import quants

from lorapack.errors import LorapackError

OUTTYPES: dict[str, tuple[QT, LlamaFileType]] = {
    "f32": (QT.F32, LlamaFileType.ALL_F32),
    "f16": (QT.F16, LlamaFileType.MOSTLY_F16),
    "bf16": (QT.BF16, LlamaFileType.MOSTLY_BF16),
    "q8_0": (QT.Q8_0, LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (QT.Q4_0, LlamaFileType.MOSTLY_Q4_0),
    "q5_0": (QT.Q5_0, LlamaFileType.MOSTLY_Q5_0),
}
ADAPTER_OUTTYPES = ("f32", "f16", "bf16", "q8_0")


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
        return np.ascontiguousarray(values, dtype=np.float16)
    return quants.quantize(np.ascontiguousarray(values), qtype)
