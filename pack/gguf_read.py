"""A small GGUF reader: metadata with each value's raw bytes kept (so files can be re-written byte for byte),
tensor infos, and positioned reads of tensor data. Large string arrays are decoded only when asked for."""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

from lorapack.errors import LorapackError

_SIZES = {VT.UINT8: 1, VT.INT8: 1, VT.UINT16: 2, VT.INT16: 2, VT.UINT32: 4, VT.INT32: 4, VT.FLOAT32: 4,
          VT.BOOL: 1, VT.UINT64: 8, VT.INT64: 8, VT.FLOAT64: 8}
_FMT = {VT.UINT8: "<B", VT.INT8: "<b", VT.UINT16: "<H", VT.INT16: "<h", VT.UINT32: "<I", VT.INT32: "<i",
        VT.FLOAT32: "<f", VT.BOOL: "<?", VT.UINT64: "<Q", VT.INT64: "<q", VT.FLOAT64: "<d"}
_NP = {VT.UINT8: "u1", VT.INT8: "i1", VT.UINT16: "<u2", VT.INT16: "<i2", VT.UINT32: "<u4", VT.INT32: "<i4",
       VT.FLOAT32: "<f4", VT.BOOL: "?", VT.UINT64: "<u8", VT.INT64: "<i8", VT.FLOAT64: "<f8"}


_U64 = struct.Struct("<Q")


class CorruptGGUF(LorapackError):
    pass


@dataclass
class Field:
    key: str
    vtype: VT
    sub_type: VT | None
    raw: bytes  # type tag and value, exactly as stored
    count: int = 1

    @property
    def value(self):
        return _decode(self.vtype, self.sub_type, self.raw[4:])


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order
    qtype: QT
    offset: int  # absolute file offset
    nbytes: int


@dataclass
class GGUFFile:
    path: Path
    fields: dict[str, Field] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)

    def get(self, key: str, default=None):
        f = self.fields.get(key)
        return default if f is None else f.value

    def read(self, t: TensorInfo) -> np.ndarray:
        """The tensor's stored bytes (F32/F16 as their float dtype, others as uint8)."""
        with open(self.path, "rb") as fh:
            buf = os.pread(fh.fileno(), t.nbytes, t.offset)
        if len(buf) != t.nbytes:
            raise CorruptGGUF(f"{self.path.name}: tensor {t.name} is truncated")
        if t.qtype == QT.F32:
            return np.frombuffer(buf, "<f4").reshape(t.shape)
        if t.qtype == QT.F16:
            return np.frombuffer(buf, "<f2").reshape(t.shape)
        return np.frombuffer(buf, np.uint8)


class _Cursor:
    def __init__(self, data: bytes | memoryview):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise CorruptGGUF("file ends inside its header (truncated?)")
        b = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return b

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def string(self) -> str:
        (n,) = self.unpack("<Q")
        return self.take(n).decode("utf-8", errors="replace")

    def skip_value(self, vtype: VT) -> int:
        """Advance over one value; returns the element count (1 for scalars)."""
        if vtype == VT.STRING:
            (n,) = self.unpack("<Q")
            self.take(n)
            return 1
        if vtype == VT.ARRAY:
            sub, count = self.unpack("<IQ")
            sub = _vt(sub)
            if sub == VT.STRING:  # hundreds of thousands of tokens: a tight loop, no copies
                pos, data, u64 = self.pos, self.data, _U64.unpack_from
                for _ in range(count):
                    pos += 8 + u64(data, pos)[0]
                self.pos = pos
                if self.pos > len(self.data):
                    raise CorruptGGUF("file ends inside its header (truncated?)")
            elif sub == VT.ARRAY:
                raise CorruptGGUF("nested arrays are not supported")
            else:
                self.take(_SIZES[sub] * count)
            return count
        self.take(_SIZES[vtype])
        return 1


def _vt(n: int) -> VT:
    try:
        return VT(n)
    except ValueError:
        raise CorruptGGUF(f"unknown metadata value type {n}") from None


def _decode(vtype: VT, sub: VT | None, b: bytes):
    c = _Cursor(b)
    if vtype == VT.STRING:
        return c.string()
    if vtype == VT.ARRAY:
        _, count = c.unpack("<IQ")
        if sub == VT.STRING:
            return [c.string() for _ in range(count)]
        return np.frombuffer(c.take(_SIZES[sub] * count), _NP[sub]).tolist()
    return c.unpack(_FMT[vtype])[0]


def read_gguf(path: Path) -> GGUFFile:
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise CorruptGGUF(f"{path.name} is empty")
    with open(path, "rb") as fh:  # a map: only the header's pages are touched
        data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    c = _Cursor(data)
    try:
        magic, version, n_tensors, n_kv = c.unpack("<IIQQ")
    except CorruptGGUF:
        raise CorruptGGUF(f"{path.name} is not a GGUF file (too short)") from None
    if magic != GGUF_MAGIC:
        raise CorruptGGUF(f"{path.name} is not a GGUF file (bad magic)")
    if version not in (2, 3):
        raise CorruptGGUF(f"{path.name}: unsupported GGUF version {version}")
    out = GGUFFile(path)
    try:
        _read_body(c, out, n_tensors, n_kv, size)
    except CorruptGGUF as e:
        raise CorruptGGUF(f"{path.name}: {e}") from None
    return out


def _read_body(c: _Cursor, out: GGUFFile, n_tensors: int, n_kv: int, size: int) -> None:
    for _ in range(n_kv):
        key = c.string()
        start = c.pos
        (vt,) = c.unpack("<I")
        vtype = _vt(vt)
        sub = _vt(struct.unpack("<I", c.data[c.pos:c.pos + 4])[0]) if vtype == VT.ARRAY else None
        count = c.skip_value(vtype)
        out.fields[key] = Field(key, vtype, sub, bytes(c.data[start:c.pos]), count)
    infos = []
    for _ in range(n_tensors):
        name = c.string()
        (n_dims,) = c.unpack("<I")
        ne = c.unpack(f"<{n_dims}Q")
        (qt, offset) = c.unpack("<IQ")
        try:
            qtype = QT(qt)
        except ValueError:
            raise CorruptGGUF(f"tensor {name} has unknown type {qt}") from None
        infos.append((name, tuple(reversed(ne)), qtype, offset))
    align = out.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    data_start = c.pos + (align - c.pos % align) % align
    for name, shape, qtype, offset in infos:
        block, bsize = GGML_QUANT_SIZES[qtype]
        nbytes = int(np.prod(shape, dtype=np.int64)) // block * bsize
        if data_start + offset + nbytes > size:
            raise CorruptGGUF(f"tensor {name} runs past the end of the file (truncated?)")
        out.tensors.append(TensorInfo(name, shape, qtype, data_start + offset, nbytes))
