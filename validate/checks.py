"""The checks: structure, metadata, every base tensor, every adapted layer (reference matmul on probes).

Tensor verdicts come only from numeric comparison with the safetensors source or PEFT's forward; stored hashes
and lorapack's own metadata never decide them. Nothing here uses lorapack.convert.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lorapack.formats.safetensors import to_f32
from lorapack.spec import keys, kinds, lora
from lorapack.spec.arch import spec_of

from . import experts as expert_checks
from .artifact import AdapterView, Artifact, dequantize
from .inverse import norm_offset, undo, undo_order, whole_tensor
from .names import TOWERS, Names
from .reference import PeftReference, Source
from .tolerances import Tol, for_type

BLOCK_VALUES = 1 << 20  # values per row block in the streamed comparisons: 4 MiB of float32, reused by malloc
WORKERS = min(2, os.cpu_count() or 1)  # numpy, hashlib and reads release the GIL: two tensors at a time


@dataclass
class Check:
    name: str
    kind: str  # structure | metadata | base | adapter | merged | end-to-end
    value: float | str | None
    tolerance: str
    ok: bool

    @property
    def severity(self) -> float:
        """How far past (or within) its tolerance: for sorting worst first."""
        if self.kind in ("metadata", "structure"):
            return 0.0 if self.ok else float("inf")
        try:
            return float(self.value) / float(self.tolerance.split(":")[0])
        except (TypeError, ValueError, ZeroDivisionError):
            return 0.0 if self.ok else float("inf")


def rel_error(got: np.ndarray, want: np.ndarray) -> tuple[float, float]:
    diff = got.astype(np.float64) - want
    denom = float(np.linalg.norm(want))
    rel = float(np.linalg.norm(diff)) / denom if denom else float(np.linalg.norm(diff) > 0) * float("inf")
    return rel, float(np.max(np.abs(diff))) if diff.size else 0.0


class ErrorSum:
    """‖got − want‖ / ‖want‖ and max |got − want|, summed over row blocks in float32 through BLAS (a float64
    copy of a whole tensor would cost more memory traffic than the comparison itself)."""

    def __init__(self):
        self.sq_diff = self.sq_ref = self.max_abs = 0.0

    @classmethod
    def of(cls, got: np.ndarray, want: np.ndarray) -> ErrorSum:
        """Two whole arrays of the same size, compared BLOCK_VALUES at a time."""
        error, g, w = cls(), got.reshape(-1), want.reshape(-1)
        for start in range(0, max(g.size, 1), BLOCK_VALUES):
            error.add(g[start:start + BLOCK_VALUES], w[start:start + BLOCK_VALUES])
        return error

    def add(self, got: np.ndarray, want: np.ndarray, scratch: bool = False) -> None:
        """`scratch`: got is a temporary of this comparison's own, overwritten with |got − want| (no allocation:
        fresh pages for every block cost more than the arithmetic)."""
        diff = np.subtract(got, want, out=got if scratch and got.dtype == np.float32 else None).ravel()
        w = want.ravel()
        np.abs(diff, out=diff)
        self.sq_diff += float(np.dot(diff, diff))
        self.sq_ref += float(np.dot(w, w))
        if diff.size:  # a NaN makes sq_diff NaN, which fails every tolerance
            self.max_abs = max(self.max_abs, float(np.max(diff)))

    @property
    def rel(self) -> float:
        if self.sq_ref:
            return (self.sq_diff ** 0.5) / (self.sq_ref ** 0.5)
        return 0.0 if self.sq_diff == 0 else float("inf")


class Validator:
    def __init__(self, artifact: Artifact, source: Source, ref: PeftReference, adapters: dict[str, Path],
                 tols: dict[str, Tol], probes: int, seed: int):
        self.art, self.src, self.ref, self.tols = artifact, source, ref, tols
        self.adapter_dirs = adapters
        self.config = {**source.config, **source.config.get("text_config", {})}
        spec = spec_of(source.config)
        self.arch = spec.name if spec is not None else "?"
        # the source's names place every base tensor; the PEFT model's module names join before the adapter
        # checks (run() adds them), so the base checks need not wait for the model to load
        self.names = Names(self.arch, self.config, set(source.names()))
        self.probes, self.seed = probes, seed
        self.checks: list[Check] = []
        self._sink = threading.local()
        self._pending: list = []  # (module, report index, contribution arguments)

    def add(self, name: str, kind: str, value, tolerance, ok: bool) -> None:
        sink = getattr(self._sink, "checks", self.checks)  # a worker's own list while it runs a job
        sink.append(Check(name, kind, value, str(tolerance), bool(ok)))

    def run(self) -> list[Check]:
        """The checks, in report order: structure, fingerprints, metadata, base tensors, adapters, merged. The
        base tensors stream on WORKERS threads while this one runs the adapter checks (PEFT's forward)."""
        self.structure()
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            try:
                return self._run(pool)
            except BaseException:  # an error or Ctrl-C: do not read on through the queued base tensors
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    def _run(self, pool: ThreadPoolExecutor) -> list[Check]:
        base = []
        if self.art.base is not None:
            at = len(self.checks)
            self.metadata()
            base = self.base_tensors(pool)
            at_base = len(self.checks)
        self.names.add_present(self.ref.module_names())
        for name, view in self.art.adapters.items():
            if name in self.ref.layers:
                self.adapter(name, view)
        try:
            for module, index, args in sorted(self._pending, key=lambda p: (p[0], p[1])):
                self.checks[index] = self._collect(self.contribution, *args)
        finally:  # placeholders of checks not reached (an unreadable tensor part way) are dropped
            self.checks[:] = [c for item in self.checks if item is not None
                              for c in (item if isinstance(item, list) else [item])]
        if self.art.kind == "merged":
            self.merged()
        if self.art.base is not None:
            self.checks[at_base:at_base] = [c for job in base for c in job.result()]
            # after the base checks, which recorded the source's digests as they read it
            self.checks[at:at] = self._collect(self.fingerprints, pool)
        return self.checks

    def probe(self, key: str, shape: tuple[int, ...]) -> np.ndarray:
        """Probe inputs, fixed by --seed and the tensor they are for (so reports repeat exactly)."""
        digest = int.from_bytes(hashlib.sha256(f"{self.seed}:{key}".encode()).digest()[:8], "little")
        return np.random.default_rng(digest).standard_normal(shape, dtype=np.float32)

    # --- structure ----------------------------------------------------------------------------------------------

    def structure(self) -> None:
        given, present = set(self.adapter_dirs), set(self.art.adapters)
        if self.art.kind == "merged":
            present = set(self.art.merged_scales)
        for n in sorted(given - present):
            self.add(f"adapter {n}", "structure", "missing from the artifact", "present", False)
        for n in sorted(present - given):
            self.add(f"adapter {n}", "structure", "in the artifact but not given", "given", False)

    def fingerprints(self, pool: ThreadPoolExecutor) -> None:
        """The base fingerprint, recomputed here from the safetensors files, must be what every file records."""
        want = source_fingerprint(self.src, pool)
        files = [("base", self.art.base.typed(keys.FINGERPRINT, "str"))]
        files += [(f"adapter {n}", v.typed(keys.FINGERPRINT, "str")) for n, v in self.art.adapters.items()]
        for label, got in files:
            self.add(f"{label}: lorapack.base.fingerprint", "structure", (got or "missing")[:16], want[:16],
                     got == want)

    # --- metadata ------------------------------------------------------------------------------------------------

    def metadata(self) -> None:
        f, c, a = self.art.base, self.config, self.arch
        self.add("general.architecture", "metadata", f.typed("general.architecture", "str"), a,
                 f.typed("general.architecture", "str") == a)
        heads = c.get("num_attention_heads")
        expect = {
            f"{a}.block_count": self.names.blocks or None, f"{a}.embedding_length": c.get("hidden_size"),
            f"{a}.feed_forward_length": c.get("intermediate_size"), f"{a}.attention.head_count": heads,
            f"{a}.attention.head_count_kv": c.get("num_key_value_heads") or heads,
            f"{a}.context_length": c.get("max_position_embeddings"),
        }
        for key, want in expect.items():
            if want is not None:
                got = f.get(key)
                if isinstance(got, list):  # per layer (Gemma 4's full layers have their own KV heads, MLP width)
                    ok = len(got) == self.names.blocks and want in got
                    self.add(key, "metadata", got, f"{self.names.blocks} values, {want} among them", ok)
                else:
                    self.add(key, "metadata", got, want, got == want)
        if (eps := c.get("rms_norm_eps")) is not None:
            got = f.typed(f"{a}.attention.layer_norm_rms_epsilon", "float")
            self.add(f"{a}.attention.layer_norm_rms_epsilon", "metadata", got, eps,
                     got is not None and abs(got - eps) <= 1e-6 * abs(eps))
        self.capping_metadata()
        self.tokenizer_metadata()

    def capping_metadata(self) -> None:
        """Soft-capping, multipliers and the sliding window change what the model computes: each must reach the
        file."""
        f, c, a = self.art.base, self.config, self.arch
        for cfg_key, key in (("attn_logit_softcapping", f"{a}.attn_logit_softcapping"),
                             ("final_logit_softcapping", f"{a}.final_logit_softcapping"),
                             ("attention_multiplier", f"{a}.attention.scale"),  # Granite's four multipliers
                             ("embedding_multiplier", f"{a}.embedding_scale"),
                             ("residual_multiplier", f"{a}.residual_scale"), ("logits_scaling", f"{a}.logit_scale")):
            if want := c.get(cfg_key):
                got = f.typed(key, "float")
                self.add(key, "metadata", got, want, got is not None and abs(got - want) <= 1e-6 * abs(want))
        windowed = self.names.spec is not None and self.names.spec.sliding_window
        if windowed and (want := c.get("sliding_window")) and c.get("sliding_window_pattern") != 1:
            got = f.typed(f"{a}.attention.sliding_window", "int")
            self.add(f"{a}.attention.sliding_window", "metadata", got, want, got == want)

    def tokenizer_metadata(self) -> None:
        f, c = self.art.base, self.config
        n_tokens = f.fields["tokenizer.ggml.tokens"].count if "tokenizer.ggml.tokens" in f.fields else 0
        if (vocab := c.get("vocab_size")) is not None:
            self.add("tokenizer.ggml.tokens", "metadata", n_tokens, vocab, n_tokens == vocab)
        for kind in ("bos", "eos"):
            key, cfg = f"tokenizer.ggml.{kind}_token_id", f"{kind}_token_id"
            if isinstance(want := c.get(cfg), int):
                self.add(key, "metadata", f.get(key), want, f.get(key) == want)

    # --- base tensors --------------------------------------------------------------------------------------------

    def base_tensors(self, pool: ThreadPoolExecutor) -> list[Future]:
        """Every base tensor against its source, on the pool's threads (each tensor streams in small blocks);
        the futures' check lists, in report order."""
        # only a merged file needs the PEFT model here: anything else submits its jobs while it still loads
        merged = self.merged_names if self.art.kind == "merged" else []
        adapted = self.merged_modules() if merged else set()
        covered, jobs = set(), []
        for t in self.art.base_tensors():
            if (part := expert_checks.target(self.names, t.name)) is not None:
                sources = expert_checks.source_names(part, t.shape[0] if len(t.shape) == 3 else 0)
                covered.update(self.src.stored(n) for n in sources if self.src.has(n))
                jobs.append((self.compare_stack, t, part))
                continue
            mapped = self.names.module(t.name)
            if mapped is None:
                continue
            module, suffix = mapped
            src_name = self.source_name(module, suffix)
            covered.add(src_name)
            if module in adapted or (t.name == "output.weight" and not self.src.has("lm_head.weight")):
                continue  # merged weights are checked against W + Σ s·ΔW below
            if src_name is None:
                jobs.append((self.add, t.name, "base", "no source tensor", "present", False))
                continue
            saved = [self.ref.saved[n] for n in merged if f"{module}.{suffix}" in self.ref.saved[n]]
            if saved:  # modules_to_save: the merged file carries the adapter's full weight
                jobs.append((self.compare_full, self.art.base, t, module, saved[-1][f"{module}.{suffix}"], "merged"))
                continue
            jobs.append((self.compare_base, t, module, src_name))
        for name in self.src.names():
            if name not in covered and not name.endswith("rotary_emb.inv_freq") and not name.startswith(TOWERS):
                jobs.append((self.add, f"source tensor {name}", "structure", "missing from the artifact", "present",
                             False))
        return [pool.submit(self._collect, *job) for job in jobs]

    def _collect(self, fn, *args) -> list[Check]:
        """The checks fn adds, kept apart (it runs on a worker thread) for the caller to append in order."""
        self._sink.checks = out = []
        try:
            fn(*args)
        finally:
            del self._sink.checks
        return out

    def source_name(self, module: str, suffix: str) -> str | None:
        name = f"{module}.{suffix}"
        if self.src.has(name):
            return self.src.stored(name)
        if name == "lm_head.weight" and self.src.has("model.embed_tokens.weight"):
            return self.src.stored("model.embed_tokens.weight")  # tied
        return None

    def compare_full(self, f, t, module: str, want: np.ndarray, kind: str) -> None:
        """A stored full weight against PEFT's (modules_to_save), transforms undone."""
        name = t.name.split(".", 2)[-1] if t.name.startswith("adapter.") else t.name  # the base tensor it replaces
        got = undo_order(self.names.spec, self.config, name, kinds.WEIGHT, dequantize(f, t))
        tol = for_type(self.tols, t.qtype.name)
        if got.shape[1:] != want.shape[1:]:
            self.add(t.name, kind, f"shape {list(got.shape)}", f"{list(want.shape)}", False)
            return
        rel, max_abs = rel_error(got, want[: got.shape[0]] + np.float32(norm_offset(self.names.spec, name)))
        self.add(t.name, kind, rel, tol, tol.ok(rel, max_abs))

    def compare_stack(self, t, part: tuple) -> None:
        """A stacked expert tensor (experts, out, in), expert by expert, against the checkpoint's own tensors
        (plus, in a merged file, Σ weight · PEFT's expert ΔW for its rows of the fused parameter)."""
        tol = for_type(self.tols, t.qtype.name)
        sources = expert_checks.source_names(part, t.shape[0] if len(t.shape) == 3 else 0)
        if not sources or not all(self.src.has(n) for n in sources):
            self.add(t.name, "base", "no source tensors", f"{part[0]}.N.{part[4]}.weight", False)
            return
        got = dequantize(self.art.base, t)
        want = np.stack([self.src.get(n) for n in sources])
        kind = "base"
        if self.art.kind == "merged" and got.shape == want.shape:
            for n in self.merged_names:
                if (w := expert_checks.wrappers(self.ref.layers.get(n, {})).get(part[:2])) is not None:
                    rows = slice(part[2] * want.shape[1], (part[2] + 1) * want.shape[1])
                    want = want + self.art.merged_scales[n] * self.ref.expert_delta(w[1], n)[:, rows]
                    kind = "merged"
        if got.shape != want.shape:
            self.add(t.name, kind, f"shape {list(got.shape)}", f"{list(want.shape)}", False)
        else:
            rel, max_abs = rel_error(got, want)
            self.add(t.name, kind, rel, tol, tol.ok(rel, max_abs))

    def compare_base(self, t, module: str, src_name: str) -> None:
        tol = for_type(self.tols, t.qtype.name)
        shape = self.src.shape(src_name)
        spec, role = self.names.spec, kinds.BIAS if t.name.endswith(".bias") else kinds.WEIGHT
        per_block = max(1, BLOCK_VALUES // max(1, int(np.prod(shape[1:]))))
        dtype = self.src.dtype(src_name)
        if whole_tensor(spec, self.config, t.name, role):  # small tensors (projections, conv kernels, A)
            try:
                got = undo(spec, self.config, t.name, role, dequantize(self.art.base, t))
            except ValueError:  # rows that do not split into the heads the config declares, an unsqueezed conv
                got = None
            if got is None or got.shape != shape:
                self.add(t.name, "base", f"shape {list(t.shape)}", f"{list(shape)}", False)
                return
            error = ErrorSum.of(got, self.src.read_into(src_name, np.empty(shape, np.float32)))
            self.add(t.name, "base", error.rel, tol, tol.ok(error.rel, error.max_abs))
            return
        if t.shape[1:] != shape[1:] or t.shape[0] > shape[0]:
            self.add(t.name, "base", f"shape {list(t.shape)}", f"{list(shape)}", False)
            return
        offset = np.float32(norm_offset(spec, t.name, role))
        error = ErrorSum()
        for rows, raw in self.src.blocks(src_name, per_block):
            if rows.start >= t.shape[0]:
                continue  # rows llama.cpp trims (unused vocabulary): hashed, not compared
            rows = slice(rows.start, min(rows.stop, t.shape[0]))
            want = to_f32(raw[: rows.stop - rows.start], dtype)
            error.add(dequantize(self.art.base, t, rows), want + offset if offset else want, scratch=True)
        self.add(t.name, "base", error.rel, tol, tol.ok(error.rel, error.max_abs))

    # --- adapters ------------------------------------------------------------------------------------------------

    def adapter(self, name: str, view: AdapterView) -> None:
        self.adapter_header(name, view)
        layers, pairs = self.ref.layers[name], dict(view.pairs())
        self.alpha(name, view, layers)
        layers = self.experts(name, view, pairs, layers)
        by_module = {}
        for stem, parts in pairs.items():
            mapped = self.names.module(stem)
            if mapped is None:
                self.add(f"{name}: {stem}.lora_a", "structure", "targets no base module", "known module", False)
                continue
            by_module[mapped[0]] = (stem, parts)
        for module in sorted(set(layers) - set(by_module)):
            self.add(f"{name}: {module}", "structure", "adapted in PEFT, absent from the artifact", "present", False)
        for module in sorted(set(by_module) - set(layers)):
            stem = by_module[module][0]
            self.add(f"{name}: {stem}.lora_a", "structure", "not adapted in PEFT", "absent", False)
        self.saved_weights(name, view)
        for module in sorted(set(layers) & set(by_module)):
            stem, parts = by_module[module]
            if "lora_a" not in parts or "lora_b" not in parts:
                missing = "lora_b" if "lora_a" in parts else "lora_a"
                self.add(f"{name}: {stem}.{missing}", "structure", "missing (incomplete pair)", "present", False)
                continue
            # run module by module after every adapter's structure checks (each layer's base weight is then
            # read once for all the adapters that adapt it); the check keeps this place in the report
            self._pending.append((module, len(self.checks), (name, view, module, stem, parts)))
            self.checks.append(None)

    def experts(self, name: str, view: AdapterView, pairs: dict, layers: dict) -> dict:
        """Stacked expert LoRA against PEFT's ParamWrappers; takes their stems out of `pairs` and returns the
        layers left for the per-module checks."""
        wrapped = expert_checks.wrappers(layers)
        if not wrapped:
            return layers
        groups: dict[tuple[str, str], list] = {}
        for stem in sorted(pairs):
            if (t := expert_checks.target(self.names, stem)) is not None:
                owner, param, index = t[:3]
                groups.setdefault((owner, param), []).append((index, stem, pairs.pop(stem)))
        alpha = view.typed("adapter.lora.alpha", "float") or 0.0
        for key in sorted(set(wrapped) - set(groups)):
            self.add(f"{name}: {key[0]}.{key[1]}", "structure", "adapted in PEFT, absent from the artifact",
                     "present", False)
        for key, items in sorted(groups.items()):
            label = f"{name}: {' + '.join(stem for _, stem, _ in items)} (experts)"
            if key not in wrapped:
                self.add(label, "structure", "not adapted in PEFT", "absent", False)
                continue
            parts, types = [], []
            for index, stem, p in items:
                a, b = dequantize(view.file, p["lora_a"]), dequantize(view.file, p["lora_b"])
                if not expert_checks.stacked_pair(a, b):
                    self.add(f"{name}: {stem}", "structure", f"lora_a {list(a.shape)}, lora_b {list(b.shape)}",
                             "(E, r, in) and (E, out, r)", False)
                    break
                parts.append((index, a, b, lora.llama_cpp_scaling(alpha, b.shape[-1])))
                types += [p["lora_a"].qtype.name, p["lora_b"].qtype.name]
            else:
                rel, max_abs = expert_checks.compare(parts, self.ref.expert_delta(wrapped[key][1], name))
                tol = for_type(self.tols, max(types, key=lambda q: for_type(self.tols, q).rtol))
                self.add(label, "adapter", rel, tol, tol.ok(rel, max_abs))
        modules = {m for m, _ in wrapped.values()}
        return {m: layer for m, layer in layers.items() if m not in modules}

    def adapter_header(self, name: str, view: AdapterView) -> None:
        """What llama.cpp's adapter loader requires before it reads a tensor (llama_adapter_lora_init)."""
        for key, want in (("general.type", "adapter"), ("adapter.type", "lora"),
                          ("general.architecture", self.arch)):
            got = view.typed(key, "str")
            self.add(f"{name}: {key}", "metadata", got, want, got == want)
        want = self.ref.invocation_tokens(name)  # aLoRA: llama-server activates the adapter after these
        got = view.typed("adapter.alora.invocation_tokens", "int[]")
        if want or got:
            self.add(f"{name}: adapter.alora.invocation_tokens", "metadata", got, want, list(got or []) == want)

    def saved_weights(self, name: str, view: AdapterView) -> None:
        """modules_to_save weights carried by a combined file, against PEFT's."""
        saved = self.ref.saved.get(name, {})
        left = set(saved)  # each weight is converted only when its tensor is compared
        for t in view.full_tensors():
            mapped = self.names.module(t.name[len(view.tensor_prefix):])
            weight = f"{mapped[0]}.{mapped[1]}" if mapped else None
            if weight not in left:
                self.add(f"{name}: {t.name}", "structure", "full weight PEFT does not replace", "absent", False)
            else:
                left.discard(weight)
                self.compare_full(view.file, t, mapped[0], saved[weight], "adapter")
        for weight in sorted(left):
            self.add(f"{name}: {weight}", "structure", "modules_to_save weight missing from the artifact",
                     "present", False)

    def alpha(self, name: str, view: AdapterView, layers: dict) -> None:
        """adapter.lora.alpha must make llama.cpp's alpha/rank reproduce PEFT's scaling (or be the config's
        lora_alpha when per-tensor factors are folded into lora_b)."""
        effective = {float(layer.scaling[name]) * layer.r[name] for layer in layers.values()}
        lora_alpha = float(self._peft_config(name).get("lora_alpha", 8))
        want = effective.pop() if len(effective) == 1 else lora_alpha
        got = view.typed("adapter.lora.alpha", "float")
        ok = got is not None and abs(got - want) <= 1e-5 * max(abs(want), 1.0)
        self.add(f"{name}: adapter.lora.alpha", "metadata", got, f"{want:.6g}", ok)

    def _peft_config(self, name: str) -> dict:
        cfg = self.ref.model.peft_config[name]
        return {"lora_alpha": cfg.lora_alpha}

    def contribution(self, name: str, view: AdapterView, module: str, stem: str, parts: dict) -> None:
        a = dequantize(view.file, parts["lora_a"])
        b = dequantize(view.file, parts["lora_b"])
        scale = lora.llama_cpp_scaling(view.typed("adapter.lora.alpha", "float") or 0.0, b.shape[-1])
        a = undo(self.names.spec, self.config, stem, kinds.LORA_A, a)  # stem: the base tensor's GGUF name
        b = undo(self.names.spec, self.config, stem, kinds.LORA_B, b)
        x = self.inputs(name, module)
        got = lora.contribution(x, a, b, scale)
        if "dora_m" in parts:
            got = self.dora(view, module, parts, x)
        want = self.ref.contribution(name, module, x)
        rel, max_abs = rel_error(got, want)
        worst = max((parts["lora_a"].qtype.name, parts["lora_b"].qtype.name), key=lambda q: for_type(self.tols, q).rtol)
        tol = for_type(self.tols, worst)
        self.add(f"{name}: {stem}.lora_a / {stem}.lora_b", "adapter", rel, tol, tol.ok(rel, max_abs))

    def dora(self, view: AdapterView, module: str, parts: dict, x: np.ndarray) -> np.ndarray:
        """DoRA: y = m/‖W + s·BA‖_row · (Wx + s·BAx); the contribution is y − Wx (W from the artifact's base)."""
        base_t = next(t for t in self.art.base_tensors() if self.names.module(t.name) == (module, "weight"))
        spec, c, gguf_name = self.names.spec, self.config, base_t.name
        w = undo(spec, c, gguf_name, kinds.WEIGHT, dequantize(self.art.base, base_t))
        a = undo(spec, c, gguf_name, kinds.LORA_A, dequantize(view.file, parts["lora_a"]))
        b = undo(spec, c, gguf_name, kinds.LORA_B, dequantize(view.file, parts["lora_b"]))
        m = undo(spec, c, gguf_name, kinds.MAGNITUDE, dequantize(view.file, parts["dora_m"]).reshape(-1))
        scale = (view.typed("adapter.lora.alpha", "float") or 1.0) / b.shape[1]
        return lora.dora_contribution(x, w, a, b, m, scale)

    def inputs(self, name: str, module: str) -> np.ndarray:
        layer = self.ref.layers[name][module] if name in self.ref.layers else None
        base = layer.base_layer if layer is not None else None
        if base is not None and hasattr(base, "num_embeddings"):
            digest = int.from_bytes(hashlib.sha256(f"{self.seed}:{module}".encode()).digest()[:8], "little")
            return np.random.default_rng(digest).integers(0, base.num_embeddings, self.probes)
        n_in = base.in_features if base is not None else None
        return self.probe(module, (self.probes, n_in))

    # --- merged --------------------------------------------------------------------------------------------------

    @property
    def merged_names(self) -> list[str]:
        """Adapters baked into this merged file (of those the reference holds)."""
        return [n for n in self.ref.names if n in self.art.merged_scales and n in self.adapter_dirs]

    def merged_modules(self) -> set[str]:
        """Adapted modules of the merged adapters (expert wrappers are checked with their stacks)."""
        out = set()
        for n in self.merged_names:
            layers = self.ref.layers.get(n, {})
            wrapped = {m for m, _ in expert_checks.wrappers(layers).values()}
            out |= set(layers) - wrapped
        return out

    def merged(self) -> None:
        """W'·x against W·x + Σ s·ΔW·x, and the adapters' part W'·x − W·x on its own."""
        tensors = {self.names.module(t.name): t for t in self.art.base_tensors()}
        for module in sorted(self.merged_modules()):
            t = tensors.get((module, "weight"))
            if module == "lm_head" and t is None:
                t = next((x for x in self.art.base_tensors() if x.name == "output.weight"), None)
            if t is None:
                self.add(f"{module}", "structure", "adapted weight missing from the merged file", "present", False)
                continue
            self.merged_tensor(module, t)

    def merged_tensor(self, module: str, t) -> None:
        src_name = self.source_name(module, "weight")
        w_src = self.src.get(src_name)
        w_art = undo_order(self.names.spec, self.config, t.name, kinds.WEIGHT, dequantize(self.art.base, t))
        names = [n for n in self.merged_names if module in self.ref.layers[n]]
        x = self.inputs(names[0], module)
        if x.dtype.kind == "i":
            y_art, y_src = w_art[x], w_src[: w_art.shape[0]][x]
        else:
            y_art, y_src = x @ w_art.T, x @ w_src.T
        delta = sum(self.art.merged_scales[n] * self.ref.contribution(n, module, x) for n in names)
        tol = for_type(self.tols, t.qtype.name)
        rel, max_abs = rel_error(y_art, y_src + delta)
        self.add(f"{t.name}", "merged", rel, tol, tol.ok(rel, max_abs))
        # the adapters' part alone; the stored type's rounding of W bounds what can be resolved
        scale = float(np.linalg.norm(y_src + delta) / max(np.linalg.norm(delta), 1e-30))
        part_tol = Tol(max(2e-3, 2 * tol.rtol * scale), tol.atol)
        rel, max_abs = rel_error(y_art - y_src, delta)
        self.add(f"{t.name} (adapter delta)", "merged", rel, part_tol, part_tol.ok(rel, max_abs))


def source_fingerprint(src: Source, pool: ThreadPoolExecutor) -> str:
    """The documented base fingerprint, recomputed from the safetensors files (docs/combined-format.md). Digests
    the base checks already recorded are reused; the rest are read here, on the pool's threads."""
    names = sorted(src.names())
    digests = list(pool.map(src.digest, names))
    lines = [f"{name}|{src.dtype(name)}|{list(src.shape(name))}|{digest}\n" for name, digest in zip(names, digests)]
    return hashlib.sha256("".join(lines).encode()).hexdigest()
