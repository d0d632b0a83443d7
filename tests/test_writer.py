"""The GGUF writer's I/O paths give the same bytes: O_DIRECT with its aligned staging blocks, ordinary writes
(a file system that refuses O_DIRECT, at open or at a write), and a value patched in after the tensors. A
producer's error reaches the caller by name, and nothing waits for ever."""

from __future__ import annotations

import errno
import hashlib

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QT

from lorapack.errors import LorapackError
from lorapack.pack import gguf_io
from lorapack.spec.plan import Later, Plan, PlannedTensor, string, u32


def _plan(later: bool = True) -> Plan:
    rng = np.random.default_rng(0)
    plan = Plan()
    plan.add(u32("test.count", 3))
    digest = hashlib.sha256(b"x").hexdigest()
    plan.add(string("test.digest", Later(64, lambda: digest) if later else digest))
    for i, shape in enumerate([(37, 129), (1000, 64), (3, 5), (4096, 8)]):  # odd sizes: padding, unaligned tails
        values = rng.standard_normal(shape).astype(np.float32)
        plan.tensors.append(PlannedTensor(f"t{i}", shape, QT.F16 if i % 2 else QT.F32, lambda v=values: v))
    return plan


def _write(path, monkeypatch, block=4096, **patches) -> bytes:
    monkeypatch.setattr(gguf_io.DirectFile, "BLOCK", block)  # many blocks for small tensors
    for name, value in patches.items():
        monkeypatch.setattr(gguf_io.DirectFile, name, value)
    gguf_io.write_plan(path, _plan())
    return path.read_bytes()


def test_direct_and_ordinary_writes_give_the_same_bytes(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        m.delattr(gguf_io.os, "O_DIRECT")  # as on a platform without it: ordinary writes from the start
        ordinary = _write(tmp_path / "a.gguf", m)
    direct = _write(tmp_path / "b.gguf", monkeypatch)
    gguf_io.write_plan(tmp_path / "c.gguf", _plan(later=False))  # the value written up front, for reference
    print(f"{len(direct)} bytes; {len(direct) // 4096} direct blocks and a tail")
    assert direct == ordinary == (tmp_path / "c.gguf").read_bytes()
    assert hashlib.sha256(b"x").hexdigest().encode() in direct


def test_o_direct_refused_at_write_time_falls_back(tmp_path, monkeypatch):
    want = _write(tmp_path / "a.gguf", monkeypatch)
    real = gguf_io.DirectFile._write_all
    refused = []

    def write_all(fd, data, offset):
        if not refused and offset >= 8192:  # the third block (a direct write): refused once
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd, data, offset)

    got = _write(tmp_path / "b.gguf", monkeypatch, _write_all=staticmethod(write_all))
    assert refused and got == want


def test_a_producer_error_is_raised_by_name(tmp_path):
    plan = _plan()
    plan.tensors.insert(1, PlannedTensor("bad", (4, 4), QT.F32, lambda: np.zeros((3, 4), np.float32)))
    with pytest.raises(LorapackError, match="bad: produced shape"):
        gguf_io.write_plan(tmp_path / "x.gguf", plan)


def test_a_device_write_error_reaches_the_caller(tmp_path, monkeypatch):
    """Blocks are written by a thread of their own: its error (a full disk) is raised in the caller's thread,
    and the writer does not hang on the buffers that thread held."""
    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        _write(tmp_path / "a.gguf", monkeypatch, _write_all=staticmethod(full))


def test_stream_hashes_take_blocks_out_of_order(tmp_path):
    """Two producers read neighbouring blocks of one tensor: the digest is the tensor's sha256 whatever order
    its blocks arrive in; a tensor read twice (a tied output) is left for the fingerprint to hash from the file."""
    from lorapack.convert.checkpoint import StreamHashes
    from lorapack.formats.safetensors import TensorRef

    data = np.arange(64 * 16, dtype=np.float32).reshape(64, 16)
    path = tmp_path / "t.bin"
    path.write_bytes(data.tobytes())
    a, b = (TensorRef(path, n, "F32", (64, 16), 0, data.nbytes) for n in ("a", "b"))
    blocks = [(i, i + 8) for i in range(0, 64, 8)]
    order = [1, 0, 3, 2, 4, 7, 6, 5]  # each block early by one or two, as two producers deliver them
    hashes = StreamHashes()
    for k in order:
        hashes.saw(a, *blocks[k], a.read_raw(*blocks[k]))
    for k in [0, 1, 0, 2, 3, 4, 5, 6, 7]:  # block 0 again: a second read of the same tensor
        hashes.saw(b, *blocks[k], b.read_raw(*blocks[k]))
    done = hashes.finish()
    assert done == {"a": hashlib.sha256(data.tobytes()).hexdigest()}
