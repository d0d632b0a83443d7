"""A streaming GGUF v3 writer: header, metadata and tensor infos first, then each tensor as it is produced.

Sizes and offsets follow from the plan's shapes and types, so the header is complete before any tensor data is
read; each tensor is produced, encoded, written and released in turn, and peak memory is one tensor.
"""

from __future__ import annotations

import itertools
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

from lorapack.errors import LorapackError
from lorapack.spec.plan import KV, Plan, PlannedTensor
from lorapack.spec.types import encode, nbytes

_SCALAR = {
    VT.UINT8: "<B", VT.INT8: "<b", VT.UINT16: "<H", VT.INT16: "<h", VT.UINT32: "<I", VT.INT32: "<i",
    VT.FLOAT32: "<f", VT.BOOL: "<?", VT.UINT64: "<Q", VT.INT64: "<q", VT.FLOAT64: "<d",
}
_NUMPY = {VT.INT32: "<i4", VT.UINT32: "<u4", VT.FLOAT32: "<f4", VT.INT64: "<i8", VT.UINT64: "<u8",
          VT.UINT8: "u1", VT.INT8: "i1", VT.BOOL: "?"}
ALIGN = GGUF_DEFAULT_ALIGNMENT
_U64 = struct.Struct("<Q")
_F32_MAX = float(np.finfo(np.float32).max)


def _str(s: str | bytes) -> bytes:
    b = s.encode("utf-8") if isinstance(s, str) else bytes(s)
    return struct.pack("<Q", len(b)) + b


def _value(vtype: VT, value, sub: VT | None) -> bytes:
    if vtype == VT.STRING:
        return _str(value)
    if vtype == VT.ARRAY:
        head = struct.pack("<IQ", int(sub), len(value))
        if sub == VT.STRING:  # hundreds of thousands of tokens/merges: keep the loop in C
            enc = [s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in value]
            lens = map(_U64.pack, map(len, enc))
            return head + b"".join(itertools.chain.from_iterable(zip(lens, enc)))
        return head + np.asarray(value, dtype=_NUMPY[sub]).tobytes()
    if vtype == VT.FLOAT32 and not abs(value) <= _F32_MAX:  # struct packs inf silently, refuses only overflow
        raise OverflowError("not a finite float32")
    return struct.pack(_SCALAR[vtype], value)


def encode_kv(kv: KV) -> bytes:
    if kv.raw is not None:
        return _str(kv.key) + kv.raw
    try:
        with np.errstate(over="raise", invalid="raise"):
            return _str(kv.key) + struct.pack("<I", int(kv.vtype)) + _value(kv.vtype, kv.value, kv.sub_type)
    except (struct.error, OverflowError, FloatingPointError, ValueError, TypeError) as e:
        # a value from a config that the key's type cannot hold (rope_theta 1e300 as float32, a count past 2^32)
        raise LorapackError(f"metadata {kv.key}: {str(kv.value)[:40]} does not fit {kv.vtype.name}"
                            f"{'[' + kv.sub_type.name + ']' if kv.sub_type is not None else ''} ({e})") from None


def _pad(n: int) -> int:
    return (ALIGN - n % ALIGN) % ALIGN


def layout(tensors: list[PlannedTensor]) -> list[tuple[PlannedTensor, int, int]]:
    """(tensor, offset in the data section, byte size) for each tensor."""
    out, offset = [], 0
    for t in tensors:
        size = nbytes(t.shape, t.qtype)
        out.append((t, offset, size))
        offset += size + _pad(size)
    return out


def write_plan(path: Path, plan: Plan, progress: Callable[[int], None] | None = None) -> None:
    """Write `plan` to `path` (the caller handles temporary names and renaming)."""
    placed = layout(plan.tensors)
    names = [t.name for t in plan.tensors]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise LorapackError(f"duplicate tensor names in plan: {', '.join(dup[:5])}")
    with open(path, "wb") as f, ThreadPoolExecutor(max_workers=1) as ahead:
        _write_header(f, plan, placed)
        # produce the next tensor while this one is written: reading and converting overlap the writes
        pending = _prefetch(ahead, placed[0][0]) if placed else None
        for i, (t, _, size) in enumerate(placed):
            current = pending
            pending = _prefetch(ahead, placed[i + 1][0]) if i + 1 < len(placed) else None
            _write_tensor(f, t, size, current.result() if current is not None else None)
            if progress:
                progress(size)


def _prefetch(pool: ThreadPoolExecutor, t: PlannedTensor) -> Future | None:
    """Whole tensors are produced ahead; chunked (huge) ones stream in place to keep memory flat."""
    return pool.submit(t.produce) if t.chunks is None else None


def _write_header(f: BinaryIO, plan: Plan, placed) -> None:
    parts = [struct.pack("<IIQQ", GGUF_MAGIC, GGUF_VERSION, len(placed), len(plan.kv))]
    parts += [encode_kv(kv) for kv in plan.kv.values()]
    for t, offset, _ in placed:
        ne = list(reversed(t.shape))  # GGUF stores ggml's ne order: fastest-moving dimension first
        parts.append(_str(t.name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, int(t.qtype), offset))
    header = b"".join(parts)
    f.write(header + b"\0" * _pad(len(header)))


def _write_tensor(f: BinaryIO, t: PlannedTensor, size: int, values: np.ndarray | None = None) -> None:
    """Encode and write one tensor; block types are row-local, so row blocks encode independently."""
    if t.chunks is not None:
        pieces = t.chunks()
    else:
        values = t.produce() if values is None else values
        if not t.encoded and tuple(values.shape) != tuple(t.shape):
            raise LorapackError(f"{t.name}: produced shape {values.shape} but planned {t.shape}")
        pieces = iter([values])
    written = 0
    for values in pieces:
        data = np.ascontiguousarray(values if t.encoded else encode(values, t.qtype))
        if t.check_finite and not finite(data, t.qtype):
            raise LorapackError(f"{t.name} (from {t.source}): values are not finite once stored as {t.qtype.name} "
                                "(NaN or infinity in the source, or too large for the type)",
                                hint="check the checkpoint and adapter; --outtype f32 or bf16 holds larger values")
        f.write(memoryview(data).cast("B"))
        written += data.nbytes
    if written != size:
        raise LorapackError(f"{t.name}: encoded {written} bytes, expected {size}")
    f.write(b"\0" * _pad(size))


_SCALE_FIRST = (QT.Q8_0, QT.Q4_0, QT.Q5_0)  # each block starts with its f16 scale d


def finite(data: np.ndarray, qtype: QT) -> bool:
    """Whether stored values (or, for block types, every block's scale) are finite."""
    raw = data.reshape(-1).view(np.uint8)
    if qtype == QT.F32:
        return bool(np.isfinite(raw.view(np.float32)).all())
    if qtype == QT.F16:  # exponent all ones: inf or NaN (a mask is ~1.5x faster than isfinite)
        return not bool(((raw.view(np.uint16) & 0x7C00) == 0x7C00).any())
    if qtype == QT.BF16:  # exponent all ones: inf or NaN
        return not bool(((raw.view(np.uint16) & 0x7F80) == 0x7F80).any())
    if qtype in _SCALE_FIRST:
        size = GGML_QUANT_SIZES[qtype][1]
        return bool(np.isfinite(raw.reshape(-1, size)[:, :2].copy().view(np.float16)).all())
    return True


def total_bytes(plans: Iterable[Plan]) -> int:
    return sum(nbytes(t.shape, t.qtype) for p in plans for t in p.tensors)
