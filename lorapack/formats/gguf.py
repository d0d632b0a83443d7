"""A defensive GGUF reader: metadata with each value's raw bytes kept (so files can be re-written byte for
byte), tensor infos, and positioned reads of tensor data.

Checked as llama.cpp's loader (gguf.cpp) checks: counts bounded by the file's size, known value and tensor types,
at most 4 dimensions, rows that split into whole blocks, no duplicate keys or tensor names, a power-of-two
alignment, and tensors laid out in order, aligned and within the file. Large string arrays are skipped with a
tight loop and decoded only when asked for.

A split GGUF (llama.cpp's `NAME-00001-of-0000N.gguf` files, `split.*` keys) opens as one file through
`read_model`: the first shard's metadata, every shard's tensors, each read from its own file.
"""

from __future__ import annotations

import glob
import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

from lorapack.errors import LorapackError
from lorapack.names import valid_name

from .jsonfile import regular_file

_SIZES = {VT.UINT8: 1, VT.INT8: 1, VT.UINT16: 2, VT.INT16: 2, VT.UINT32: 4, VT.INT32: 4, VT.FLOAT32: 4,
          VT.BOOL: 1, VT.UINT64: 8, VT.INT64: 8, VT.FLOAT64: 8}
_FMT = {VT.UINT8: "<B", VT.INT8: "<b", VT.UINT16: "<H", VT.INT16: "<h", VT.UINT32: "<I", VT.INT32: "<i",
        VT.FLOAT32: "<f", VT.BOOL: "<?", VT.UINT64: "<Q", VT.INT64: "<q", VT.FLOAT64: "<d"}
_NP = {VT.UINT8: "u1", VT.INT8: "i1", VT.UINT16: "<u2", VT.INT16: "<i2", VT.UINT32: "<u4", VT.INT32: "<i4",
       VT.FLOAT32: "<f4", VT.BOOL: "?", VT.UINT64: "<u8", VT.INT64: "<i8", VT.FLOAT64: "<f8"}
_INTS = (VT.UINT8, VT.INT8, VT.UINT16, VT.INT16, VT.UINT32, VT.INT32, VT.UINT64, VT.INT64)
_FLOATS = (VT.FLOAT32, VT.FLOAT64)
_U64 = struct.Struct("<Q")
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_STRINGS = 1 << 24  # string array elements: vocabularies are ~10^5–10^6 tokens and merges
MAX_KEY = 1 << 16  # key and tensor name length


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
    file: Path | None = None  # the file holding it (a split GGUF's shard); None: the GGUFFile's path


@dataclass
class GGUFFile:
    path: Path
    fields: dict[str, Field] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    shards: list[Path] = field(default_factory=list)  # a split GGUF's files, first to last (else empty)

    @property
    def files(self) -> list[Path]:
        return self.shards or [self.path]

    def get(self, key: str, default=None):
        f = self.fields.get(key)
        return default if f is None else f.value

    def typed(self, key: str, kind: str, default=None):
        """The value of `key` when it has the expected kind — 'str', 'int', 'float', 'bool', 'str[]', 'float[]',
        'int[]' — else CorruptGGUF naming the key; `default` when the key is absent."""
        f = self.fields.get(key)
        if f is None:
            return default
        scalar, _, arr = kind.partition("[")
        vtype, sub = (VT.ARRAY, f.sub_type) if arr else (f.vtype, None)
        ok = f.vtype == vtype and _kind_ok(scalar, sub if arr else f.vtype)
        if not ok:
            got = f.vtype.name + (f"[{f.sub_type.name}]" if f.sub_type is not None else "")
            raise CorruptGGUF(f"{self.path.name}: key {key} has type {got}, expected {kind}")
        return f.value

    def read(self, t: TensorInfo) -> np.ndarray:
        """The tensor's stored bytes (F32/F16 as their float dtype, others as uint8)."""
        path = t.file or self.path
        with open(path, "rb") as fh:
            buf = os.pread(fh.fileno(), t.nbytes, t.offset)
        if len(buf) != t.nbytes:
            raise CorruptGGUF(f"{path.name}: tensor {t.name} is truncated (the file changed?)")
        if t.qtype == QT.F32:
            return np.frombuffer(buf, "<f4").reshape(t.shape)
        if t.qtype == QT.F16:
            return np.frombuffer(buf, "<f2").reshape(t.shape)
        return np.frombuffer(buf, np.uint8)


def _kind_ok(scalar: str, vtype: VT | None) -> bool:
    return {"str": vtype == VT.STRING, "int": vtype in _INTS, "float": vtype in _FLOATS,
            "bool": vtype == VT.BOOL}.get(scalar, False)


class _Cursor:
    def __init__(self, data: bytes | memoryview | mmap.mmap):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CorruptGGUF("file ends inside its header (truncated?)")
        b = bytes(self.data[self.pos:self.pos + n])
        self.pos += n
        return b

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))

    def string(self, limit: int | None = None) -> str:
        (n,) = self.unpack("<Q")
        if limit is not None and n > limit:
            raise CorruptGGUF(f"a name of {n} bytes (at most {limit})")
        return self.take(n).decode("utf-8", errors="replace")

    def skip_value(self, vtype: VT) -> int:
        """Advance over one value; returns the element count (1 for scalars)."""
        if vtype == VT.STRING:
            (n,) = self.unpack("<Q")
            self.take(n)
            return 1
        if vtype == VT.ARRAY:
            sub, count = self.unpack("<IQ")
            return self._skip_array(_vt(sub), count)
        self.take(_SIZES[vtype])
        return 1

    def _skip_array(self, sub: VT, count: int) -> int:
        left = len(self.data) - self.pos
        if sub == VT.ARRAY:
            raise CorruptGGUF("nested arrays are not supported")
        if sub == VT.STRING:  # hundreds of thousands of tokens: a tight loop, no copies
            if count > MAX_STRINGS or count * 8 > left:
                raise CorruptGGUF(f"a string array claims {count} elements, more than the file can hold")
            pos, data, u64, end = self.pos, self.data, _U64.unpack_from, len(self.data)
            for _ in range(count):
                if pos + 8 > end:
                    raise CorruptGGUF("file ends inside a string array (truncated?)")
                pos += 8 + u64(data, pos)[0]
            if pos > end:
                raise CorruptGGUF("file ends inside a string array (truncated?)")
            self.pos = pos
            return count
        if count * _SIZES[sub] > left:
            raise CorruptGGUF(f"an array claims {count} elements, more than the file can hold")
        self.pos += count * _SIZES[sub]
        return count


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
    size = regular_file(path, CorruptGGUF).st_size
    if size < 24:
        raise CorruptGGUF(f"{path.name} is not a GGUF file ({'empty' if not size else 'too short'})")
    with open(path, "rb") as fh:  # a map: only the header's pages are touched
        data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _read(path, _Cursor(data), size)
    finally:
        data.close()


def _read(path: Path, c: _Cursor, size: int) -> GGUFFile:
    magic, version, n_tensors, n_kv = c.unpack("<IIQQ")
    if magic != GGUF_MAGIC:
        raise CorruptGGUF(f"{path.name} is not a GGUF file (bad magic)")
    if version not in (2, 3):
        raise CorruptGGUF(f"{path.name}: unsupported GGUF version {version}")
    # the smallest key/value is 13 bytes and the smallest tensor info 32: counts beyond that cannot be real
    if n_kv * 13 > size or n_tensors * 32 > size:
        raise CorruptGGUF(f"{path.name}: header claims {n_kv} keys and {n_tensors} tensors, more than "
                          f"{size} bytes can hold")
    out = GGUFFile(path)
    try:
        _read_kv(c, out, n_kv)
        _read_tensors(c, out, n_tensors, size)
    except CorruptGGUF as e:
        raise CorruptGGUF(f"{path.name}: {e}") from None
    return out


def _read_kv(c: _Cursor, out: GGUFFile, n_kv: int) -> None:
    for _ in range(n_kv):
        key = c.string(MAX_KEY)
        if key in out.fields:
            raise CorruptGGUF(f"duplicate key {key!r}")
        start = c.pos
        vtype = _vt(c.unpack("<I")[0])
        sub = _vt(struct.unpack("<I", c.take(4))[0]) if vtype == VT.ARRAY else None
        c.pos = start + 4
        count = c.skip_value(vtype)
        out.fields[key] = Field(key, vtype, sub, bytes(c.data[start:c.pos]), count)


def _alignment(out: GGUFFile) -> int:
    align = out.typed("general.alignment", "int", GGUF_DEFAULT_ALIGNMENT)
    if out.fields.get("general.alignment") is not None and out.fields["general.alignment"].vtype != VT.UINT32:
        raise CorruptGGUF("general.alignment must be a UINT32")
    if align <= 0 or align & (align - 1):
        raise CorruptGGUF(f"general.alignment {align} is not a power of two")
    return align


def _read_tensors(c: _Cursor, out: GGUFFile, n_tensors: int, size: int) -> None:
    infos, names = [], set()
    for _ in range(n_tensors):
        name = c.string(MAX_KEY)
        if name in names:
            raise CorruptGGUF(f"duplicate tensor name {name!r}")
        names.add(name)
        (n_dims,) = c.unpack("<I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise CorruptGGUF(f"tensor {name!r} has {n_dims} dimensions (1 to {MAX_DIMS})")
        ne = c.unpack(f"<{n_dims}Q")
        (qt, offset) = c.unpack("<IQ")
        infos.append((name, ne, _qtype(name, qt), offset))
    align = _alignment(out)
    data_start = c.pos + (align - c.pos % align) % align
    expected = 0
    for name, ne, qtype, offset in infos:
        nbytes = _nbytes(name, ne, qtype)
        if offset != expected:  # llama.cpp requires tensors in order, each aligned, none overlapping
            raise CorruptGGUF(f"tensor {name!r} has data offset {offset}, expected {expected}")
        if data_start + offset + nbytes > size:
            raise CorruptGGUF(f"tensor {name!r} runs past the end of the file (truncated?)")
        out.tensors.append(TensorInfo(name, tuple(reversed(ne)), qtype, data_start + offset, nbytes, out.path))
        expected = offset + nbytes + (align - nbytes % align) % align


def _qtype(name: str, qt: int) -> QT:
    try:
        qtype = QT(qt)
    except ValueError:
        raise CorruptGGUF(f"tensor {name!r} has unknown type {qt}") from None
    if qtype not in GGML_QUANT_SIZES:
        raise CorruptGGUF(f"tensor {name!r} has unsupported type {qtype.name}")
    return qtype


def _nbytes(name: str, ne: tuple[int, ...], qtype: QT) -> int:
    block, bsize = GGML_QUANT_SIZES[qtype]
    if any(d == 0 for d in ne):
        raise CorruptGGUF(f"tensor {name!r} has an empty dimension {list(ne)}")
    if ne[0] % block:
        raise CorruptGGUF(f"tensor {name!r}: rows of {ne[0]} do not split into {qtype.name} blocks of {block}")
    n = 1
    for d in ne:  # Python ints: a hostile shape cannot overflow
        n *= d
    return n // block * bsize


def adapter_names(f: GGUFFile, key: str) -> list[str]:
    """Adapter names listed in a file: strings that pass the command line's rule, each once."""
    names = f.typed(key, "str[]", [])
    if bad := [n for n in names if not valid_name(n)]:
        raise CorruptGGUF(f"{f.path.name}: {key} lists an invalid adapter name {ascii(bad[0])[:50]}")
    if len(set(names)) != len(names):
        raise CorruptGGUF(f"{f.path.name}: {key} lists an adapter twice")
    return names


# --- split GGUF -------------------------------------------------------------------------------------------------

SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS = "split.no", "split.count", "split.tensors.count"
SPLIT_KEYS = (SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS)
_SHARD = re.compile(r"(.+)-(\d{5})-of-(\d{5})\.gguf")


def shard_path(path: Path, i: int, n: int) -> Path:
    """llama.cpp's (and gguf-py's) name for shard i (from 0) of n: out.gguf → out-00001-of-00003.gguf."""
    return path.with_name(f"{path.stem}-{i + 1:05d}-of-{n:05d}.gguf")


def first_shard(path: Path) -> Path | None:
    """The first shard of the split GGUF `path` names (any of its shards, or NAME.gguf when only
    NAME-00001-of-0000N.gguf exists); None when `path` is not one."""
    path = Path(path)
    if m := _SHARD.fullmatch(path.name):
        return path.with_name(f"{m[1]}-00001-of-{m[3]}.gguf") if path.exists() else None
    if path.exists() or not path.parent.is_dir():
        return None
    found = sorted(path.parent.glob(f"{glob.escape(path.stem)}-00001-of-[0-9][0-9][0-9][0-9][0-9].gguf"))
    if len(found) > 1:
        raise LorapackError(f"{path} does not exist, and {len(found)} split GGUFs start with its name "
                            f"({', '.join(p.name for p in found[:3])})", hint="name one of their shards")
    return found[0] if found else None


def base_file(folder: Path) -> Path:
    """A separate layout's base: base.gguf, or the first shard of a split one."""
    return first_shard(folder / "base.gguf") or folder / "base.gguf"


def read_model(path: Path) -> GGUFFile:
    """A GGUF file, or a whole split GGUF named by any of its shards (or by NAME.gguf), checked as llama.cpp
    checks splits: every shard present, numbered in order, agreeing on the count, holding the tensor count
    the first one promises, no tensor in two shards."""
    path = Path(path)
    first = first_shard(path) or path
    f = read_gguf(first)
    n = f.typed(SPLIT_COUNT, "int")
    if n is None:
        if first != path:  # NAME-00001-of-0000N.gguf without split keys: not what its name says
            raise CorruptGGUF(f"{first.name} is named as a shard but has no {SPLIT_COUNT} key")
        return f
    m = _SHARD.fullmatch(first.name)
    if m is None or int(m[3]) != n:
        raise CorruptGGUF(f"{first.name}: {SPLIT_COUNT} is {n} but the file is not named NAME-00001-of-{n:05d}.gguf")
    base = first.with_name(m[1] + ".gguf")
    shards = [f] + [_shard(shard_path(base, i, n), i, n) for i in range(1, n)]
    _check_split(f, shards, n)
    return GGUFFile(first, f.fields, [t for s in shards for t in s.tensors], [s.path for s in shards])


def _shard(path: Path, i: int, n: int) -> GGUFFile:
    if not path.exists():
        raise CorruptGGUF(f"shard {i + 1} of {n}, {path.name}, is missing")
    return read_gguf(path)


def _check_split(f: GGUFFile, shards: list[GGUFFile], n: int) -> None:
    names: set[str] = set()
    for i, s in enumerate(shards):
        if s.typed(SPLIT_NO, "int") != i or s.typed(SPLIT_COUNT, "int") != n:
            raise CorruptGGUF(f"{s.path.name}: {SPLIT_NO}/{SPLIT_COUNT} are {s.get(SPLIT_NO)}/{s.get(SPLIT_COUNT)}, "
                              f"expected {i}/{n}")
        if dup := next((t.name for t in s.tensors if t.name in names), None):
            raise CorruptGGUF(f"{s.path.name}: tensor {dup!r} is in two shards")
        names.update(t.name for t in s.tensors)
    if (want := f.typed(SPLIT_TENSORS, "int")) != len(names):
        raise CorruptGGUF(f"{f.path.name}: {SPLIT_TENSORS} is {want} but the shards hold {len(names)} tensors")
