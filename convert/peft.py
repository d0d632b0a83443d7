"""PEFT LoRA checkpoints: read, check against the base, and describe each adapted module.

Every problem found is collected and raised together, before anything is written (vLLM's peft_helper style).
Features are judged by their effect on the weights, not by a key being present in adapter_config.json.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lorapack.errors import AdapterError, LorapackError
from lorapack.formats.jsonfile import read_json
from lorapack.formats.peft_config import check_adapter_config, lora_alpha, module_alpha, module_rank, split_key
from lorapack.formats.safetensors import FLOAT_DTYPES, TensorRef, read_header, to_f32
from lorapack.spec import lora
from lorapack.spec.arch import is_tower
from lorapack.spec.names import expert_part

from .base import BaseModel
from .experts import expert_modules, expert_parameters, param_wrappers


@dataclass
class LoraModule:
    """One adapted module: its LoRA factors and where it lands in the base model."""

    module: str  # HF module name as PEFT names it, e.g. model.layers.0.self_attn.q_proj
    base_name: str  # GGUF base tensor, e.g. blk.0.attn_q.weight
    weight_name: str  # the base weight's name in the checkpoint (may differ from module + '.weight')
    a: TensorRef  # (r, in) — for embeddings lora_embedding_A: (r, vocab)
    b: TensorRef  # (out, r) — for embeddings lora_embedding_B: (dim, r)
    rank: int
    alpha: float  # from lora_alpha / alpha_pattern
    scaling: float  # PEFT's: alpha / r, or alpha / sqrt(r) with rsLoRA (lorapack.spec.lora.scaling)
    embedding: bool
    magnitude: TensorRef | None = None  # DoRA
    experts: int = 0  # target_parameters on fused experts: a (E·r, in), b (out, r·E) — convert/experts.py
    rows: tuple[int, int] | None = None  # the rows of b this module takes (one part of a fused parameter)

    def read_a(self) -> np.ndarray:
        return _work(self.a)

    def read_b(self) -> np.ndarray:
        b = _work(self.b)
        return b[self.rows[0]:self.rows[1]] if self.rows else b

    @property
    def out_features(self) -> int:
        return self.rows[1] - self.rows[0] if self.rows else self.b.shape[0]


@dataclass
class Adapter:
    name: str
    path: Path
    config: dict[str, Any]
    modules: list[LoraModule]
    full_tensors: dict[str, TensorRef] = field(default_factory=dict)  # modules_to_save: HF weight name → ref
    file_hashes: dict[str, str] = field(default_factory=dict)

    @property
    def lora_alpha(self) -> float:
        return lora_alpha(self.config)

    @property
    def invocation_tokens(self) -> list[int]:
        """aLoRA: the token ids after which the adapter activates ([] for plain LoRA)."""
        return list(self.config.get("alora_invocation_tokens") or [])

    @property
    def targets(self) -> list[str]:
        return sorted({m.module.rsplit(".", 1)[-1] for m in self.modules})

    def gguf_alpha(self) -> tuple[float, dict[str, float]]:
        """(adapter.lora.alpha, factor folded into lora_b per module).

        llama.cpp scales each tensor by alpha / rank with one alpha per file. When every module's PEFT scaling
        times its rank agrees, that product is the alpha and nothing is folded (plain LoRA: alpha = lora_alpha,
        byte-equal with llama.cpp's converter; uniform-rank rsLoRA: alpha·√r). Otherwise the file keeps
        lora_alpha and each module's remaining factor is folded into lora_b.
        """
        effective = {m.module: m.scaling * m.rank for m in self.modules}
        values = set(effective.values())
        if len(values) == 1 and (only := values.pop()) != 0:
            return only, {m: 1.0 for m in effective}
        alpha = self.lora_alpha or 1.0
        return alpha, {m: e / alpha for m, e in effective.items()}


def _work(ref: TensorRef) -> np.ndarray:
    raw = ref.read_raw()
    return raw if ref.dtype == "F16" else to_f32(raw, ref.dtype)


def load_adapter(name: str, path: Path, model: BaseModel) -> Adapter:
    config, tensors, hashes = _read_files(path)
    problems = _unsupported(config, tensors)
    modules, full, more = _modules(config, tensors, model)
    problems += more
    vocab = model.h.get("vocab_size")
    if vocab is not None and any(t >= vocab for t in config.get("alora_invocation_tokens") or []):
        problems.append(f"alora_invocation_tokens {config['alora_invocation_tokens']} lie beyond the vocabulary "
                        f"({vocab} tokens)")
    if not modules and not full and not problems:
        problems.append("its targets match nothing in the base model")
    if problems:
        raise AdapterError(*(f"adapter {name}: {p}" for p in problems),
                           hint="lorapack converts PEFT LoRA adapters trained on this base checkpoint")
    return Adapter(name, path, config, modules, full, hashes)


def _read_files(path: Path) -> tuple[dict, dict[str, TensorRef], dict[str, str]]:
    if not path.is_dir():
        raise AdapterError(f"adapter {path} is not a directory")
    cfg_path, st_path = path / "adapter_config.json", path / "adapter_model.safetensors"
    if not cfg_path.is_file():
        raise AdapterError(f"{path} has no adapter_config.json", hint="point at a PEFT adapter folder")
    if not st_path.is_file():
        if (path / "adapter_model.bin").is_file():
            raise AdapterError(
                f"{path} holds adapter_model.bin, a pickle; lorapack never unpickles files (they can run code)",
                hint="re-save it as safetensors: model.save_pretrained(dir, safe_serialization=True)")
        raise AdapterError(f"{path} has no adapter_model.safetensors")
    config = read_json(cfg_path, AdapterError)
    if problems := check_adapter_config(config):
        raise AdapterError(*(f"{cfg_path}: {p}" for p in problems))
    try:
        tensors = read_header(st_path)
    except LorapackError as e:
        raise AdapterError(f"adapter file {st_path}: {e}") from None
    for key, ref in tensors.items():
        if ref.dtype not in FLOAT_DTYPES or not ref.shape or 0 in ref.shape:
            raise AdapterError(f"{st_path}: tensor {key} ({ref.dtype}, shape {list(ref.shape)}) is not a "
                               "non-empty floating-point tensor")
    return config, tensors, {p.name: _sha256(p) for p in (cfg_path, st_path)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _unsupported(config: dict, tensors: dict[str, TensorRef]) -> list[str]:
    """Everything this adapter does that lorapack cannot reproduce, judged by effect."""
    problems = []
    if (kind := str(config.get("peft_type", "LORA")).upper()) != "LORA":
        problems.append(f"peft_type {kind} is not supported (LoRA only)")
    if config.get("fan_in_fan_out"):
        problems.append("fan_in_fan_out (GPT-2 Conv1D layout) is not supported")
    if config.get("layer_replication"):
        problems.append("layer_replication is not supported")
    if config.get("invocation_string") and not config.get("alora_invocation_tokens"):
        problems.append("aLoRA with only invocation_string: lorapack never runs a tokenizer's code to turn it into "
                        "token ids; give alora_invocation_tokens in adapter_config.json")
    if any(".trainable_tokens_delta" in k for k in tensors):
        problems.append("trainable_token_indices (trainable token deltas) is not supported")
    for key, ref in tensors.items():
        if key.endswith("lora_B.bias") and np.any(_work(ref) != 0):
            problems.append(f"lora_bias: {key} is non-zero and llama.cpp has no LoRA bias")
            break
    return problems


def _modules(config: dict, tensors: dict[str, TensorRef], model: BaseModel):
    parts: dict[str, dict[str, TensorRef]] = {}
    problems = []
    for key, ref in tensors.items():
        if (split := split_key(key)) is None:
            problems.append(f"unexpected tensor {key}")
            continue
        parts.setdefault(split[0], {})[split[1]] = ref
    modules, full = [], {}
    if tower := [m for m in parts if is_tower(m)]:
        problems.append(f"LoRA on the vision tower ({len(tower)} modules, e.g. {tower[0]}) is not supported: "
                        "llama.cpp applies adapters to the text model only (images go through its mmproj)")
        parts = {m: k for m, k in parts.items() if m not in tower}
    if config.get("target_parameters") and not expert_parameters(config, model):
        problems.append(f"target_parameters {config['target_parameters']} name no fused expert parameter of this "
                        f"{model.spec.name} base (lorapack converts target_parameters LoRA on MoE experts only)")
    if single := [m for m in parts if expert_part(model.spec.text_name(f"{m}.weight")) is not None]:
        problems.append(f"LoRA on single experts' projections ({len(single)} modules, e.g. {single[0]}) is not "
                        "supported: llama.cpp applies expert LoRA to the stacked experts (train it with "
                        "target_parameters)")
        parts = {m: k for m, k in parts.items() if m not in single}
    if wrappers := param_wrappers(config, parts):
        try:
            modules += expert_modules(config, wrappers, model)
        except AdapterError as e:
            problems += e.problems
        parts = {m: k for m, k in parts.items() if m not in wrappers}
    for module, kinds in parts.items():
        if "modules_to_save" in kinds or ("weight" in kinds and "lora_A" not in kinds):
            full[f"{module}.weight"] = kinds.get("modules_to_save", kinds.get("weight"))
            continue
        try:
            modules.append(_lora_module(config, module, kinds, model))
        except AdapterError as e:
            problems += e.problems
    unknown = [p for p in problems if p.startswith("unknown module")]
    if unknown and not modules and len(unknown) == len(problems):
        problems = [f"its targets match nothing in the base model ({len(unknown)} modules, e.g. "
                    f"{unknown[0].split()[2]})"]
    return modules, _check_full(full, model, problems), problems


def _check_full(full: dict[str, TensorRef], model: BaseModel, problems: list[str]) -> dict[str, TensorRef]:
    """Full weights in the adapter (modules_to_save, or PEFT's save_embedding_layers copy of the base).
    A copy equal to the base weight changes nothing and is dropped; anything else replaces the base weight."""
    kept = {}
    for name, ref in full.items():
        name = name.replace(".base_layer.", ".")
        base = _base_ref(model, name)
        if base is None:
            problems.append(f"modules_to_save tensor {name} matches nothing in the base model")
        elif base.shape != ref.shape and base.shape[1:] == ref.shape[1:] and _is_vocab(model, name):
            problems.append(f"a resized vocabulary: {name} has {ref.shape[0]} rows in the adapter, {base.shape[0]} in "
                            "the base (convert the resized base model itself, with its new embedding)")
        elif base.shape != ref.shape:
            problems.append(f"modules_to_save tensor {name} has shape {list(ref.shape)}, base has {list(base.shape)}")
        elif not np.array_equal(_work(ref), _work(base)):
            kept[model.checkpoint_name(name)] = ref
    return kept


def _is_vocab(model: BaseModel, weight_name: str) -> bool:
    """The token embedding or the output head: the tensors whose rows are the vocabulary."""
    mapped = model.map_name(weight_name)
    return mapped is not None and mapped[0] in ("token_embd.weight", "output.weight")


def _base_ref(model: BaseModel, weight_name: str) -> TensorRef | None:
    name = model.checkpoint_name(weight_name)
    if name == "lm_head.weight" and name not in model.ckpt.tensors:
        if model.h.get("tie_word_embeddings", True):
            return model.ckpt.tensors.get(model.embedding_name)  # tied: lm_head shares the embedding matrix
        return None
    return model.ckpt.tensors.get(name) if name else None


def _lora_module(config: dict, module: str, kinds: dict[str, TensorRef], model: BaseModel) -> LoraModule:
    emb = "lora_embedding_A" in kinds or "lora_embedding_B" in kinds
    a = kinds.get("lora_embedding_A" if emb else "lora_A")
    b = kinds.get("lora_embedding_B" if emb else "lora_B")
    if a is None or b is None:
        raise AdapterError(f"{module}: {'lora_A' if a is None else 'lora_B'} is missing (incomplete a/b pair)")
    mapped = model.map_name(f"{module}.weight")
    base = _base_ref(model, f"{module}.weight")
    if mapped is None or base is None:
        raise AdapterError(f"unknown module {module} (not a {model.spec.name} weight in the base)")
    if len(a.shape) != 2 or len(b.shape) != 2 or a.shape[0] != b.shape[1]:
        raise AdapterError(f"{module}: lora_A {list(a.shape)} and lora_B {list(b.shape)} do not pair")
    rank = a.shape[0]
    if (want_rank := module_rank(config, module)) != rank:
        raise AdapterError(f"{module}: adapter_config.json gives rank {want_rank} (r / rank_pattern) but lora_A "
                           f"has rank {rank}")
    want = (base.shape[1], base.shape[0]) if emb else base.shape  # embedding delta is (B·A)ᵀ
    rows = a.shape[1] if emb else b.shape[0]  # the delta's vocabulary rows, for an embedding or head
    if _is_vocab(model, f"{module}.weight") and rows != base.shape[0] and \
            (b.shape[0] if emb else a.shape[1]) == base.shape[1]:
        raise AdapterError(f"{module}: a resized vocabulary: the adapter's delta has {rows} rows, the base "
                           f"{base.shape[0]} (convert the resized base model itself, with its new embedding)")
    if (b.shape[0], a.shape[1]) != tuple(want):
        raise AdapterError(f"{module}: B·A is {[b.shape[0], a.shape[1]]} but the base weight is {list(base.shape)}"
                           " (adapter for another base?)")
    for ref, label in ((a, "lora_A"), (b, "lora_B")):
        if not np.all(np.isfinite(_work(ref))):
            raise AdapterError(f"{module}: {label} has non-finite values")
    alpha = module_alpha(config, module)
    magnitude = kinds.get("lora_magnitude_vector") if config.get("use_dora") else None
    if config.get("use_dora") and magnitude is None:
        raise AdapterError(f"{module}: use_dora is set but the magnitude vector is missing")
    return LoraModule(module, mapped[0], model.checkpoint_name(f"{module}.weight"), a, b, rank, alpha,
                      lora.scaling(alpha, rank, bool(config.get("use_rslora"))), emb, magnitude)
