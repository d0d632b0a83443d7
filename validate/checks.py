"""The checks: structure, metadata, every base tensor, every adapted layer (reference matmul on probes).

Tensor verdicts come only from numeric comparison with the safetensors source or PEFT's forward; stored hashes
and lorapack's own metadata never decide them. Nothing here uses lorapack.convert.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifact import AdapterView, Artifact, dequantize
from .names import TOWERS, hf_module, norm_offset, permuted_heads, undo_rope_permutation
from .reference import PeftReference, Source
from .tolerances import Tol, for_type

ARCHS = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Phi3ForCausalLM": "phi3",
         "Gemma2ForCausalLM": "gemma2", "Gemma3ForCausalLM": "gemma3", "Gemma3ForConditionalGeneration": "gemma3",
         "GraniteForCausalLM": "granite", "Qwen2ForCausalLM": "qwen2", "Qwen3ForCausalLM": "qwen3",
         "SmolLM3ForCausalLM": "smollm3", "Mistral3ForConditionalGeneration": "mistral3"}
ROW_BLOCK = 16384


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


class Validator:
    def __init__(self, artifact: Artifact, source: Source, ref: PeftReference, adapters: dict[str, Path],
                 tols: dict[str, Tol], probes: int, seed: int):
        self.art, self.src, self.ref, self.tols = artifact, source, ref, tols
        self.adapter_dirs = adapters
        self.config = {**source.config, **source.config.get("text_config", {})}
        self.arch = next((ARCHS[a] for a in self.config.get("architectures", []) if a in ARCHS), "?")
        self.probes, self.seed = probes, seed
        self.checks: list[Check] = []

    def add(self, name: str, kind: str, value, tolerance, ok: bool) -> None:
        self.checks.append(Check(name, kind, value, str(tolerance), bool(ok)))

    def run(self) -> list[Check]:
        self.structure()
        if self.art.base is not None:
            self.metadata()
            self.base_tensors()
        for name, view in self.art.adapters.items():
            if name in self.ref.layers:
                self.adapter(name, view)
        if self.art.kind == "merged":
            self.merged()
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
        if self.art.base is not None:
            self.fingerprints()

    def fingerprints(self) -> None:
        """The base fingerprint, recomputed here from the safetensors files, must be what every file records."""
        want = source_fingerprint(self.src)
        files = [("base", self.art.base.typed("lorapack.base.fingerprint", "str"))]
        files += [(f"adapter {n}", v.typed("lorapack.base.fingerprint", "str")) for n, v in self.art.adapters.items()]
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
            f"{a}.block_count": c.get("num_hidden_layers"), f"{a}.embedding_length": c.get("hidden_size"),
            f"{a}.feed_forward_length": c.get("intermediate_size"), f"{a}.attention.head_count": heads,
            f"{a}.attention.head_count_kv": c.get("num_key_value_heads") or heads,
            f"{a}.context_length": c.get("max_position_embeddings"),
        }
        for key, want in expect.items():
            if want is not None:
                got = f.get(key)
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
        if a in ("gemma2", "gemma3") and (want := c.get("sliding_window")) and c.get("sliding_window_pattern") != 1:
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

    def base_tensors(self) -> None:
        adapted = self.merged_modules() if self.art.kind == "merged" else set()
        covered = set()
        for t in self.art.base_tensors():
            mapped = hf_module(self.arch, t.name)
            if mapped is None:
                continue
            module, suffix = mapped
            src_name = self.source_name(module, suffix)
            covered.add(src_name)
            if module in adapted or (t.name == "output.weight" and not self.src.has("lm_head.weight")):
                continue  # merged weights are checked against W + Σ s·ΔW below
            if src_name is None:
                self.add(t.name, "base", "no source tensor", "present", False)
                continue
            saved = [self.ref.saved[n] for n in self.merged_names if f"{module}.{suffix}" in self.ref.saved[n]]
            if saved:  # modules_to_save: the merged file carries the adapter's full weight
                self.compare_full(self.art.base, t, module, saved[-1][f"{module}.{suffix}"], "merged")
                continue
            self.compare_base(t, module, src_name)
        for name in self.src.names():
            if name not in covered and not name.endswith("rotary_emb.inv_freq") and not name.startswith(TOWERS):
                self.add(f"source tensor {name}", "structure", "missing from the artifact", "present", False)

    def source_name(self, module: str, suffix: str) -> str | None:
        name = f"{module}.{suffix}"
        if self.src.has(name):
            return self.src.stored(name)
        if name == "lm_head.weight" and self.src.has("model.embed_tokens.weight"):
            return self.src.stored("model.embed_tokens.weight")  # tied
        return None

    def compare_full(self, f, t, module: str, want: np.ndarray, kind: str) -> None:
        """A stored full weight against PEFT's (modules_to_save), transforms undone."""
        got = dequantize(f, t)
        if (heads := permuted_heads(self.arch, module, self.config)) is not None:
            got = undo_rope_permutation(got, heads)
        tol = for_type(self.tols, t.qtype.name)
        if got.shape[1:] != want.shape[1:]:
            self.add(t.name, kind, f"shape {list(got.shape)}", f"{list(want.shape)}", False)
            return
        rel, max_abs = rel_error(got, want[: got.shape[0]] + np.float32(norm_offset(self.arch, module)))
        self.add(t.name, kind, rel, tol, tol.ok(rel, max_abs))

    def compare_base(self, t, module: str, src_name: str) -> None:
        tol = for_type(self.tols, t.qtype.name)
        shape = self.src.shape(src_name)
        if t.shape[1:] != shape[1:] or t.shape[0] > shape[0]:
            self.add(t.name, "base", f"shape {list(t.shape)}", f"{list(shape)}", False)
            return
        heads, offset = permuted_heads(self.arch, module, self.config), norm_offset(self.arch, module)
        sq_diff = sq_ref = max_abs = 0.0
        for start in range(0, t.shape[0], ROW_BLOCK):  # embeddings are large: compare in row blocks
            rows = slice(start, min(start + ROW_BLOCK, t.shape[0]))
            got = dequantize(self.art.base, t, rows if heads is None else None)
            if heads is not None:
                got, rows = undo_rope_permutation(got, heads), slice(0, t.shape[0])
            want = self.src.get(src_name, rows) + np.float32(offset)
            diff = (got - want).ravel()
            # sums of squares through BLAS (float64 accumulators would double the memory traffic here)
            sq_diff += float(np.dot(diff, diff))
            sq_ref += float(np.dot(want.ravel(), want.ravel()))
            max_abs = max(max_abs, float(np.max(np.abs(diff))) if diff.size else 0.0)  # NaN sinks rel below
            if heads is not None:
                break
        rel = (sq_diff ** 0.5) / (sq_ref ** 0.5) if sq_ref else (0.0 if sq_diff == 0 else float("inf"))
        self.add(t.name, "base", rel, tol, tol.ok(rel, max_abs))

    # --- adapters ------------------------------------------------------------------------------------------------

    def adapter(self, name: str, view: AdapterView) -> None:
        self.adapter_header(name, view)
        layers, pairs = self.ref.layers[name], view.pairs()
        by_module = {}
        for stem, parts in pairs.items():
            mapped = hf_module(self.arch, stem)
            if mapped is None:
                self.add(f"{name}: {stem}.lora_a", "structure", "targets no base module", "known module", False)
                continue
            by_module[mapped[0]] = (stem, parts)
        for module in sorted(set(layers) - set(by_module)):
            self.add(f"{name}: {module}", "structure", "adapted in PEFT, absent from the artifact", "present", False)
        for module in sorted(set(by_module) - set(layers)):
            stem = by_module[module][0]
            self.add(f"{name}: {stem}.lora_a", "structure", "not adapted in PEFT", "absent", False)
        self.alpha(name, view, layers)
        self.saved_weights(name, view)
        for module in sorted(set(layers) & set(by_module)):
            stem, parts = by_module[module]
            if "lora_a" not in parts or "lora_b" not in parts:
                missing = "lora_b" if "lora_a" in parts else "lora_a"
                self.add(f"{name}: {stem}.{missing}", "structure", "missing (incomplete pair)", "present", False)
                continue
            self.contribution(name, view, module, stem, parts)

    def adapter_header(self, name: str, view: AdapterView) -> None:
        """What llama.cpp's adapter loader requires before it reads a tensor (llama_adapter_lora_init)."""
        for key, want in (("general.type", "adapter"), ("adapter.type", "lora"),
                          ("general.architecture", self.arch)):
            got = view.typed(key, "str")
            self.add(f"{name}: {key}", "metadata", got, want, got == want)

    def saved_weights(self, name: str, view: AdapterView) -> None:
        """modules_to_save weights carried by a combined file, against PEFT's."""
        saved = dict(self.ref.saved.get(name, {}))
        for t in view.full_tensors():
            mapped = hf_module(self.arch, t.name[len(view.tensor_prefix):])
            want = saved.pop(f"{mapped[0]}.{mapped[1]}", None) if mapped else None
            if want is None:
                self.add(f"{name}: {t.name}", "structure", "full weight PEFT does not replace", "absent", False)
            else:
                self.compare_full(view.file, t, mapped[0], want, "adapter")
        for weight in sorted(saved):
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
        alpha = view.typed("adapter.lora.alpha", "float") or 0.0
        rank = b.shape[1]
        scale = alpha / rank if alpha else 1.0  # llama.cpp's rule
        if (heads := permuted_heads(self.arch, module, self.config)) is not None:
            b = undo_rope_permutation(b, heads)
        x = self.inputs(name, module)
        if x.dtype.kind == "i":  # embedding: lora_a is stored (vocab, r), rows gathered by token id
            got = (a[x] @ b.T) * scale
        else:
            got = ((x @ a.T) @ b.T) * scale
        if "dora_m" in parts:
            got = self.dora(view, module, parts, x, got)
        want = self.ref.contribution(name, module, x)
        rel, max_abs = rel_error(got, want)
        worst = max((parts["lora_a"].qtype.name, parts["lora_b"].qtype.name), key=lambda q: for_type(self.tols, q).rtol)
        tol = for_type(self.tols, worst)
        self.add(f"{name}: {stem}.lora_a / {stem}.lora_b", "adapter", rel, tol, tol.ok(rel, max_abs))

    def dora(self, view: AdapterView, module: str, parts: dict, x: np.ndarray, lora_out: np.ndarray) -> np.ndarray:
        """DoRA: y = m/‖W + s·BA‖_row · (Wx + s·BAx); the contribution is y − Wx (W from the artifact's base)."""
        base_t = next(t for t in self.art.base_tensors() if hf_module(self.arch, t.name) == (module, "weight"))
        w = dequantize(self.art.base, base_t)
        a, b = dequantize(view.file, parts["lora_a"]), dequantize(view.file, parts["lora_b"])
        m = dequantize(view.file, parts["dora_m"]).reshape(-1, 1)
        if (heads := permuted_heads(self.arch, module, self.config)) is not None:  # all stored in GGUF row order
            w, b, m = (undo_rope_permutation(v, heads) for v in (w, b, m))
        m = m.reshape(-1)
        scale = (view.typed("adapter.lora.alpha", "float") or 1.0) / b.shape[1]
        norm = np.linalg.norm(w + scale * (b @ a), axis=1)
        base_out = x @ w.T
        return (m / norm - 1) * base_out + (m / norm) * lora_out

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
        return {m for n in self.merged_names for m in self.ref.layers.get(n, {})}

    def merged(self) -> None:
        """W'·x against W·x + Σ s·ΔW·x, and the adapters' part W'·x − W·x on its own."""
        tensors = {hf_module(self.arch, t.name): t for t in self.art.base_tensors()}
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
        w_art = dequantize(self.art.base, t)
        if (heads := permuted_heads(self.arch, module, self.config)) is not None:
            w_art = undo_rope_permutation(w_art, heads)
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


def source_fingerprint(src: Source) -> str:
    """The documented base fingerprint, recomputed from the safetensors files (docs/combined-format.md)."""
    lines = []
    for name in sorted(src.names()):
        digest = hashlib.sha256(src.raw(name)).hexdigest()
        lines.append(f"{name}|{src.dtype(name)}|{list(src.shape(name))}|{digest}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()
