"""A Hugging Face base checkpoint on disk: config, tensor index (one or many shards), tokenizer files."""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorapack.errors import CheckpointError
from lorapack.formats.hfconfig import check_config
from lorapack.formats.jsonfile import read_json
from lorapack.formats.safetensors import FLOAT_DTYPES, TensorRef, read_header

log = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"


@dataclass
class BaseCheckpoint:
    path: Path
    config: dict[str, Any]
    tensors: dict[str, TensorRef]  # HF name → where its bytes are, in the order llama.cpp visits them
    _fingerprint: Any = field(default=None, repr=False)  # Future[str]
    # sha256 of the tensors the converter reads front to back, taken from the bytes it reads (no second read)
    hashes: Any = field(default=None, repr=False)

    def fingerprint(self) -> str:
        """sha256 over the source tensors, in name order: each tensor contributes the line
        `name|dtype|shape` and the sha256 of its raw bytes.

        Independent of --outtype and of any conversion, so an adapter built against this checkpoint matches every
        GGUF made from it. Digests the conversion took on its way are reused; the other tensors are hashed here,
        in parallel (hashlib releases the GIL)."""
        if self._fingerprint is None:
            self.start_fingerprint()
        return self._fingerprint.result()

    def start_fingerprint(self) -> None:
        """Hash every tensor now, in the background (when no conversion will read them: --adapters-only)."""
        if self._fingerprint is None:
            from concurrent.futures import ThreadPoolExecutor

            done = self.hashes.finish() if self.hashes is not None else {}
            pool = ThreadPoolExecutor(max_workers=1)
            self._fingerprint = pool.submit(_fingerprint, self.tensors, done)
            pool.shutdown(wait=False)

    def stream_hashes(self) -> StreamHashes:
        """Start taking digests from the conversion's reads (call before writing; fingerprint() after)."""
        if self.hashes is None:
            self.hashes = StreamHashes()
        return self.hashes

    def file(self, name: str) -> Path | None:
        p = self.path / name
        return p if p.is_file() else None


def load_checkpoint(path: Path) -> BaseCheckpoint:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"base checkpoint {path} is not a directory")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} has no config.json", hint="point BASE at a Hugging Face model folder")
    return BaseCheckpoint(path, load_config(path), index_tensors(path))


def load_config(path: Path) -> dict[str, Any]:
    """config.json as written. Defaults transformers would fill in come from each architecture's table
    (see `Arch.defaults`), which keeps transformers and torch out of the conversion process."""
    config = read_json(path / "config.json", CheckpointError)
    check_config(config, "config.json")
    return config


def index_tensors(path: Path) -> dict[str, TensorRef]:
    if (path / "pytorch_model.bin").exists() or list(path.glob("pytorch_model-*.bin")):
        if not _safetensors_parts(path):
            raise CheckpointError(
                f"{path} holds only pickled pytorch_model*.bin weights; lorapack never unpickles files",
                hint="re-save the model with save_pretrained(..., safe_serialization=True)",
            )
    parts = _safetensors_parts(path)
    weight_map: dict[str, str] = {}
    if (path / INDEX_NAME).is_file():
        weight_map = read_json(path / INDEX_NAME, CheckpointError).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{path / INDEX_NAME} has no usable weight_map")
        parts = sorted(set(weight_map.values()))
        if bad := [p for p in parts if Path(p).name != p or not p.endswith(".safetensors")]:
            raise CheckpointError(f"{INDEX_NAME} names a shard outside the folder or not .safetensors: "
                                  f"{bad[0][:80]!r}")
    if not parts:
        raise CheckpointError(f"{path} has no model*.safetensors files")
    tensors: dict[str, TensorRef] = {}
    for part in parts:
        if not (path / part).is_file():
            raise CheckpointError(f"shard {part} listed in {INDEX_NAME} is missing" if weight_map
                                  else f"{path / part} is not a regular file")
        for name, ref in read_header(path / part).items():
            if name in tensors:
                raise CheckpointError(f"tensor {name} is stored twice ({tensors[name].path.name}, {part})")
            tensors[name] = ref
    if weight_map and set(weight_map) != set(tensors):
        missing = sorted(set(weight_map) - set(tensors))[:5]
        extra = sorted(set(tensors) - set(weight_map))[:5]
        raise CheckpointError(f"{INDEX_NAME} disagrees with the shards (missing {missing}, extra {extra})")
    _check_usable(tensors)
    return tensors


def _check_usable(tensors: dict[str, TensorRef]) -> None:
    """Weights must be floating point with at least one element; integer or boolean 'weights' are another
    format (quantized checkpoints) that lorapack would otherwise convert as numbers."""
    for name, ref in tensors.items():
        if ref.dtype not in FLOAT_DTYPES:
            raise CheckpointError(f"tensor {name} has dtype {ref.dtype}; lorapack converts floating-point "
                                  "checkpoints (F32, F16, BF16)", hint="quantized checkpoints are not supported")
        if not ref.shape or 0 in ref.shape:
            raise CheckpointError(f"tensor {name} has shape {list(ref.shape)}: no elements to convert")


def _safetensors_parts(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith("model") and p.name.endswith(".safetensors"))


def _tensor_sha256(ref: TensorRef) -> str:
    h = hashlib.sha256()
    for start, stop in ref.row_chunks():
        h.update(ref.read_raw(start, stop).data)
    return h.hexdigest()


def _fingerprint(tensors: dict[str, TensorRef], done: dict[str, str]) -> str:
    from concurrent.futures import ThreadPoolExecutor

    names = sorted(tensors)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:  # hashlib releases the GIL
        digests = list(pool.map(lambda n: done.get(n) or _tensor_sha256(tensors[n]), names))
    h = hashlib.sha256()
    for name, digest in zip(names, digests):
        ref = tensors[name]
        h.update(f"{name}|{ref.dtype}|{list(ref.shape)}|{digest}\n".encode())
    return h.hexdigest()


class StreamHashes:
    """sha256 of each tensor read front to back in row blocks, fed the very bytes the converter read and hashed
    on threads of their own, each tensor on one of them (hashing a 16 GB checkpoint is ~16 s of one core here:
    it overlaps the conversion rather than reading the source a second time, and is not one thread's work).
    Two producers may read neighbouring blocks of one tensor at once: a block that arrives before its
    predecessor waits for it (up to PENDING_BYTES per tensor). A tensor read twice, out of order beyond that,
    or not to its end, is hashed later, from the file."""

    PENDING_BYTES = 256 << 20
    LANES = 2  # hashing threads (sha256 is sequential within a tensor; tensors take turns)

    def __init__(self):
        self._open: dict[str, tuple[Any, int]] = {}  # tensor → (sha256 so far, next row expected)
        self._early: dict[str, dict[int, tuple[int, Any]]] = {}  # tensor → {start: (stop, data)} ahead of it
        self._done: dict[str, str] = {}
        self._finished = self._failed = False
        self._lock = threading.Lock()
        self._lane: dict[str, queue.Queue] = {}  # tensor → the queue of the thread that hashes it
        self._queues = [queue.Queue(maxsize=8) for _ in range(self.LANES)]  # blocks waiting to be hashed
        self._threads = [threading.Thread(target=self._run, args=(q,), daemon=True) for q in self._queues]
        for t in self._threads:
            t.start()

    def saw(self, ref: TensorRef, start: int, stop: int, data) -> None:
        """The converter read rows [start, stop) of ref as `data` (its raw bytes)."""
        name = ref.name
        with self._lock:
            if self._finished or self._failed or name in self._done:
                return
            h, expect = self._open.get(name, (None, 0))
            early = self._early.setdefault(name, {})
            if start < expect or start in early:  # read again (a tied output): hashed later, from the file
                return self._drop(name)
            early[start] = (min(stop, ref.rows), data)
            if sum(d.nbytes for _, d in early.values()) > self.PENDING_BYTES:
                return self._drop(name)
            while expect in early:  # feed every block now in order (one tensor, one thread: its order holds)
                stop, data = early.pop(expect)
                if h is None:
                    h = hashlib.sha256()
                    self._lane[name] = self._queues[len(self._lane) % self.LANES]
                self._lane[name].put((h, data, name if stop == ref.rows else None))
                expect = stop
            self._open[name] = (h, expect)

    def _drop(self, name: str) -> None:
        self._open[name] = (None, 1 << 62)  # nothing more counts for it
        self._early.pop(name, None)

    def _run(self, blocks: queue.Queue) -> None:
        while (item := blocks.get()) is not None:
            h, data, last = item
            if self._failed:
                continue  # keep draining, so no producer blocks on a full queue
            try:
                h.update(data)
                if last is not None:
                    self._done[last] = h.hexdigest()
            except BaseException:  # the fingerprint then hashes every tensor from the file
                self._failed = True

    def finish(self) -> dict[str, str]:
        """Digests of the tensors read whole (waits for the hashing threads); later reads are not hashed."""
        with self._lock:
            self._finished = True
            self._early.clear()
        for q, t in zip(self._queues, self._threads):
            q.put(None)
            t.join()
        return {} if self._failed else dict(self._done)
