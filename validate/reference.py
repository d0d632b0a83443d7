"""The reference: the unmerged PyTorch PEFT model and the safetensors source, read with their own libraries."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from lorapack.errors import LorapackError


class Source:
    """Base checkpoint tensors, read from the safetensors files with positioned reads (no memory map: pages of
    a map would stay resident and count against the validator's memory)."""

    _NP = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8", "I64": "<i8", "I32": "<i4", "U8": "u1",
           "I8": "i1", "BOOL": "?"}

    def __init__(self, base: Path):
        self.config = _json(base / "config.json")
        files = sorted(base.glob("model*.safetensors"))
        if not files:
            raise LorapackError(f"reference base {base} has no model*.safetensors")
        self._where: dict[str, tuple[Path, dict, int]] = {}
        for path in files:
            with open(path, "rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n))
            header.pop("__metadata__", None)
            self._where.update({k: (path, v, 8 + n) for k, v in header.items()})

    def names(self) -> list[str]:
        return list(self._where)

    def has(self, name: str) -> bool:
        return name in self._where

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._where[name][1]["shape"])

    def dtype(self, name: str) -> str:
        return self._where[name][1]["dtype"]

    def raw(self, name: str, rows: slice | None = None) -> bytes:
        path, info, base = self._where[name]
        start, end = info["data_offsets"]
        shape = info["shape"]
        if rows is not None and shape:
            row = (end - start) // shape[0]
            first, stop, _ = rows.indices(shape[0])
            start, end = start + first * row, start + stop * row
        with open(path, "rb") as f:
            return os.pread(f.fileno(), end - start, base + start)

    def get(self, name: str, rows: slice | None = None) -> np.ndarray:
        """float32 values in numpy order (rows: only those rows)."""
        info = self._where[name][1]
        shape = list(info["shape"])
        if rows is not None and shape:
            shape[0] = len(range(*rows.indices(shape[0])))
        v = np.frombuffer(self.raw(name, rows), dtype=self._NP[info["dtype"]]).reshape(shape)
        if info["dtype"] == "BF16":
            return (v.astype(np.uint32) << 16).view(np.float32)
        return v.astype(np.float32)


class PeftReference:
    """The base model with every adapter loaded, unmerged, in float32 — PEFT's own forward is the reference."""

    def __init__(self, base: Path, adapters: dict[str, Path]):
        import torch
        import transformers
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        torch.set_grad_enabled(False)
        transformers.logging.set_verbosity_error()  # the reference's loading chatter is not the user's concern
        transformers.logging.disable_progress_bar()
        try:
            # stored precision (bf16 halves the memory); each layer is lifted to float32 when it is evaluated
            model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
        except Exception as e:
            raise LorapackError(f"cannot load the reference base {base} with transformers ({e})") from None
        self.names = list(adapters)
        if not adapters:
            self.model, self.layers, self.saved = model.eval(), {}, {}
            return
        first, *rest = self.names
        try:
            self.model = PeftModel.from_pretrained(model, adapters[first], adapter_name=first).eval()
            for n in rest:
                self.model.load_adapter(adapters[n], adapter_name=n)
        except Exception as e:
            raise LorapackError(f"cannot load the reference adapters with PEFT ({e})") from None
        self.layers = self._lora_layers()
        self.saved = self._modules_to_save()

    def _lora_layers(self) -> dict[str, dict[str, object]]:
        """adapter name → {HF module name → LoraLayer holding that adapter}."""
        from peft.tuners.lora import LoraLayer

        out: dict[str, dict[str, object]] = {n: {} for n in self.names}
        for name, module in self.model.base_model.model.named_modules():
            if isinstance(module, LoraLayer):
                for n in self.names:
                    if n in module.lora_A or n in module.lora_embedding_A:
                        out[n][name] = module
        return out

    def _activate(self, adapter) -> None:
        """set_adapter walks the whole model: only call it when the active adapter changes."""
        if getattr(self, "_active", None) != adapter:
            self.model.base_model.set_adapter(adapter)
            self._active = adapter

    def _modules_to_save(self) -> dict[str, dict[str, np.ndarray]]:
        """adapter name → {HF weight name → the full weight PEFT uses instead of the base one}."""
        from peft.utils import ModulesToSaveWrapper

        out: dict[str, dict[str, np.ndarray]] = {n: {} for n in self.names}
        for name, module in self.model.base_model.model.named_modules():
            if isinstance(module, ModulesToSaveWrapper):
                for n in self.names:
                    if n in module.modules_to_save:
                        out[n][f"{name}.weight"] = module.modules_to_save[n].weight.detach().float().numpy()
        return out

    def contribution(self, adapter: str, module: str, x: np.ndarray) -> np.ndarray:
        """What the adapter adds at `module` for input x: PEFT's layer forward with the adapter active, minus
        the base layer. x: (N, in) float32 — token ids (N,) for embeddings."""
        import torch

        layer = self.layers[adapter][module]
        self._activate(adapter)
        inp = torch.from_numpy(x)
        with float32(layer):
            return (layer(inp) - layer.base_layer(inp)).float().numpy()

    def logits(self, ids: list[int], adapter: str | None) -> np.ndarray:
        import contextlib

        import torch

        inp = torch.tensor([ids])
        off = adapter is None and hasattr(self.model, "disable_adapter")
        if adapter is not None and adapter is not _ACTIVE:
            self._activate(adapter)
        with float32(self.model), (self.model.disable_adapter() if off else contextlib.nullcontext()):
            return self.model(inp).logits[0].float().numpy()


    def logits_combined(self, ids: list[int], scales: dict[str, float]) -> np.ndarray:
        """Every adapter active at once, each at its scale: what a merged model should compute."""
        layers = [(layer, n) for n in scales for layer in self.layers.get(n, {}).values()]
        self.model.base_model.set_adapter(list(scales))
        self._active = None
        for layer, n in layers:
            layer.set_scale(n, scales[n])
        try:
            return self.logits(ids, adapter=None if not scales else _ACTIVE)
        finally:
            for layer, n in layers:
                layer.set_scale(n, 1.0)


_ACTIVE = object()  # logits(): keep the adapters that are already active


class float32:
    """Evaluate a module in float32 and give it back its stored dtype (bf16 → f32 → bf16 is lossless)."""

    def __init__(self, module):
        self.module = module
        self.dtypes = {n: p.dtype for n, p in module.named_parameters()}

    def __enter__(self):
        import torch

        if any(d != torch.float32 for d in self.dtypes.values()):
            self.module.float()

    def __exit__(self, *exc):
        for n, p in self.module.named_parameters():
            if p.dtype != self.dtypes[n]:
                p.data = p.data.to(self.dtypes[n])


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise LorapackError(f"cannot read {path} ({e})") from None
