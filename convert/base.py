"""Base checkpoint → Plan: llama.cpp's tensor names, transforms, types and metadata for the base model."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
from gguf import GGML_QUANT_VERSION, Keys
from gguf import GGMLQuantizationType as QT

from lorapack.errors import CheckpointError
from lorapack.formats.safetensors import TensorRef, to_f32
from lorapack.spec import kinds
from lorapack.spec.arch import Spec, is_tower, spec_for
from lorapack.spec.hparams import HParams, flatten
from lorapack.spec.names import NameTable, block_of, expert_part, mtp_layers, name_table
from lorapack.spec.plan import Plan, PlannedTensor, string, u32
from lorapack.spec.types import direct_encoder, file_type, stored_type

from .checkpoint import BaseCheckpoint
from .tokenizers import vocabulary
from .transforms import changes_values, forward, forward_rows, row_local, stack_experts, stored_shape
from .vocab import load_tokenizer_json, release_tokenizers

log = logging.getLogger(__name__)


@dataclass
class BaseModel:
    """A checkpoint with its architecture resolved: what both base and adapter conversion need."""

    ckpt: BaseCheckpoint
    spec: Spec
    h: HParams
    _vocab_rows: int | None = None
    _by_gguf: dict[str, str] | None = None

    @property
    def n_head(self) -> int:
        return self.h.find(["n_heads", "num_attention_heads"])

    @property
    def n_head_kv(self) -> int:
        return self.h.find(["n_kv_heads", "num_key_value_heads"], None) or self.n_head

    @property
    def names(self) -> NameTable:
        return name_table(self.spec, self.h.block_count, self.h.n_layers)

    def map_name(self, hf_name: str) -> tuple[str, int | None] | None:
        """HF tensor name → (GGUF tensor name, block id), or None when llama.cpp's table has no row for it."""
        gguf_name = self.names.gguf_name(hf_name)
        return (gguf_name, block_of(gguf_name)) if gguf_name else None

    def checkpoint_name(self, hf_name: str) -> str | None:
        """The checkpoint's own name for the weight a module name refers to. Names differ between the two:
        transformers 5 (and so PEFT) calls Gemma 3's text layers model.language_model.layers.N while the
        checkpoint stores language_model.model.layers.N; both map to one GGUF name. A tied head is the virtual
        'lm_head.weight'."""
        if hf_name in self.ckpt.tensors:
            return hf_name
        if (mapped := self.map_name(hf_name)) is None:
            return None
        if self._by_gguf is None:
            self._by_gguf = {m[0]: n for n in self.ckpt.tensors if not is_tower(n) and (m := self.map_name(n))}
        if mapped[0] == "output.weight" and mapped[0] not in self._by_gguf:
            return "lm_head.weight" if "token_embd.weight" in self._by_gguf else None
        return self._by_gguf.get(mapped[0])

    @property
    def embedding_name(self) -> str:
        return self.checkpoint_name("model.embed_tokens.weight") or "model.embed_tokens.weight"


def resolve(ckpt: BaseCheckpoint) -> BaseModel:
    spec = spec_for(ckpt.config)
    model = BaseModel(ckpt, spec, flatten(ckpt.config, spec.defaults))
    model.h.block_count += (n_mtp := mtp_layers(spec, model.h.raw, ckpt.tensors))
    if not n_mtp and model.h.get("mtp_num_hidden_layers"):
        log.warning("config.json sets mtp_num_hidden_layers but the checkpoint has no mtp.* tensors (transformers "
                    "does not save them): the GGUF gets no MTP block")
    _check_vocab_size(model)
    return model


def _check_vocab_size(model: BaseModel) -> None:
    """vocab_size sizes the token list; it cannot exceed the embedding's rows (a hostile 2^31 would otherwise
    grow a list without bound)."""
    ref = model.ckpt.tensors.get(model.embedding_name)
    shape = ref.shape if ref is not None else None
    if shape is None or len(shape) != 2:
        raise CheckpointError("the checkpoint has no 2-D token embedding (e.g. model.embed_tokens.weight)")
    vocab, hidden = model.h.get("vocab_size"), model.h.get("hidden_size")
    if vocab is not None and vocab > shape[0]:
        raise CheckpointError(f"config.json: vocab_size {vocab} exceeds the {shape[0]} rows of the token embedding")
    if hidden is not None and hidden != shape[1]:
        raise CheckpointError(f"config.json: hidden_size {hidden} but the token embedding has {shape[1]} columns")


def general_keys(model: BaseModel, kind: str) -> list:
    return [string(Keys.General.ARCHITECTURE, model.spec.name), string(Keys.General.TYPE, kind),
            string(Keys.General.NAME, model.ckpt.path.resolve().name)]


# rows [start, stop) of what gets added to a base weight (HF orientation, float32) — the merged layout's deltas
Delta = Callable[[int, int], np.ndarray]


def base_plan(model: BaseModel, outtype: QT, deltas: dict[str, Delta] | None = None) -> Plan:
    plan = Plan()
    n_vocab = trimmed_rows(model)
    plan.add(*general_keys(model, "model"))
    plan.add(*model.spec.metadata(model.h, int(file_type(outtype))))
    plan.add(u32(Keys.General.QUANTIZATION_VERSION, GGML_QUANT_VERSION))
    plan.add(*vocabulary(model.spec, model.ckpt, model.h))
    release_tokenizers()
    for name, values in (model.spec.generated or (lambda h: []))(model.h):
        plan.tensors.append(PlannedTensor(name, values.shape, QT.F32, lambda v=values: v, "(generated)"))
    plan.tensors += base_tensors(model, outtype, deltas or {}, n_vocab)
    return plan


def trimmed_rows(model: BaseModel) -> int | None:
    """Rows token_embd / output keep under kinds.VOCAB_TRIM (None: all of them)."""
    return vocab_rows(model) if model.spec.has(kinds.VOCAB_TRIM) else None


def base_tensors(model: BaseModel, outtype: QT, deltas: dict[str, Delta], n_vocab: int | None
                 ) -> list[PlannedTensor]:
    """In the checkpoint's order, as llama.cpp visits it; a block's stacked experts where its last expert
    tensor comes (when llama.cpp has collected them all), in name order."""
    out, unmapped = [], []
    experts, last = expert_groups(model)
    for i, (hf_name, ref) in enumerate(model.ckpt.tensors.items()):
        if hf_name.endswith(model.spec.skip) or is_tower(hf_name):
            continue
        if expert_part(model.spec.text_name(hf_name)) is not None:
            for stacked in last.get(i, []):
                out.append(planned_stack(model, stacked, experts[stacked], outtype, deltas.get(stacked)))
            continue
        mapped = model.map_name(hf_name)
        if mapped is None:
            unmapped.append(hf_name)
            continue
        out.append(planned(model, mapped[0], hf_name, ref, outtype, n_vocab, deltas.get(hf_name)))
    if unmapped:
        raise CheckpointError(f"{len(unmapped)} tensors have no {model.spec.name} mapping: "
                              f"{', '.join(unmapped[:6])}{' …' if len(unmapped) > 6 else ''}")
    return out


def expert_groups(model: BaseModel) -> tuple[dict[str, list[TensorRef]], dict[int, list[str]]]:
    """(stacked HF name → its experts' tensors in expert order, checkpoint position → stacked names due there)."""
    found: dict[str, dict[int, TensorRef]] = {}
    block_last: dict[str, int] = {}
    for i, (hf_name, ref) in enumerate(model.ckpt.tensors.items()):
        if (part := expert_part(model.spec.text_name(hf_name))) is not None:
            stacked, xid = part
            found.setdefault(stacked, {})[xid] = ref
            block_last[stacked.rsplit(".experts.", 1)[0]] = i
    if not found:
        return {}, {}
    n = model.h.find(["num_local_experts", "num_experts"])
    groups = {}
    for stacked, parts in found.items():
        if len(parts) != n or set(parts) != set(range(n)):
            raise CheckpointError(f"{stacked}: the checkpoint has experts {sorted(parts)[:8]}, config.json "
                                  f"num_experts is {n}")
        shapes = {parts[x].shape for x in parts}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise CheckpointError(f"{stacked}: the experts' tensors differ in shape or are not 2-D")
        groups[stacked] = [parts[x] for x in range(n)]
    due: dict[int, list[str]] = {}
    for stacked in sorted(groups):
        due.setdefault(block_last[stacked.rsplit(".experts.", 1)[0]], []).append(stacked)
    return groups, due


def planned(model: BaseModel, name: str, hf_name: str, ref: TensorRef, outtype: QT, n_vocab: int | None,
            delta: Delta | None = None) -> PlannedTensor:
    shape = stored_shape(model, name, ref.shape)
    if n_vocab is not None and name in ("token_embd.weight", "output.weight"):
        shape = (min(shape[0], n_vocab), *shape[1:])
    qtype = stored_type(name, shape, outtype)
    produce, pieces, encoded = _producer(model, name, ref, shape, qtype, delta)
    return PlannedTensor(name, shape, qtype, produce, hf_name, pieces, encoded)


def read(model: BaseModel, ref: TensorRef, start: int, stop: int) -> np.ndarray:
    """Rows of a source tensor as stored; the checkpoint's fingerprint takes its digest from these bytes."""
    raw = ref.read_raw(start, stop)
    if model.ckpt.hashes is not None:
        model.ckpt.hashes.saw(ref, start, stop, raw)
    return raw


def _role(name: str) -> str:
    return kinds.BIAS if name.endswith(".bias") else kinds.WEIGHT


def _producer(model: BaseModel, name: str, ref: TensorRef, shape: tuple[int, ...], qtype: QT,
              delta: Delta | None):
    """(produce, pieces, encoded): the transformed values whole, the same in row blocks when every transform is
    row-local, and whether they come already encoded (a direct bit mapping, no float arithmetic needed)."""
    role = _role(name)
    plain = not changes_values(model, name, role)  # bits may map straight across
    direct = direct_encoder(ref.dtype, qtype) if plain and delta is None else None

    def rows(start: int, stop: int) -> np.ndarray:
        raw = read(model, ref, start, stop)
        if direct is not None:
            return direct(raw)
        # llama.cpp works in the source precision for F16/F32 and in F32 for everything else;
        # a merge is computed in float32 and cast once
        v = raw if ref.dtype == "F16" and delta is None else to_f32(raw, ref.dtype)
        if delta is not None:
            v = v + delta(start, stop)
        return forward_rows(model, name, role, v)

    def produce() -> np.ndarray:
        v = rows(0, shape[0] if shape else 1).reshape(shape)
        return forward(model, name, role, v) if not row_local(model, name, role) else v

    big = len(shape) >= 2 and ref.nbytes > (16 << 20)
    if not (big and row_local(model, name, role)):
        return produce, None, direct is not None
    pieces = [functools.partial(rows, start, min(stop, shape[0])) for start, stop in ref.row_chunks()
              if start < shape[0]]
    return produce, pieces, direct is not None


def planned_stack(model: BaseModel, stacked: str, refs: list[TensorRef], outtype: QT,
                  delta: Delta | None = None) -> PlannedTensor:
    """One 3-D (experts, out, in) tensor from per-expert 2-D ones (kinds.EXPERT_STACK)."""
    name = model.map_name(stacked)[0]
    shape = (len(refs), *refs[0].shape)
    qtype = stored_type(name, shape, outtype)
    direct = direct_encoder(refs[0].dtype, qtype) if delta is None else None

    def produce() -> np.ndarray:
        raws = [read(model, r, 0, r.rows) for r in refs]
        if direct is not None:
            return stack_experts([direct(raw) for raw in raws])
        v = stack_experts([raw if r.dtype == "F16" and delta is None else to_f32(raw, r.dtype)
                           for r, raw in zip(refs, raws)])
        return v + delta(0, shape[0]) if delta is not None else v

    return PlannedTensor(name, shape, qtype, produce, stacked, None, direct is not None)


def vocab_rows(model: BaseModel) -> int:
    """Rows of token_embd llama.cpp keeps for Gemma 3: the tokenizer's real vocabulary."""
    if model._vocab_rows is None:
        model._vocab_rows = _count_vocab(model)
    return model._vocab_rows


def _count_vocab(model: BaseModel) -> int:
    if model.ckpt.file("tokenizer.model"):
        from sentencepiece import SentencePieceProcessor

        sp = SentencePieceProcessor(model_file=str(model.ckpt.path / "tokenizer.model"))
        return model.h.get("vocab_size") or sp.vocab_size()
    tok = load_tokenizer_json(model.ckpt.path)
    return tok.get_vocab_size(with_added_tokens=False) + len(tok.get_added_tokens_decoder())
