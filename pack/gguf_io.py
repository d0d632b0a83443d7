"""A streaming GGUF v3 writer: header, metadata and tensor infos first, then each tensor as it is produced.

Sizes and offsets follow from the plan's shapes and types, so the header is complete before any tensor data is
read (values known only later, such as the source fingerprint, are patched in at the end); tensors are produced
and encoded ahead of the writer by two threads, within a byte bound, so peak memory is a few 16 MiB pieces (or,
for tensors produced whole, about three tensors).
"""

from __future__ import annotations

import collections
import errno
import itertools
import mmap
import os
import queue
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

import numpy as np
from gguf import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC, GGUF_VERSION
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

from lorapack.errors import LorapackError
from lorapack.spec.plan import KV, Later, Plan, PlannedTensor
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
    write_files({path: plan}, progress)


def write_files(files: dict[Path, Plan], progress: Callable[[int], None] | None = None) -> None:
    """Write each plan to its path, in order (a folder's files, a split GGUF's shards). Deferred values (the
    source fingerprint, hashed from the conversion's reads) are filled in once every file is written, when
    the whole source has been read."""
    later = [(path, offset, value) for path, plan in files.items() for offset, value in _write(path, plan, progress)]
    for path, offset, value in later:
        fd = os.open(path, os.O_WRONLY)
        try:
            DirectFile._write_all(fd, memoryview(value.resolve().encode()), offset)
        finally:
            os.close(fd)


def _write(path: Path, plan: Plan, progress) -> list[tuple[int, Later]]:
    """One file; returns where its deferred values sit.

    The work is the tensors' pieces in file order (a large row-local tensor's row blocks, else the whole
    tensor), dealt to the producer threads in turn: both cores read, convert and encode — within one large
    tensor too — each ahead by at most AHEAD_BYTES, while this thread writes the pieces in order."""
    placed = layout(plan.tensors)
    names = [t.name for t in plan.tensors]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise LorapackError(f"duplicate tensor names in plan: {', '.join(dup[:5])}")
    work = [w for t, _, size in placed for w in _work(t, size)]
    with DirectFile(path) as f:
        later = _write_header(f, plan, placed)
        stop = threading.Event()
        queues = [_Pieces(AHEAD_BYTES, stop) for _ in range(PRODUCERS)]
        producers = [threading.Thread(target=_produce_all, args=(work[k::PRODUCERS], q, stop), daemon=True)
                     for k, q in enumerate(queues)]
        for p in producers:
            p.start()
        try:
            written = 0
            for i, w in enumerate(work):
                data = queues[i % PRODUCERS].get()
                if isinstance(data, BaseException):
                    raise data
                f.write(memoryview(data).cast("B"))
                written += data.nbytes
                if w.last:
                    if written != w.size:
                        raise LorapackError(f"{w.tensor.name}: encoded {written} bytes, expected {w.size}")
                    f.write(b"\0" * _pad(w.size))
                    written = 0
                    if progress:
                        progress(w.size)
        finally:
            stop.set()  # a producer waiting for room gives up
            for p in producers:
                p.join()
        f.finish()
    return later


class DirectFile:
    """A file written front to back, through O_DIRECT where the file system allows it: the bytes go from an
    aligned staging buffer to the device without the page cache, whose copying and page allocation cost more
    kernel time than the disk takes to write (2.6 GB/s direct against 0.75 GB/s buffered, measured on the
    2-core machine the benchmarks run on). Full blocks are written by a thread of their own while the next
    block fills (a direct write waits for the device: writing in line would stall the whole pipeline for the
    disk's time). Where O_DIRECT is refused (tmpfs, some network file systems), at open or at a write, writes
    are ordinary ones. The tail that does not fill an aligned block goes through an ordinary descriptor."""

    BLOCK = 8 << 20  # a multiple of every logical block size
    BUFFERS = 3  # one filling, up to two on their way to the device

    def __init__(self, path: Path):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.direct = None
        try:
            self.direct = os.open(path, os.O_WRONLY | os.O_DIRECT)
        except (OSError, AttributeError):  # not supported here: ordinary writes only
            pass
        self.fill = 0  # bytes staged in buf
        self.pos = 0  # file offset of buf[0] (or of the next ordinary write)
        self.buf = self.thread = None
        self.error: BaseException | None = None
        if self.direct is not None:
            self.free: queue.Queue = queue.Queue()
            for _ in range(self.BUFFERS):
                self.free.put(mmap.mmap(-1, self.BLOCK))  # page-aligned
            self.full: queue.Queue = queue.Queue()
            self.buf = self.free.get()
            self.thread = threading.Thread(target=self._device_writer, daemon=True)
            self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def write(self, data) -> None:
        data = memoryview(data).cast("B")
        while len(data):
            if self.buf is None:  # ordinary writes
                self._write_all(self.fd, data, self.pos)
                self.pos += len(data)
                return
            n = min(len(data), self.BLOCK - self.fill)
            self.buf[self.fill:self.fill + n] = data[:n]
            self.fill += n
            data = data[n:]
            if self.fill == self.BLOCK:
                self._submit()

    def _submit(self) -> None:
        if self.error is not None:
            raise self.error
        self.full.put((self.buf, self.pos))
        self.pos += self.BLOCK
        self.fill = 0
        self.buf = self.free.get()  # waits while every buffer is on its way to the device

    def _device_writer(self) -> None:
        while (item := self.full.get()) is not None:
            buf, pos = item
            block = memoryview(buf)
            try:
                if self.error is None:
                    self._write_block(block, pos)
            except BaseException as e:  # raised by the next write or by finish, in the caller's thread
                self.error = e
            finally:
                block.release()
                self.free.put(buf)  # always back, so the caller never waits for ever

    def _write_block(self, block: memoryview, pos: int) -> None:
        if self.direct is not None:
            try:
                self._write_all(self.direct, block, pos)
                return
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                direct, self.direct = self.direct, None  # refused at write time: ordinary writes from here
                os.close(direct)
        self._write_all(self.fd, block, pos)

    @staticmethod
    def _write_all(fd: int, data: memoryview, offset: int) -> None:
        while len(data):
            n = os.pwrite(fd, data, offset)
            data, offset = data[n:], offset + n

    def _stop_writer(self) -> None:
        """Wait for every submitted block to reach the device."""
        thread, self.thread = self.thread, None
        if thread is not None:
            self.full.put(None)
            thread.join()

    def finish(self) -> None:
        """Write everything staged and wait for it; raises what the device writer met."""
        self._stop_writer()
        if self.error is not None:
            raise self.error
        if self.buf is not None and self.fill:
            tail = memoryview(self.buf)[: self.fill]
            try:
                self._write_all(self.fd, tail, self.pos)
            finally:
                tail.release()
            self.pos += self.fill
            self.fill = 0
        self._drop_direct()

    def _drop_direct(self) -> None:
        """Close the O_DIRECT descriptor; the staging maps are left to the garbage collector (closing one while a
        traceback still holds a view of it would raise, hiding the error being reported)."""
        direct, self.direct, self.buf = self.direct, None, None
        if direct is not None:
            os.close(direct)

    def close(self) -> None:
        try:
            self._stop_writer()
            self._drop_direct()
        finally:
            fd, self.fd = self.fd, None
            if fd is not None:
                os.close(fd)


class _Pieces:
    """One producer's encoded pieces on their way to the writer, bounded by bytes (one piece, however large,
    is always allowed, so a tensor bigger than the bound still passes, alone)."""

    def __init__(self, limit: int, stop: threading.Event):
        self.items: collections.deque = collections.deque()
        self.bytes, self.limit, self.stop = 0, limit, stop
        self.cond = threading.Condition()

    def wait_room(self, n: int) -> None:
        """Block until n more bytes fit (or the queue is empty): called before producing a whole tensor too, so
        a producer never holds one tensor queued and another in hand beyond the bound."""
        with self.cond:
            while self.bytes and self.bytes + n > self.limit and not self.stop.is_set():
                self.cond.wait(0.1)

    def put(self, item, n: int = 0) -> None:
        self.wait_room(n)
        with self.cond:
            self.items.append((item, n))
            self.bytes += n
            self.cond.notify_all()

    def get(self):
        with self.cond:
            while not self.items:
                self.cond.wait()
            item, n = self.items.popleft()
            self.bytes -= n
            self.cond.notify_all()
            return item


AHEAD_BYTES = 32 << 20  # encoded pieces queued per producer (pieces of large tensors are ~8-16 MiB)
# converting (reading, casting, hashing for the fingerprint, checking) costs more CPU than writing: one
# producer per core, up to two (each holds a few pieces, so memory stays a few pieces per producer)
PRODUCERS = max(1, min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


@dataclass(frozen=True)
class _Work:
    """One piece of a tensor: `rows` produces it (None: the whole tensor); `nbytes` is its stored size."""

    tensor: PlannedTensor
    size: int  # the whole tensor's stored bytes
    rows: Callable[[], np.ndarray] | None
    nbytes: int
    last: bool


def _work(t: PlannedTensor, size: int) -> list[_Work]:
    if not t.pieces:
        return [_Work(t, size, None, size, True)]
    n = len(t.pieces)
    return [_Work(t, size, rows, size // n, k == n - 1) for k, rows in enumerate(t.pieces)]


def _produce_all(work: list[_Work], pieces: _Pieces, stop: threading.Event) -> None:
    try:
        for w in work:
            pieces.wait_room(w.nbytes)  # before producing it: at most AHEAD_BYTES queued and one piece in hand
            if stop.is_set():
                return
            data = _encoded(w)
            pieces.put(data, data.nbytes)
    except BaseException as e:  # raised again by the writer, in its thread
        pieces.put(e)


def _encoded(w: _Work) -> np.ndarray:
    """A piece's stored bytes; block types are row-local, so row blocks encode independently."""
    t = w.tensor
    if w.rows is not None:
        values = w.rows()
    else:
        values = t.produce()
        if not t.encoded and tuple(values.shape) != tuple(t.shape):
            raise LorapackError(f"{t.name}: produced shape {values.shape} but planned {t.shape}")
    data = np.ascontiguousarray(values if t.encoded else encode(values, t.qtype))
    if t.check_finite and not finite(data, t.qtype):
        raise LorapackError(f"{t.name} (from {t.source}): values are not finite once stored as {t.qtype.name} "
                            "(NaN or infinity in the source, or too large for the type)",
                            hint="check the checkpoint and adapter; --outtype f32 or bf16 holds larger values")
    return data


def _write_header(f: BinaryIO, plan: Plan, placed) -> list[tuple[int, Later]]:
    """Header, metadata and tensor infos; returns where each deferred value's bytes sit, to fill in later."""
    parts = [struct.pack("<IIQQ", GGUF_MAGIC, GGUF_VERSION, len(placed), len(plan.kv))]
    later, pos = [], len(parts[0])
    for kv in plan.kv.values():
        encoded = encode_kv(kv)
        if isinstance(kv.value, Later):  # key, type tag, length, then the value's bytes
            later.append((pos + len(encoded) - len(kv.value.encode()), kv.value))
        parts.append(encoded)
        pos += len(encoded)
    for t, offset, _ in placed:
        ne = list(reversed(t.shape))  # GGUF stores ggml's ne order: fastest-moving dimension first
        parts.append(_str(t.name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, int(t.qtype), offset))
    header = b"".join(parts)
    f.write(header + b"\0" * _pad(len(header)))
    return later


_SCALE_FIRST = (QT.Q8_0, QT.Q4_0, QT.Q5_0)  # each block starts with its f16 scale d


def finite(data: np.ndarray, qtype: QT) -> bool:
    """Whether stored values (or, for block types, every block's scale) are finite."""
    raw = data.reshape(-1).view(np.uint8)
    if qtype == QT.F32:
        return bool(np.isfinite(raw.view(np.float32)).all())
    if qtype == QT.F16:  # finite ⇔ the magnitude bits are below the all-ones exponent (one pass and a max)
        return raw.size == 0 or int(np.bitwise_and(raw.view(np.uint16), 0x7FFF).max()) < 0x7C00
    if qtype == QT.BF16:
        return raw.size == 0 or int(np.bitwise_and(raw.view(np.uint16), 0x7FFF).max()) < 0x7F80
    if qtype in _SCALE_FIRST:
        size = GGML_QUANT_SIZES[qtype][1]
        return bool(np.isfinite(raw.reshape(-1, size)[:, :2].copy().view(np.float16)).all())
    return True


def total_bytes(plans: Iterable[Plan]) -> int:
    return sum(nbytes(t.shape, t.qtype) for p in plans for t in p.tensors)
