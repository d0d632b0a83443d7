"""`lorapack build`: wire convert → pack for one request. Everything is checked before anything is written."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from lorapack.convert.base import resolve
from lorapack.convert.checkpoint import load_checkpoint
from lorapack.convert.peft import load_adapter
from lorapack.errors import LorapackError
from lorapack.names import parse_adapter_arg
from lorapack.outputs import check_output, staged
from lorapack.pack.gguf_io import total_bytes, write_plan
from lorapack.pack.layouts import adapters_only_plans, combined_plan, merged_plan, write_separate
from lorapack.spec.types import ADAPTER_OUTTYPES, parse_outtype


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
    else:
        check_output(req.out, req.force, "dir" if req.layout == "separate" else "file", inputs)
    return named


def run_build(req: BuildRequest, progress: Callable[[int], Callable[[int], None]]) -> list[str]:
    named = check_request(req)
    outtype = parse_outtype(req.outtype)
    adapter_outtype = parse_outtype(req.adapter_outtype, ADAPTER_OUTTYPES)
    model = resolve(load_checkpoint(req.base))
    model.ckpt.start_fingerprint()
    adapters, problems = [], []
    for name, path in named:
        try:
            adapters.append(load_adapter(name, path, model))
        except LorapackError as e:
            problems += e.problems
    if problems:
        raise LorapackError(*problems, hint="nothing was written")
    notes = _notes(model)
    if req.adapters_only:
        return _write_adapters_only(req, model, adapters, adapter_outtype, progress) + notes
    if req.layout == "separate":
        with staged(req.out, req.force, "dir", (req.base, *(a.path for a in adapters))) as tmp:
            bar = progress(0)
            written = write_separate(tmp, model, adapters, outtype, adapter_outtype, bar)
            bar.close()
        return [f"wrote {req.out}/ (separate layout)", "run it with:"] + [
            "  " + line.replace(str(tmp), str(req.out)) for line in written.notes] + notes
    plan = (combined_plan(model, adapters, outtype, adapter_outtype) if req.layout == "combined"
            else merged_plan(model, adapters, req.scales, outtype))
    with staged(req.out, req.force, "file", (req.base, *(a.path for a in adapters))) as tmp:
        bar = progress(total_bytes([plan]))
        write_plan(tmp, plan, bar)
        bar.close()
    lines = [f"wrote {req.out} ({req.layout} layout, {len(plan.tensors)} tensors)"]
    if req.layout == "combined" and adapters:
        lines += ["llama.cpp loads models without extra tensors; to run it, unpack it first:",
                  f"  lorapack unpack {req.out} -o {req.out.with_suffix('')}-separate"]
    return lines + notes


def _write_adapters_only(req: BuildRequest, model, adapters, adapter_outtype, progress) -> list[str]:
    """Each DIR/adapters/NAME.gguf is staged on its own and placed only when all of them are complete."""
    plans = adapters_only_plans(model, adapters, adapter_outtype)
    (req.out / "adapters").mkdir(parents=True, exist_ok=True)
    bar = progress(total_bytes(plans.values()))
    with contextlib.ExitStack() as stack:
        for name, plan in plans.items():
            tmp = stack.enter_context(staged(req.out / "adapters" / f"{name}.gguf", req.force))
            write_plan(tmp, plan, bar)
    bar.close()
    return [f"wrote {len(plans)} adapter file(s) in {req.out / 'adapters'}/"] + [
        f"  llama-server -m BASE.gguf --lora {req.out / 'adapters' / name}.gguf" for name in plans]


def _notes(model) -> list[str]:
    if isinstance(model.ckpt.config.get("vision_config"), dict):
        return ["note: this base is multimodal; lorapack converts its text model. Images need llama.cpp's "
                "projector, written by convert_hf_to_gguf.py --mmproj"]
    return []
