"""A Hugging Face base checkpoint on disk: config, tensor index (one or many shards), tokenizer files."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorapack.errors import CheckpointError

from .safetensors_io import TensorRef, read_header

log = logging.getLogger(__name__)

INDEX_NAME = "model.safetensors.index.json"


@dataclass
class BaseCheckpoint:
    path: Path
    config: dict[str, Any]
    tensors: dict[str, TensorRef]  # HF name → where its bytes are, in the order llama.cpp visits them
    _fingerprint: str | None = field(default=None, repr=False)

    def fingerprint(self) -> str:
        """sha256 over names, shapes and bytes of the source tensors, in name order.

        Independent of --outtype and of any conversion, so an adapter built against this checkpoint matches every
        GGUF made from it.
        """
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name in sorted(self.tensors):
                ref = self.tensors[name]
                h.update(f"{name}|{ref.dtype}|{list(ref.shape)}\n".encode())
                for start, stop in ref.row_chunks():
                    h.update(ref.read_raw(start, stop).tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

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
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path / 'config.json'} is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path / 'config.json'} is not a JSON object")
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
        try:
            weight_map = json.loads((path / INDEX_NAME).read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise CheckpointError(f"{path / INDEX_NAME} has no usable weight_map") from None
        parts = sorted(set(weight_map.values()))
    if not parts:
        raise CheckpointError(f"{path} has no model*.safetensors files")
    tensors: dict[str, TensorRef] = {}
    for part in parts:
        if not (path / part).is_file():
            raise CheckpointError(f"shard {part} listed in {INDEX_NAME} is missing")
        tensors.update(read_header(path / part))
    if weight_map and set(weight_map) != set(tensors):
        missing = sorted(set(weight_map) - set(tensors))[:5]
        extra = sorted(set(tensors) - set(weight_map))[:5]
        raise CheckpointError(f"{INDEX_NAME} disagrees with the shards (missing {missing}, extra {extra})")
    return tensors


def _safetensors_parts(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.name.startswith("model") and p.name.endswith(".safetensors"))
