"""Safetensors without torch: parse the JSON header, read one tensor at a time with a positioned read.

A positioned read (os.pread) copies only the tensor asked for and leaves nothing mapped, so memory stays flat
however large the checkpoint is.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lorapack.errors import CheckpointError

# safetensors dtype → numpy dtype used to hold the raw bytes; BF16 is kept as uint16 bits.
_DTYPES = {
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes sit: file, absolute offset, dtype name and shape (numpy order)."""

    path: Path
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    def read_raw(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of the stored values, with BF16 as uint16 bit patterns."""
        rows = self.shape[0] if self.shape else 1
        stop = rows if stop is None else min(stop, rows)
        row_bytes = self.nbytes // rows if rows else 0
        n = (stop - start) * row_bytes
        with open(self.path, "rb") as f:
            buf = os.pread(f.fileno(), n, self.offset + start * row_bytes)
        if len(buf) != n:
            raise CheckpointError(f"{self.path.name}: tensor {self.name} is truncated")
        shape = (stop - start, *self.shape[1:]) if self.shape else ()
        return np.frombuffer(buf, dtype=_DTYPES[self.dtype]).reshape(shape)

    def read_f32(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) as float32 (exact for F16/BF16/F32 sources)."""
        return to_f32(self.read_raw(start, stop), self.dtype)

    def row_chunks(self, max_bytes: int = 16 << 20) -> list[tuple[int, int]]:
        """Row ranges of about `max_bytes` each, so huge tensors (embeddings) stream in pieces."""
        rows = self.shape[0] if self.shape else 1
        step = max(1, max_bytes // max(1, self.nbytes // max(rows, 1)))
        return [(i, min(i + step, rows)) for i in range(0, rows, step)]


def to_f32(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BF16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    return raw.astype(np.float32, copy=False)


def read_header(path: Path) -> dict[str, TensorRef]:
    """Index a .safetensors file in header order; raises CheckpointError on anything malformed."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path.name} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or n > _MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path.name} is not a safetensors file (bad header length {n})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path.name}: corrupt safetensors header ({e})") from None
    base = 8 + n
    refs: dict[str, TensorRef] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        refs[name] = _make_ref(path, name, info, base, size)
    return refs


def _make_ref(path: Path, name: str, info: dict, base: int, size: int) -> TensorRef:
    try:
        dtype, shape, (start, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
    except (KeyError, TypeError, ValueError):
        raise CheckpointError(f"{path.name}: malformed header entry for {name}") from None
    if dtype not in _DTYPES:
        raise CheckpointError(f"{path.name}: tensor {name} has unsupported dtype {dtype}")
    nbytes = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize
    if end - start != nbytes or base + end > size or start < 0:
        raise CheckpointError(f"{path.name}: tensor {name} has inconsistent offsets (file truncated?)")
    return TensorRef(path, name, dtype, shape, base + start, nbytes)


def read_metadata(path: Path) -> dict[str, str]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n)).get("__metadata__") or {}
