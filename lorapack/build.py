"""`lorapack build`: wire convert → pack for one request. Everything is checked before anything is written."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lorapack.convert.base import resolve
from lorapack.convert.checkpoint import load_checkpoint
from lorapack.convert.peft import load_adapter
from lorapack.errors import LorapackError
from lorapack.names import parse_adapter_arg
from lorapack.outputs import check_output, staged
from lorapack.pack.gguf_io import total_bytes, write_files
from lorapack.pack.layouts import adapters_only_plans, combined_plan, merged_plan, separate_plans, write_separate
from lorapack.pack.split import split_files
from lorapack.spec.plan import Plan
from lorapack.spec.types import ADAPTER_OUTTYPES, nbytes, parse_outtype


@dataclass
class BuildRequest:
    base: Path
    adapter_args: list[str]
    out: Path
    layout: str = "combined"
    outtype: str = "f16"
    adapter_outtype: str = "f16"
    scales: dict[str, float] = field(default_factory=dict)
    adapters_only: bool = False
    force: bool = False
    dry_run: bool = False
    split_max_size: int = 0  # bytes of tensor data per file of a split GGUF; 0: one file


def check_request(req: BuildRequest) -> list[tuple[str, Path]]:
    named = [parse_adapter_arg(a) for a in req.adapter_args]
    names = [n for n, _ in named]
    problems = []
    if dups := sorted({n for n in names if names.count(n) > 1}):
        problems.append(f"duplicate adapter names: {', '.join(dups)}")
    if req.scales and req.layout != "merged":
        problems.append("--scale applies to the merged layout only")
    if unknown := sorted(set(req.scales) - set(names)):
        problems.append(f"--scale names unknown adapters: {', '.join(unknown)}")
    if req.adapters_only and req.layout != "separate":
        problems.append("--adapters-only applies to the separate layout only")
    if req.layout == "merged" and not named:
        problems.append("the merged layout needs at least one adapter")
    if req.adapters_only and not named:
        problems.append("--adapters-only needs at least one adapter")
    if req.split_max_size and req.adapters_only:
        problems.append("--split-max-size splits the model file; --adapters-only writes adapter files only")
    if problems:
        raise LorapackError(*problems, hint="see lorapack build --help")
    inputs = (req.base, *(p for _, p in named))
    if req.adapters_only:  # DIR is the user's folder: only DIR/adapters/NAME.gguf are written, file by file
        if req.out.exists() and not req.out.is_dir():
            raise LorapackError(f"{req.out} is not a folder", hint="--adapters-only -o names the folder holding "
                                                                   "adapters/")
        if not Path(os.path.abspath(req.out)).parent.is_dir():
            raise LorapackError(f"output folder {req.out.parent} does not exist")
        for name, _ in named:
            if (req.out / "adapters").is_dir():
                check_output(req.out / "adapters" / f"{name}.gguf", req.force, "file", inputs)
    elif req.split_max_size and req.layout != "separate":  # the shards' names are known once planned
        if not Path(os.path.abspath(req.out)).parent.is_dir():
            raise LorapackError(f"output folder {req.out.parent} does not exist")
    else:
        check_output(req.out, req.force, "dir" if req.layout == "separate" else "file", inputs)
    return named


def run_build(req: BuildRequest, progress: Callable[[int], Callable[[int], None]]) -> list[str]:
    named = check_request(req)
    outtype = parse_outtype(req.outtype)
    adapter_outtype = parse_outtype(req.adapter_outtype, ADAPTER_OUTTYPES)
    model = resolve(load_checkpoint(req.base))
    if req.adapters_only:
        model.ckpt.start_fingerprint()  # no base is converted: hash the source now, in the background
    elif not req.dry_run:
        model.ckpt.stream_hashes()  # digests from the conversion's own reads; the files get it at their end
    adapters, problems = [], []
    for name, path in named:
        try:
            adapters.append(load_adapter(name, path, model))
        except LorapackError as e:
            problems += e.problems
    if problems:
        raise LorapackError(*problems, hint="nothing was written")
    notes = _notes(model)
    plans = _plans(req, model, adapters, outtype, adapter_outtype)
    if req.dry_run:
        return dry_run_report(req, plans) + notes
    check_space(req.out, plans)
    inputs = (req.base, *(a.path for a in adapters))
    if req.adapters_only:
        return _write_adapters_only(req, plans, progress) + notes
    if req.layout == "separate":
        with staged(req.out, req.force, "dir", inputs) as tmp:
            bar = progress(total_bytes(plans.values()))
            written = write_separate(tmp, {str(p.relative_to(req.out)): plan for p, plan in plans.items()},
                                     adapters, bar)
            bar.close()
        return [f"wrote {req.out}/ (separate layout)", "run it with:"] + [
            "  " + line.replace(str(tmp), str(req.out)) for line in written.notes] + notes
    _write_staged(req, plans, progress, inputs)
    first, n_tensors = next(iter(plans)), sum(len(p.tensors) for p in plans.values())
    lines = [f"wrote {first} ({req.layout} layout, {n_tensors} tensors"
             + (f", split in {len(plans)} files)" if len(plans) > 1 else ")")]
    if req.layout == "combined" and adapters:
        lines += ["llama.cpp loads models without extra tensors; to run it, unpack it first:",
                  f"  lorapack unpack {first} -o {req.out.with_suffix('')}-separate"]
    return lines + notes


def _plans(req: BuildRequest, model, adapters, outtype, adapter_outtype) -> dict[Path, Plan]:
    """Every file the request writes (its final path) → its plan; nothing is read or written yet. With
    --split-max-size the model file (not the adapter files, which llama.cpp reads whole) may become shards."""
    if req.adapters_only:
        return {req.out / "adapters" / f"{n}.gguf": p
                for n, p in adapters_only_plans(model, adapters, adapter_outtype).items()}
    if req.layout == "separate":
        plans = {req.out / rel: p for rel, p in separate_plans(model, adapters, outtype, adapter_outtype).items()}
        base = req.out / "base.gguf"
        return {**split_files(base, plans.pop(base), req.split_max_size), **plans}
    if req.layout == "combined":
        plan = combined_plan(model, adapters, outtype, adapter_outtype)
    else:
        plan = merged_plan(model, adapters, req.scales, outtype)
    return split_files(req.out, plan, req.split_max_size)


def file_bytes(plan: Plan) -> int:
    """The file's size, near enough for a disk check: tensor data, alignment, and the header's keys."""
    header = sum(len(kv.key) + 64 + _value_bytes(kv.value) for kv in plan.kv.values())
    # per tensor: its info (name, ≤4 dims, type, offset) and up to 31 bytes of alignment padding
    return total_bytes([plan]) + header + sum(len(t.name) + 96 for t in plan.tensors)


def _value_bytes(value) -> int:
    if isinstance(value, (list, tuple)):
        return sum(_value_bytes(v) + 8 for v in value)
    return len(value) if isinstance(value, (str, bytes)) else 8


def check_space(out: Path, plans: dict[Path, Plan]) -> None:
    """Refuse before writing when the outputs cannot fit on their file system (nothing is written)."""
    need = sum(file_bytes(p) for p in plans.values())
    where = Path(os.path.abspath(out))
    while not where.exists():
        where = where.parent
    free = shutil.disk_usage(where).free
    if need > free:
        raise LorapackError(f"the output needs about {_size(need)} but {where} has {_size(free)} free",
                            hint="free some space or write elsewhere (-o); nothing was written")


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def dry_run_report(req: BuildRequest, plans: dict[Path, Plan]) -> list[str]:
    """What would be written, file by file and tensor by tensor (--dry-run)."""
    lines = []
    for path, plan in plans.items():
        types = Counter(t.qtype.name for t in plan.tensors)
        lines.append(f"{path}: {req.layout} layout, {len(plan.tensors)} tensors, about {_size(file_bytes(plan))} "
                     f"({', '.join(f'{n} {q}' for q, n in sorted(types.items()))}), {len(plan.kv)} metadata keys")
        for t in plan.tensors:
            lines.append(f"  {t.name:<48} {t.qtype.name:<5} {str(list(t.shape)):<20} {_size(nbytes(t.shape, t.qtype))}")
    total = sum(file_bytes(p) for p in plans.values())
    return lines + [f"dry run: {len(plans)} file(s), about {_size(total)}; nothing was written"]


def _write_staged(req: BuildRequest, plans: dict[Path, Plan], progress, inputs: tuple[Path, ...] = ()) -> None:
    """Each file is staged on its own and placed only when all of them are complete (the shards of a split
    GGUF, the adapter files of --adapters-only). Every file is staged — and so checked — before any is written."""
    bar = progress(total_bytes(plans.values()))
    with contextlib.ExitStack() as stack:
        write_files({stack.enter_context(staged(path, req.force, "file", inputs)): plan
                     for path, plan in plans.items()}, bar)
    bar.close()


def _write_adapters_only(req: BuildRequest, plans: dict[Path, Plan], progress) -> list[str]:
    (req.out / "adapters").mkdir(parents=True, exist_ok=True)
    _write_staged(req, plans, progress)
    return [f"wrote {len(plans)} adapter file(s) in {req.out / 'adapters'}/"] + [
        f"  llama-server -m BASE.gguf --lora {path}" for path in plans]


def _notes(model) -> list[str]:
    if isinstance(model.ckpt.config.get("vision_config"), dict):
        return ["note: this base is multimodal; lorapack converts its text model. Images need llama.cpp's "
                "projector, written by convert_hf_to_gguf.py --mmproj"]
    return []
