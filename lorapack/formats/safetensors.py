"""Safetensors without torch: a bounded header parse, then one tensor at a time with a positioned read.

The header is checked as strictly as the safetensors library checks it (every entry well typed, offsets
contiguous and covering the data exactly, no duplicate names), so build and validate accept the same files.
A positioned read (os.pread) copies only the tensor asked for and leaves nothing mapped: memory stays flat
however large the checkpoint is.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lorapack.errors import CheckpointError

from .jsonfile import parse_json, regular_file

# safetensors dtype → numpy dtype used to hold the raw bytes; BF16 is kept as uint16 bits.
DTYPES = {
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
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
MAX_HEADER = 100 * 1024 * 1024  # the safetensors library's own limit
MAX_DIMS = 8


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes sit: file, absolute offset, dtype name and shape (numpy order)."""

    path: Path
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    def _rows(self, start: int, stop: int | None) -> tuple[int, int]:
        stop = self.rows if stop is None else min(stop, self.rows)
        return max(0, min(start, stop)), stop

    def read_bytes(self, start: int = 0, stop: int | None = None) -> bytes:
        """Rows [start, stop) as stored, one positioned read."""
        start, stop = self._rows(start, stop)
        row_bytes = self.nbytes // self.rows if self.rows else 0
        n = (stop - start) * row_bytes
        with open(self.path, "rb") as f:
            buf = os.pread(f.fileno(), n, self.offset + start * row_bytes)
        if len(buf) != n:
            raise CheckpointError(f"{self.path.name}: tensor {self.name} is truncated (the file changed?)")
        return buf

    def read_raw(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) of the stored values, with BF16 as uint16 bit patterns."""
        start, stop = self._rows(start, stop)
        shape = (stop - start, *self.shape[1:]) if self.shape else ()
        return np.frombuffer(self.read_bytes(start, stop), dtype=DTYPES[self.dtype]).reshape(shape)

    def read_f32(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows [start, stop) as float32 (exact for F16/BF16/F32 sources)."""
        return to_f32(self.read_raw(start, stop), self.dtype)

    def rows_per(self, max_bytes: int) -> int:
        """How many rows fit in max_bytes (at least one)."""
        return max(1, max_bytes // max(1, self.nbytes // max(self.rows, 1)))

    def row_chunks(self, max_bytes: int = 8 << 20) -> list[tuple[int, int]]:
        """Row ranges of about `max_bytes` each, so huge tensors (embeddings) stream in pieces."""
        rows, step = self.rows, self.rows_per(max_bytes)
        return [(i, min(i + step, rows)) for i in range(0, rows, step)]


def to_f32(raw: np.ndarray, dtype: str, out: np.ndarray | None = None) -> np.ndarray:
    """Stored values as float32 (exact for F16/BF16/F32); into `out` (float32, same shape) when given."""
    if dtype == "BF16":
        from lorapack.spec.types import loaded_torch

        if raw.size >= (1 << 20) and (torch := loaded_torch()) is not None:  # vectorised: ~20% faster
            out = np.empty(raw.shape, np.float32) if out is None else out
            torch.from_numpy(out).copy_(torch.from_numpy(raw.view(np.int16)).view(torch.bfloat16))
            return out
        # one pass, widening as it shifts (astype then << is two passes and ~10x slower)
        bits = out.view(np.uint32) if out is not None else None
        return np.left_shift(raw, 16, dtype=np.uint32, out=bits).view(np.float32)
    if out is not None:
        np.copyto(out, raw, casting="unsafe")
        return out
    return raw.astype(np.float32, copy=False)


@dataclass
class SafetensorsFile:
    path: Path
    tensors: dict[str, TensorRef]  # header order
    metadata: dict[str, str]


def read_safetensors(path: Path) -> SafetensorsFile:
    """Index a .safetensors file; raises CheckpointError naming the file and the field on anything malformed."""
    path = Path(path)
    size = regular_file(path, CheckpointError).st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path.name} is not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n < 2 or n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path.name} is not a safetensors file (header length {n}, file {size} bytes)")
        text = f.read(n)
    header = parse_json(text, path, CheckpointError, "safetensors header")
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name}: the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{path.name}: __metadata__ is not a map of strings")
    base, data_size = 8 + n, size - 8 - n
    tensors = {name: _ref(path, name, info, base, data_size) for name, info in header.items()}
    _check_coverage(path, tensors, base, data_size)
    return SafetensorsFile(path, tensors, metadata)


def read_header(path: Path) -> dict[str, TensorRef]:
    return read_safetensors(path).tensors


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _ref(path: Path, name: str, info, base: int, data_size: int) -> TensorRef:
    where = f"{path.name}: tensor {name}"
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        raise CheckpointError(f"{where}: header entry must hold exactly dtype, shape and data_offsets")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckpointError(f"{where}: unsupported dtype {str(dtype)[:20]}",
                              hint=f"supported: {', '.join(DTYPES)}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_int(d) and d >= 0 for d in shape):
        raise CheckpointError(f"{where}: shape {str(shape)[:60]} is not a list of at most {MAX_DIMS} "
                              "non-negative integers")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(_int(o) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= data_size):
        raise CheckpointError(f"{where}: data_offsets {str(offsets)[:60]} are not two ordered integers within "
                              f"the file's {data_size} data bytes (truncated?)")
    nbytes = int(np.prod(shape, dtype=object)) * DTYPES[dtype].itemsize  # Python ints: no overflow
    if offsets[1] - offsets[0] != nbytes:
        raise CheckpointError(f"{where}: data_offsets span {offsets[1] - offsets[0]} bytes but dtype and shape "
                              f"need {nbytes}")
    return TensorRef(path, name, dtype, tuple(shape), base + offsets[0], nbytes)


def _check_coverage(path: Path, tensors: dict[str, TensorRef], base: int, data_size: int) -> None:
    """As the safetensors library requires: tensors tile the data section with no overlap and no gap."""
    expected = base
    for ref in sorted(tensors.values(), key=lambda r: (r.offset, r.nbytes)):
        if ref.offset != expected:
            what = "overlaps the previous tensor" if ref.offset < expected else "leaves a gap before it"
            raise CheckpointError(f"{path.name}: tensor {ref.name} {what} (data_offsets do not tile the file)")
        expected += ref.nbytes
    if expected != base + data_size:
        raise CheckpointError(f"{path.name}: {base + data_size - expected} bytes after the last tensor "
                              "(not a safetensors file, or corrupt)")
