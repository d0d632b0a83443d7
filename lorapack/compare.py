"""`lorapack compare`: the three layouts side by side — size, build time, validation error, and through llama.cpp
load time, prompt and decode speed, the cost of switching adapters, and runtime-vs-merged logit agreement."""

from __future__ import annotations

import ctypes
import importlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lorapack.build import BuildRequest, run_build
from lorapack.errors import LorapackError
from lorapack.outputs import staged
from lorapack.validate.reference import PeftReference, Source
from lorapack.validate.run import Request, check_artifact
from lorapack.validate.tolerances import parse

PROMPT, DECODE = 64, 32


@dataclass
class Layouts:
    combined: Path
    separate: Path
    merged: dict[str, Path]  # one merged model per adapter


def build_layouts(base: Path, named: list[tuple[str, Path]], out: Path, outtype: str, report: dict) -> Layouts:
    args = [f"{n}={p}" for n, p in named]
    lay = Layouts(out / "combined.gguf", out / "separate", {n: out / f"merged-{n}.gguf" for n, _ in named})
    jobs = [("combined", lay.combined, args, "combined"), ("separate", lay.separate, args, "separate")]
    jobs += [(f"merged-{n}", path, [f"{n}={p}"], "merged") for (n, p), path in zip(named, lay.merged.values())]
    for label, path, a, layout in jobs:
        t = time.perf_counter()
        run_build(BuildRequest(base, a, path, layout, outtype), lambda total: _NoBar())
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*.gguf"))
        report[label] = {"build_s": round(time.perf_counter() - t, 2), "files": len(files),
                         "bytes": sum(p.stat().st_size for p in files)}
    return lay


class _NoBar:
    def __call__(self, n):
        pass

    def close(self):
        pass


def validation_errors(base: Path, named: list[tuple[str, Path]], lay: Layouts, report: dict) -> None:
    source, tols = Source(base), parse(())
    ref = PeftReference(base, dict(named), weights=source)  # one layer's base weight at a time
    targets = [("combined", lay.combined, named), ("separate", lay.separate, named)]
    targets += [(f"merged-{n}", path, [(n, p)]) for (n, p), path in zip(named, lay.merged.values())]
    for label, path, adapters in targets:
        checks = check_artifact(Request(path, base, adapters), source, ref, tols)
        numeric = [c.value for c in checks if c.kind in ("adapter", "merged") and isinstance(c.value, float)]
        report[label]["validation"] = "pass" if all(c.ok for c in checks) else "fail"
        report[label]["worst_adapter_error"] = float(f"{max(numeric, default=0.0):.3g}")


# --- llama.cpp ------------------------------------------------------------------------------------------------

_QUIET = None


def _silence_llama_cpp() -> None:
    """llama.cpp logs from C (adapter buffer notes and the like); keep the report readable."""
    global _QUIET
    import llama_cpp

    if _QUIET is None:
        _QUIET = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(_QUIET, ctypes.c_void_p())


def _llama(path: Path, logits_all: bool = False):
    """A context as a server would use it (logits of the last position only), or one keeping every
    position's logits for the agreement check."""
    import llama_cpp

    _silence_llama_cpp()
    return llama_cpp.Llama(model_path=str(path), n_ctx=PROMPT + DECODE + 8, n_batch=PROMPT, n_threads=2,
                           logits_all=logits_all, verbose=False)


def _prompt_logits(model: Path, lora: Path | None, ids: list[int]) -> np.ndarray:
    llm = _llama(model, logits_all=True)
    if lora is not None:
        _use(llm, _adapter(llm, lora))
    llm.eval(ids)
    out = np.array(llm.scores[: len(ids)], dtype=np.float32)
    llm.close()
    return out


def _adapter(llm, path: Path):
    import llama_cpp

    handle = llama_cpp.llama_adapter_lora_init(llm._model.model, str(path).encode())
    if not handle:
        raise LorapackError(f"llama.cpp could not load adapter {path}")
    llm._stack.callback(lambda: llama_cpp.llama_adapter_lora_free(handle))
    return handle


def _use(llm, handle) -> float:
    """Switch the context to one adapter (or none); returns the seconds it took."""
    import llama_cpp

    t = time.perf_counter()
    n = 0 if handle is None else 1
    arr = (llama_cpp.llama_adapter_lora_p_ctypes * max(n, 1))(*([handle] if handle else [None]))
    scales = (ctypes.c_float * max(n, 1))(1.0)
    if llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, arr, n, scales):
        raise LorapackError("llama.cpp refused to set the adapter")
    return time.perf_counter() - t


def _speed(llm, ids: list[int]) -> dict:
    llm.reset()
    t = time.perf_counter()
    llm.eval(ids)
    prompt_s = time.perf_counter() - t
    tok = _next_token(llm)
    t = time.perf_counter()
    for _ in range(DECODE):  # greedy decoding, one token at a time
        llm.eval([tok])
        tok = _next_token(llm)
    decode_s = time.perf_counter() - t
    return {"prompt_tok_s": round(len(ids) / prompt_s, 1), "decode_tok_s": round(DECODE / decode_s, 1)}


def _next_token(llm) -> int:
    """Greedy pick from the last position's logits (the only ones a server-style context computes)."""
    return int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))))


def runtime(lay: Layouts, names: list[str], report: dict) -> dict:
    t = time.perf_counter()
    llm = _llama(lay.separate / "base.gguf")
    load_base = time.perf_counter() - t
    vocab = llm.n_vocab()
    ids = np.random.default_rng(0).integers(3, vocab, PROMPT).tolist()
    out = {"base alone": {"load_s": round(load_base, 3), **_speed(llm, ids)}}
    handles = {}
    for n in names:
        t = time.perf_counter()
        handles[n] = _adapter(llm, lay.separate / "adapters" / f"{n}.gguf")
        load = time.perf_counter() - t
        switch = _use(llm, handles[n])
        out[f"runtime {n}"] = {"load_s": round(load_base + load, 3), "switch_s": round(switch, 5), **_speed(llm, ids)}
    for n, path in lay.merged.items():
        t = time.perf_counter()
        merged = _llama(path)
        out[f"merged {n}"] = {"load_s": round(time.perf_counter() - t, 3), **_speed(merged, ids)}
        merged.close()
    llm.close()
    for n in names:  # the same adapter applied at run time and baked in must give the same logits
        a = _prompt_logits(lay.separate / "base.gguf", lay.separate / "adapters" / f"{n}.gguf", ids)
        b = _prompt_logits(lay.merged[n], None, ids)
        report[f"agreement {n}"] = {"max_abs_logit_diff": float(f"{np.max(np.abs(a - b)):.4g}"),
                                    "top1_agreement": float(np.mean(a.argmax(-1) == b.argmax(-1)))}
    return out


PNG_SKIPPED = "compare.png skipped: matplotlib is not installed (pip install 'lorapack[plot]')"


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def compare(base: Path, named: list[tuple[str, Path]], out: Path, outtype: str, with_runtime: bool,
            force: bool = False) -> dict:
    """Build, validate and (with_runtime) run the three layouts; writes OUT/compare.json, and OUT/compare.png
    where matplotlib is installed. The report's "png" is the chart's path, or None when it was skipped."""
    if not named:
        raise LorapackError("compare needs at least one adapter")
    # refuse or degrade before building anything: a missing optional package must not cost a whole run
    if with_runtime and not _importable("llama_cpp"):
        raise LorapackError("compare's llama.cpp measurements need llama-cpp-python",
                            hint="pip install 'lorapack[llama]', or pass --no-runtime")
    png = _importable("matplotlib")
    # everything is built in a staged folder that replaces OUT only when complete (lorapack.outputs)
    with staged(out, force, "dir", (base, *(p for _, p in named))) as tmp:
        return _compare(base, named, tmp, outtype, with_runtime, out / "compare.png" if png else None)


def _compare(base: Path, named: list[tuple[str, Path]], out: Path, outtype: str, with_runtime: bool,
             png: Path | None) -> dict:
    report: dict = {"outtype": outtype, "adapters": [n for n, _ in named], "layouts": {}}
    lay = build_layouts(base, named, out, outtype, report["layouts"])
    validation_errors(base, named, lay, report["layouts"])
    if with_runtime:
        report["runtime"] = runtime(lay, [n for n, _ in named], report)
        if len(named) > 1:
            r = report["runtime"]
            report["switching"] = {
                "runtime_switch_s": max(r[f"runtime {n}"]["switch_s"] for n, _ in named),
                "load_another_merged_s": max(r[f"merged {n}"]["load_s"] for n, _ in named)}
    report["png"] = None if png is None else str(png)
    (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    if png is not None:
        chart(report, out / png.name)
    return report


def written(report: dict, out: Path) -> str:
    """The CLI's closing line: what compare wrote, and a note when the chart was skipped."""
    if report.get("png"):
        return f"wrote {out / 'compare.json'} and {report['png']}"
    return f"wrote {out / 'compare.json'}; {PNG_SKIPPED}"


def table(report: dict) -> str:
    lines = [f"{'layout':18} {'files':>5} {'size':>10} {'build s':>8} {'validation':>10} {'worst err':>10}"]
    for name, v in report["layouts"].items():
        lines.append(f"{name:18} {v['files']:>5} {v['bytes'] / 2**20:>8.1f}Mi {v['build_s']:>8.2f} "
                     f"{v['validation']:>10} {v['worst_adapter_error']:>10.3g}")
    if "runtime" in report:
        lines += ["", f"{'llama.cpp':18} {'load s':>8} {'prompt t/s':>11} {'decode t/s':>11} {'switch s':>9}"]
        for name, v in report["runtime"].items():
            sw = f"{v['switch_s']:.5f}" if "switch_s" in v else "-"
            lines.append(f"{name:18} {v['load_s']:>8.3f} {v['prompt_tok_s']:>11.1f} {v['decode_tok_s']:>11.1f} {sw:>9}")
        for k, v in report.items():
            if k.startswith("agreement"):
                lines.append(f"{k} (runtime vs merged): max |Δlogit| {v['max_abs_logit_diff']:.3g}, "
                             f"top-1 agreement {v['top1_agreement']:.0%}")
        if s := report.get("switching"):
            lines.append(f"switching adapters: {s['runtime_switch_s'] * 1000:.2f} ms at run time vs "
                         f"{s['load_another_merged_s'] * 1000:.1f} ms to load another merged model")
    return "\n".join(lines)


def chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("size (MiB)", {k: v["bytes"] / 2**20 for k, v in report["layouts"].items()}),
              ("build (s)", {k: v["build_s"] for k, v in report["layouts"].items()})]
    if "runtime" in report:
        panels += [("prompt tokens/s", {k: v["prompt_tok_s"] for k, v in report["runtime"].items()}),
                   ("decode tokens/s", {k: v["decode_tok_s"] for k, v in report["runtime"].items()})]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4))
    for ax, (title, values) in zip(np.atleast_1d(axes), panels):
        ax.bar(range(len(values)), list(values.values()), color="tab:blue")
        ax.set_xticks(range(len(values)), list(values), rotation=30, ha="right", fontsize=8)
        ax.set_title(title)
    fig.suptitle(f"lorapack compare ({report['outtype']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
