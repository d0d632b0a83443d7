"""The plan: what a GGUF file will hold, before any tensor data is read.

Every tensor carries its name, shape, stored type and a `produce` callable that reads and transforms its source
only when the writer asks for it. Shapes are in numpy order (rows first); GGUF's `ne` order is the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT


@dataclass(frozen=True)
class KV:
    key: str
    vtype: VT
    value: Any
    sub_type: VT | None = None  # element type for arrays
    raw: bytes | None = None  # type tag + value as read from a GGUF file, re-written verbatim


def u32(key: str, v: int) -> KV:
    return KV(key, VT.UINT32, int(v))


def i32(key: str, v: int) -> KV:
    return KV(key, VT.INT32, int(v))


def f32(key: str, v: float) -> KV:
    return KV(key, VT.FLOAT32, float(v))


def string(key: str, v: str) -> KV:
    return KV(key, VT.STRING, v if isinstance(v, Later) else str(v))


class Later(str):
    """A string value known only once the tensors are written (the source fingerprint, hashed while they
    convert): the header holds a placeholder of the final length, which the writer overwrites in place."""

    def __new__(cls, length: int, get: Callable[[], str]):
        obj = super().__new__(cls, "0" * length)
        obj.get = get
        return obj

    def resolve(self) -> str:
        value = self.get()
        if len(value.encode()) != len(self):
            raise ValueError(f"a deferred value of {len(value)} characters where {len(self)} were reserved")
        return value


def boolean(key: str, v: bool) -> KV:
    return KV(key, VT.BOOL, bool(v))


def array(key: str, values: Any, sub: VT) -> KV:
    return KV(key, VT.ARRAY, values, sub)


@dataclass
class PlannedTensor:
    name: str
    shape: tuple[int, ...]  # numpy order
    qtype: QT
    produce: Callable[[], np.ndarray]  # float32 or float16 values in numpy order, not yet encoded
    source: str = ""  # the HF tensor(s) it comes from, for messages
    # optional: the same values as row blocks, in order, each produced on its own (large row-local tensors: so
    # no tensor is held whole, and both producer threads can work on one tensor)
    pieces: list[Callable[[], np.ndarray]] | None = None
    encoded: bool = False  # produce() already returns the stored bytes (copied from another GGUF)
    # the writer checks that what it stores is finite (a value that overflows the type becomes inf); off only
    # for bytes copied verbatim from another GGUF
    check_finite: bool = True


@dataclass
class Plan:
    """One GGUF file's content. `kv` keeps insertion order; a later key with the same name replaces the value."""

    kv: dict[str, KV] = field(default_factory=dict)
    tensors: list[PlannedTensor] = field(default_factory=list)

    def add(self, *items: KV) -> None:
        for item in items:
            self.kv[item.key] = item

    def get(self, key: str, default: Any = None) -> Any:
        item = self.kv.get(key)
        return default if item is None else item.value
