"""Combined GGUF → the separate layout, byte for byte what `build --layout separate` writes."""

from __future__ import annotations

from pathlib import Path

from lorapack.errors import LorapackError
from lorapack.formats.gguf import SPLIT_KEYS, CorruptGGUF, GGUFFile, TensorInfo, adapter_names, read_model
from lorapack.spec import keys
from lorapack.spec.plan import KV, Plan, PlannedTensor

from .layouts import ADAPTER_NS, COMBINED, Written, write_folder


def unpack(path: Path, dest: Path, progress=None) -> Written:
    """A split combined GGUF (any of its shards) unpacks to one base.gguf."""
    f = read_model(path)
    if COMBINED + "adapters" not in f.fields:
        raise LorapackError(f"{path} is not a lorapack combined GGUF (no {COMBINED}adapters key)")
    names = adapter_names(f, COMBINED + "adapters")  # names become file names: the command line's rule
    for n in names:
        if not any(t.name.startswith(f"{ADAPTER_NS}{n}.") for t in f.tensors):
            raise CorruptGGUF(f"{path.name}: adapter {n} is listed but has no tensors")
    blockers = [b for n in names for b in f.typed(f"{COMBINED}{n}.{keys.SEPARATE_BLOCKERS}", "str[]", [])]
    if blockers:
        raise LorapackError(*blockers, hint="the separate layout cannot carry these; use the combined file "
                                            "as it is or build --layout merged")
    plans = {"base.gguf": _subplan(f, lambda k: not k.startswith(COMBINED) and k not in SPLIT_KEYS,
                                   lambda t: not t.startswith(ADAPTER_NS))}
    for n in names:
        ns, tns = f"{COMBINED}{n}.", f"{ADAPTER_NS}{n}."
        plans[f"adapters/{n}.gguf"] = _subplan(
            f, lambda k, ns=ns: k.startswith(ns) and k != ns + keys.SEPARATE_BLOCKERS,
            lambda t, tns=tns: t.startswith(tns), strip_kv=ns, strip_tensor=tns)
    alora = frozenset(n for n in names if f"{COMBINED}{n}.adapter.alora.invocation_tokens" in f.fields)
    return write_folder(dest, plans, names, progress, alora)


def _subplan(f: GGUFFile, keep_key, keep_tensor, strip_kv: str = "", strip_tensor: str = "") -> Plan:
    plan = Plan()
    for key, field in f.fields.items():
        if keep_key(key):
            plan.add(KV(key[len(strip_kv):], field.vtype, None, field.sub_type, raw=field.raw))
    for t in f.tensors:
        if keep_tensor(t.name):
            plan.tensors.append(_copy(f, t, t.name[len(strip_tensor):]))
    return plan


def _copy(f: GGUFFile, t: TensorInfo, name: str) -> PlannedTensor:
    return PlannedTensor(name, t.shape, t.qtype, lambda: f.read(t).reshape(-1).view("u1"), t.name, encoded=True,
                         check_finite=False)
