"""The three layouts over the same plans: combined (one file), separate (llama.cpp's base + adapter files),
merged (adapters baked into the base weights)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

from lorapack.convert.adapter_plan import adapter_plan
from lorapack.convert.base import BaseModel, base_plan, planned, trimmed_rows
from lorapack.convert.peft import Adapter, LoraModule
from lorapack.convert.transforms import expert_factors, forward
from lorapack.errors import LorapackError
from lorapack.spec import keys, kinds, lora
from lorapack.spec.plan import Later, Plan, PlannedTensor, array, string

from .gguf_io import write_files

COMBINED, ADAPTER_NS = keys.COMBINED, keys.ADAPTER_NS


@dataclass
class Written:
    paths: list[Path]
    notes: list[str]


def separate_blockers(adapter: Adapter, model: BaseModel) -> list[str]:
    """What llama.cpp's adapter format cannot carry, by module name."""
    out = []
    if dora := [m.module for m in adapter.modules if m.magnitude is not None]:
        out.append(f"adapter {adapter.name}: DoRA on {', '.join(dora)}")
    if adapter.full_tensors:
        out.append(f"adapter {adapter.name}: modules_to_save {', '.join(sorted(adapter.full_tensors))}")
    if tied(model):
        if any(m.module == "lm_head" for m in adapter.modules):
            out.append(f"adapter {adapter.name}: LoRA on lm_head, which is tied to the embeddings in the base")
        if any(m.embedding for m in adapter.modules):
            # llama.cpp reuses token_embd as the output matrix and would apply the LoRA there too (and abort)
            out.append(f"adapter {adapter.name}: LoRA on the embeddings of a base with tied embeddings")
    return out


def tied(model: BaseModel) -> bool:
    return model.checkpoint_name("lm_head.weight") not in model.ckpt.tensors


def with_fingerprint(plan: Plan, model: BaseModel) -> Plan:
    """The source fingerprint, filled in once the file's tensors are written (hashing overlaps converting)."""
    plan.add(string(keys.FINGERPRINT, Later(64, model.ckpt.fingerprint)))
    return plan


# --- separate ---------------------------------------------------------------------------------------------------

def adapters_only_plans(model: BaseModel, adapters: list[Adapter], adapter_outtype: QT) -> dict[str, Plan]:
    """adapter name → its llama.cpp adapter plan; refuses what llama.cpp's adapter format cannot carry."""
    if problems := [p for a in adapters for p in separate_blockers(a, model)]:
        raise LorapackError(*problems, hint="use --layout combined or --layout merged for these adapters")
    return {a.name: adapter_plan(a, model, adapter_outtype) for a in adapters}


def separate_plans(model: BaseModel, adapters: list[Adapter], outtype: QT, adapter_outtype: QT) -> dict[str, Plan]:
    """The separate layout's files, relative to its folder → their plans."""
    adapter_plans = adapters_only_plans(model, adapters, adapter_outtype)
    plans = {"base.gguf": with_fingerprint(base_plan(model, outtype), model)}
    plans.update({f"adapters/{n}.gguf": p for n, p in adapter_plans.items()})
    return plans


def write_separate(dest: Path, plans: dict[str, Plan], adapters: list[Adapter], progress=None) -> Written:
    alora = frozenset(a.name for a in adapters if a.invocation_tokens)
    return write_folder(dest, plans, [a.name for a in adapters], progress, alora)


def write_folder(dest: Path, plans: dict[str, Plan], names: list[str], progress=None,
                 alora: frozenset[str] = frozenset()) -> Written:
    """`plans`: file name relative to dest (base.gguf, or a split base's shards, then adapters/NAME.gguf)."""
    (dest / "adapters").mkdir(parents=True)
    write_files({dest / rel: plan for rel, plan in plans.items()}, progress)
    base = next((rel for rel in plans if not rel.startswith("adapters/")), None)
    if base is not None:
        shards = sum(not rel.startswith("adapters/") for rel in plans)
        (dest / "Modelfile").write_text(modelfile(names, alora, base, shards))
    return Written([dest / rel for rel in plans], run_lines(dest, names, base or "base.gguf"))


def modelfile(names: list[str], alora: frozenset[str] = frozenset(), base: str = "base.gguf", shards: int = 1) -> str:
    lines = ["# Ollama: ollama create NAME -f Modelfile", f"FROM ./{base}"]
    if shards > 1:  # Ollama has long read a model from one file only
        lines.insert(1, f"# the base is a split GGUF ({shards} files); if your Ollama cannot load it, join it "
                        f"with: llama-gguf-split --merge {base} base.gguf")
    plain = [n for n in names if n not in alora]
    lines += [f"ADAPTER ./adapters/{n}.gguf" for n in plain[:1]]
    lines += [f"# ADAPTER ./adapters/{n}.gguf  (Ollama applies one adapter per model)" for n in plain[1:]]
    lines += [f"# ADAPTER ./adapters/{n}.gguf  (an aLoRA: Ollama would apply it to every token; use llama-server)"
              for n in names if n in alora]
    return "\n".join(lines) + "\n"


def run_lines(dest: Path, names: list[str], base: str = "base.gguf") -> list[str]:
    """llama.cpp opens a split GGUF from its first shard."""
    loras = " ".join(f"--lora {dest / 'adapters' / n}.gguf" for n in names)
    return [f"llama-cli -m {dest / base} {loras}", f"llama-server -m {dest / base} {loras}"]


# --- combined ---------------------------------------------------------------------------------------------------

def combined_plan(model: BaseModel, adapters: list[Adapter], outtype: QT, adapter_outtype: QT) -> Plan:
    """The base plan, then every adapter's keys under lorapack.combined.<NAME>. and its tensors under
    adapter.<NAME>. — exactly what unpack needs to give back the separate layout byte for byte."""
    plan = with_fingerprint(base_plan(model, outtype), model)
    plan.add(array(keys.COMBINED_ADAPTERS, [a.name for a in adapters], VT.STRING))
    for a in adapters:
        sub = adapter_plan(a, model, adapter_outtype)
        ns = f"{COMBINED}{a.name}."
        plan.add(*(replace(kv, key=ns + kv.key) for kv in sub.kv.values()))
        plan.add(array(ns + keys.SEPARATE_BLOCKERS, separate_blockers(a, model), VT.STRING))
        plan.tensors += [replace(t, name=f"{ADAPTER_NS}{a.name}.{t.name}") for t in sub.tensors]
        plan.tensors += _extras(a, model, outtype, f"{ADAPTER_NS}{a.name}.")
    return plan


def _extras(a: Adapter, model: BaseModel, outtype: QT, prefix: str) -> list[PlannedTensor]:
    """DoRA magnitudes (F32, one per output row) and modules_to_save replacements (base transforms applied)."""
    out = []
    for m in a.modules:
        if m.magnitude is not None:  # one value per output row, in the GGUF weight's row order
            produce = lambda m=m: forward(model, m.base_name, kinds.MAGNITUDE, m.magnitude.read_f32())  # noqa: E731
            name = f"{prefix}{m.base_name}{keys.DORA_SUFFIX}"
            out.append(PlannedTensor(name, m.magnitude.shape, QT.F32, produce, m.module))
    n_vocab = trimmed_rows(model)
    for hf_name, ref in a.full_tensors.items():
        t = planned(model, model.map_name(hf_name)[0], hf_name, ref, outtype, n_vocab)
        out.append(replace(t, name=prefix + t.name))
    return out


# --- merged -----------------------------------------------------------------------------------------------------

def merged_plan(model: BaseModel, adapters: list[Adapter], weights: dict[str, float], outtype: QT) -> Plan:
    """W + Σ weight·scaling·B·A per targeted weight, computed in float32 from the sources and cast once."""
    if not adapters:
        raise LorapackError("the merged layout needs at least one adapter")
    if alora := [a.name for a in adapters if a.invocation_tokens]:
        raise LorapackError(f"adapter {', '.join(alora)}: an activated LoRA (aLoRA) applies only after its "
                            "invocation tokens; merged would apply it to every token",
                            hint="use --layout separate or combined (llama-server activates it at run time)")
    deltas, replaced = _deltas(model, adapters, weights)
    plan = with_fingerprint(base_plan(model, outtype, deltas), model)
    tensors = {t.source: i for i, t in enumerate(plan.tensors)}
    n_vocab = trimmed_rows(model)
    for hf_name, ref in replaced.items():
        plan.tensors[tensors[hf_name]] = planned(model, model.map_name(hf_name)[0], hf_name, ref, outtype, n_vocab,
                                                 deltas.get(hf_name))
    embd = model.embedding_name
    if tied(model) and ({embd, "lm_head.weight"} & (set(deltas) | set(replaced))):
        # tied embeddings, one side adapted: the head becomes its own, untied output.weight
        # (PEFT adapts or replaces the embedding module only; the head keeps the original tied weight)
        head = replaced.get("lm_head.weight", model.ckpt.tensors[embd])
        plan.tensors.append(planned(model, "output.weight", "lm_head.weight", head, outtype, n_vocab,
                                    deltas.get("lm_head.weight")))
    plan.add(array(keys.MERGED_ADAPTERS, [a.name for a in adapters], VT.STRING),
             array(keys.MERGED_WEIGHTS, [weights.get(a.name, 1.0) for a in adapters], VT.FLOAT32),
             array(keys.MERGED_ALPHAS, [a.lora_alpha for a in adapters], VT.FLOAT32),
             array(keys.MERGED_RANKS, [max(m.rank for m in a.modules) for a in adapters], VT.UINT32),
             array(keys.MERGED_SOURCE_SHA256,
                   [f"{a.name}:{k}:{v}" for a in adapters for k, v in sorted(a.file_hashes.items())], VT.STRING))
    return plan


def _deltas(model: BaseModel, adapters: list[Adapter], weights: dict[str, float]):
    terms: dict[str, list[tuple[LoraModule, float]]] = {}
    replaced = {}
    for a in adapters:
        weight = weights.get(a.name, 1.0)
        for hf_name, ref in a.full_tensors.items():
            if hf_name in replaced:
                raise LorapackError(f"two adapters replace {hf_name} (modules_to_save)")
            replaced[hf_name] = ref
        for m in a.modules:
            terms.setdefault(m.weight_name, []).append((m, weight))
    for name, t in terms.items():
        if len(t) > 1 and any(m.magnitude is not None for m, _ in t):
            raise LorapackError(f"{name}: a DoRA adapter cannot be merged together with another adapter on it",
                                hint="merge one of them, or use --layout combined")
    return {name: _delta_fn(t, model.ckpt.tensors.get(name)) for name, t in terms.items()}, replaced


def _delta_fn(terms: list[tuple[LoraModule, float]], base) -> Callable[[int, int], np.ndarray]:
    """Rows [start, stop) of Σ weight·scaling·B·A in HF orientation (the merge adds it before any transform)."""
    def delta(start: int, stop: int) -> np.ndarray:
        total = None
        for m, weight in terms:
            if m.experts:  # the whole (experts, out, in) stack
                d = lora.expert_delta(*expert_factors(m.read_a(), m.read_b(), m.experts))
            else:
                d = lora.delta_rows(m.read_a(), m.read_b(), start, stop, m.embedding)
            d *= np.float32(weight * m.scaling)
            total = d if total is None else total + d
        m = terms[0][0]
        if m.magnitude is not None:
            return lora.dora_merge(base.read_f32(start, stop), total, m.magnitude.read_f32()[start:stop])
        return total

    return delta
