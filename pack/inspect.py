"""`lorapack inspect`: a summary of a GGUF file or a separate-layout folder."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from lorapack.errors import LorapackError, clean
from lorapack.formats.gguf import adapter_names, base_file, read_model
from lorapack.spec import keys

from .layouts import ADAPTER_NS, COMBINED


def describe_file(path: Path) -> dict:
    f = read_model(path)
    adapters = adapter_names(f, keys.COMBINED_ADAPTERS)
    base_tensors = [t for t in f.tensors if not t.name.startswith(ADAPTER_NS)]
    info = {
        "path": str(path),
        "architecture": f.typed("general.architecture", "str"),
        "type": f.typed("general.type", "str"),
        "tensors": len(f.tensors),
        "bytes": sum(p.stat().st_size for p in f.files),
        "tensor_types": dict(Counter(t.qtype.name for t in base_tensors)),
        "base_fingerprint": f.typed(keys.FINGERPRINT, "str"),
    }
    if f.shards:
        info["split"] = [str(p) for p in f.shards]
    if info["type"] == "adapter":
        info["adapter"] = _adapter(lambda k, kind: f.typed(k, kind), f.tensors)
    if adapters:
        info["layout"] = "combined"
        info["adapters"] = {n: _adapter(lambda k, kind, n=n: f.typed(f"{COMBINED}{n}.{k}", kind),
                                        [t for t in f.tensors if t.name.startswith(f"{ADAPTER_NS}{n}.")])
                            for n in adapters}
    elif keys.MERGED_ADAPTERS in f.fields:
        info["layout"] = "merged"
        info["merged"] = dict(zip(adapter_names(f, keys.MERGED_ADAPTERS),
                                  f.typed(keys.MERGED_WEIGHTS, "float[]", [])))
    return info


def _adapter(get, tensors) -> dict:
    """`get(key, kind)`: the typed value (lorapack.formats.gguf.GGUFFile.typed) under the adapter's namespace."""
    return {"name": get(keys.ADAPTER_NAME, "str"), "alpha": get("adapter.lora.alpha", "float"),
            "rank": get(keys.ADAPTER_RANK, "int"), "targets": get(keys.ADAPTER_TARGETS, "str[]"),
            "tensors": len(tensors), "tensor_types": dict(Counter(t.qtype.name for t in tensors)),
            "base_fingerprint": get(keys.FINGERPRINT, "str")}


def describe(target: Path) -> dict:
    if target.is_dir():
        base = base_file(target)
        files = [base] if base.exists() else []
        files += sorted((target / "adapters").glob("*.gguf")) if (target / "adapters").is_dir() else []
        if not files:
            raise LorapackError(f"{target} holds neither base.gguf nor adapters/*.gguf",
                                hint="inspect a .gguf file or a separate-layout folder")
        infos = [describe_file(p) for p in files]
        prints = {i["base_fingerprint"] for i in infos}
        return {"layout": "separate", "files": infos, "fingerprints_consistent": len(prints) == 1}
    return describe_file(target)


def render(info: dict, indent: str = "") -> str:
    lines = []
    for k, v in info.items():
        if isinstance(v, dict):
            lines.append(f"{indent}{clean(k)}:")
            lines.append(render(v, indent + "  "))
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                lines.append(f"{indent}- {clean(item.get('path', ''))}")
                lines.append(render({x: y for x, y in item.items() if x != "path"}, indent + "    "))
        else:
            lines.append(f"{indent}{clean(k)}: {clean(v)}")
    return "\n".join(lines)
