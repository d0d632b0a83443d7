"""Block quantization through ggml's own C quantizer, when llama-cpp-python is installed.

`ggml_quantize_chunk` in the libggml-base.so llama-cpp-python ships (an exported symbol the Python package does
not bind) writes the same bytes as gguf-py's numpy quantizers for Q8_0, Q4_0 and Q5_0, at C speed, and releases
the GIL, so row blocks quantize on every core. Without llama-cpp-python, callers keep gguf-py's path.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as QT

FAST = (QT.Q8_0, QT.Q4_0, QT.Q5_0)  # the types whose bytes equal gguf-py's (tests/test_ggml_quant.py)


@functools.cache
def _quantize_chunk():
    """The bound C function, or None when llama-cpp-python (or the symbol) is absent. Found without importing
    llama_cpp (which would load libllama)."""
    if os.environ.get("LORAPACK_NO_GGML"):
        return None
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "lib" / "libggml-base.so"
        if path.is_file():
            break
    else:
        return None
    try:
        lib = ctypes.CDLL(str(path))
        fn = lib.ggml_quantize_chunk
    except (OSError, AttributeError):
        return None
    # size_t ggml_quantize_chunk(enum ggml_type, const float * src, void * dst, int64_t start, int64_t nrows,
    #                            int64_t n_per_row, const float * imatrix)
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                   ctypes.c_void_p]
    fn.restype = ctypes.c_size_t
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    for qtype in FAST:
        lib.ggml_quantize_init(int(qtype))
    return fn


def available() -> bool:
    return _quantize_chunk() is not None


_POOL: ThreadPoolExecutor | None = None


def quantize(values: np.ndarray, qtype: QT) -> np.ndarray | None:
    """values (..., n) float → the stored bytes, shaped (..., n // block · type size) as gguf-py returns them;
    None when the fast path does not apply (then use gguf-py)."""
    fn = _quantize_chunk()
    if fn is None or qtype not in FAST or values.ndim == 0:
        return None
    block, size = GGML_QUANT_SIZES[qtype]
    n = values.shape[-1]
    if n % block:
        return None
    src = np.ascontiguousarray(values, dtype=np.float32).reshape(-1, n)
    rows = src.shape[0]
    dst = np.empty((rows, n // block * size), dtype=np.uint8)
    row_bytes = dst.shape[1]

    def run(start: int, stop: int) -> None:
        if stop > start:
            # ggml indexes src and dst from `start` (in elements); pass the whole buffers
            fn(int(qtype), src.ctypes.data, dst.ctypes.data, start * n, stop - start, n, None)

    global _POOL
    workers = min(os.cpu_count() or 1, max(1, rows * n // (1 << 20)))
    if workers == 1:
        run(0, rows)
    else:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=os.cpu_count() or 1)
        bounds = np.linspace(0, rows, workers + 1, dtype=np.int64)
        list(_POOL.map(lambda i: run(int(bounds[i]), int(bounds[i + 1])), range(workers)))
    if qtype in (QT.Q4_0, QT.Q5_0):
        _zero_block_sign(src, dst, block, size)
    return dst.reshape(*values.shape[:-1], row_bytes)


def _zero_block_sign(src: np.ndarray, dst: np.ndarray, block: int, size: int) -> None:
    """A block of zeros gets scale d = max / -8 (-16 for Q5_0), max its value of largest magnitude: ggml starts
    from +0.0 and writes d = -0.0; gguf-py takes the block's first value, so a block starting with -0.0 gets
    d = +0.0. Both decode to zeros; llama.cpp's converter writes gguf-py's bytes, so match them."""
    blocks = dst.reshape(dst.shape[0], -1, size)
    d = blocks[:, :, :2].view(np.uint16)[..., 0]
    rows, cols = np.nonzero(d == 0x8000)  # -0.0: blocks of zeros, or of values too small for f16
    if rows.size:
        values = src.reshape(src.shape[0], -1, block)[rows, cols]
        flip = np.all(values == 0, axis=-1) & np.signbit(values[:, 0])
        blocks[rows[flip], cols[flip], 0:2] = 0
