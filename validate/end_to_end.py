"""--end-to-end: whole-model logits from the artifact against the PEFT model.

Two runtimes read the artifact: a PyTorch model rebuilt from the artifact's weights alone (config.json is the
only other input — the rebuild never opens the safetensors), and llama.cpp itself when llama-cpp-python is
installed. Each is compared with the unmerged PEFT model on a fixed prompt: max |Δlogit| relative to the largest
reference logit, and agreement of the top-1 token.
"""

from __future__ import annotations

import ctypes
import tempfile
from pathlib import Path

import numpy as np

from lorapack.formats.gguf import CorruptGGUF, base_file
from lorapack.spec import kinds, lora

from . import experts as expert_checks
from .artifact import Artifact, dequantize
from .checks import Check
from .inverse import undo
from .names import Names
from .reference import PeftReference
from .tolerances import Tol, for_type

PROMPT_LEN = 12
LLAMA_CPP_FLOOR = 2e-3  # relative to the largest logit; a wrong adapter moves logits by O(1)
TOP1 = 0.75  # share of positions whose top-1 token must agree


def prompt(vocab: int, seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(3, vocab, PROMPT_LEN).tolist()


def rebuild_logits(artifact: Artifact, config_dir: Path, adapter: str | None, ids: list[int]) -> np.ndarray:
    """Logits of a transformers model whose every weight comes from the artifact (adapter applied as W + s·B·A)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_dir, trust_remote_code=False)
    # a multimodal checkpoint: the artifact holds its text model, so rebuild that (text-only prompts compute the
    # same logits through either)
    config = config.get_text_config() if getattr(config, "vision_config", None) is not None else config
    tied = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = artifact_state(artifact, config.to_dict(), adapter, set(tied.state_dict()) | {"lm_head.weight"})
    model = tied
    if "lm_head.weight" in state and config.tie_word_embeddings:
        config.tie_word_embeddings = False
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.eval()
    missing, unexpected = model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise ValueError(f"artifact does not rebuild the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def artifact_state(artifact: Artifact, config: dict, adapter: str | None, present: set[str]
                   ) -> dict[str, np.ndarray]:
    """The model's state dict (names in `present`), every tensor from the artifact with its transforms undone."""
    config = {**config, **config.get("text_config", {})}
    names = Names(artifact.base.typed("general.architecture", "str"), config, present)
    state, stacks = {}, {}
    for t in artifact.base_tensors():
        if (part := expert_checks.target(names, t.name)) is not None:
            stacks.setdefault(part[:2], {})[part[2]] = dequantize(artifact.base, t)
            continue
        if (mapped := names.module(t.name)) is None:
            continue
        module, suffix = mapped
        role = kinds.WEIGHT if suffix == "weight" else kinds.BIAS
        w = undo(names.spec, config, t.name, role, dequantize(artifact.base, t))
        if module == "model.embed_tokens" and w.shape[0] < config["vocab_size"]:  # llama.cpp trims unused rows
            w = np.concatenate([w, np.zeros((config["vocab_size"] - w.shape[0], w.shape[1]), np.float32)])
        state[f"{module}.{suffix}"] = w
    for (owner, param), parts in stacks.items():  # transformers' fused (experts, out, in) parameters
        state[f"{owner}.{param}"] = np.concatenate([parts[i] for i in sorted(parts)], axis=1)
    if adapter is not None:
        _apply(artifact, names, config, adapter, state)
    return state


def _apply(artifact: Artifact, names: Names, config: dict, adapter: str, state: dict) -> None:
    view = artifact.adapters[adapter]
    alpha = view.typed("adapter.lora.alpha", "float") or 0.0
    deltas: dict[str, dict[int, np.ndarray]] = {}
    for stem, parts in view.pairs().items():
        if (part := expert_checks.target(names, stem)) is not None:
            a, b = dequantize(view.file, parts["lora_a"]), dequantize(view.file, parts["lora_b"])
            if not expert_checks.stacked_pair(a, b):
                raise CorruptGGUF(f"{stem}: expert lora_a {list(a.shape)} / lora_b {list(b.shape)} are not "
                                  "(E, r, in) / (E, out, r)")
            scale = np.float32(lora.llama_cpp_scaling(alpha, b.shape[-1]))
            deltas.setdefault(f"{part[0]}.{part[1]}", {})[part[2]] = scale * expert_checks.undo_stack(a, b)
            continue
        module, _ = names.module(stem)
        a = undo(names.spec, config, stem, kinds.LORA_A, dequantize(view.file, parts["lora_a"]))
        b = undo(names.spec, config, stem, kinds.LORA_B, dequantize(view.file, parts["lora_b"]))
        scale = lora.llama_cpp_scaling(alpha, b.shape[1])
        key = f"{module}.weight"
        if module == "lm_head" and key not in state:
            state[key] = state["model.embed_tokens.weight"].copy()
        delta = (a @ b.T) if module == "model.embed_tokens" else (b @ a)  # embeddings: lora_a is (vocab, r)
        state[key] = state[key] + np.float32(scale) * delta[: state[key].shape[0]]
    for key, parts in deltas.items():
        state[key] = state[key] + np.concatenate([parts[i] for i in sorted(parts)], axis=1)


def llama_cpp_logits(artifact: Artifact, adapter: str | None, ids: list[int], start: int | None = None
                     ) -> np.ndarray | None:
    """llama.cpp's logits for `ids`; with `start` (aLoRA), the tokens before it are evaluated without the
    adapter and the rest with it, in one KV cache, as llama-server runs an activated LoRA."""
    try:
        import llama_cpp
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        model, lora = _runnable(artifact, adapter, Path(tmp))
        llm = llama_cpp.Llama(model_path=str(model), lora_path=str(lora) if lora else None, logits_all=True,
                              n_ctx=max(64, len(ids) + 8), n_threads=2, verbose=False)
        if start is None:
            llm.eval(ids)
        else:
            llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, None, 0, None)
            llm.eval(ids[:start])
            adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(llm._lora_adapter)
            llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
            llm.eval(ids[start:])
        out = np.array(llm.scores[: len(ids)], dtype=np.float32)
        llm.close()
        return out


def _runnable(artifact: Artifact, adapter: str | None, tmp: Path) -> tuple[Path, Path | None]:
    if artifact.kind == "merged":
        return artifact.path, None
    if artifact.kind == "separate":
        return base_file(artifact.path), (artifact.path / "adapters" / f"{adapter}.gguf") if adapter else None
    from lorapack.pack.unpack import unpack  # combined: llama.cpp runs the separate layout it unpacks to

    unpack(artifact.path, tmp / "sep")
    return tmp / "sep" / "base.gguf", (tmp / "sep" / "adapters" / f"{adapter}.gguf") if adapter else None


def end_to_end(artifact: Artifact, ref: PeftReference, config_dir: Path, tols: dict[str, Tol], seed: int
               ) -> list[Check]:
    if artifact.base is None:
        return [Check("end-to-end", "end-to-end", "no base in the artifact", "base.gguf", False)]
    vocab = artifact.base.fields["tokenizer.ggml.tokens"].count
    ids = prompt(vocab, seed)
    base_types = [t.qtype.name for t in artifact.base_tensors()]
    checks = []
    variants = [None, *artifact.adapters] if artifact.kind != "merged" else ["(merged)"]
    for adapter in variants:
        # the adapter's own storage rounds too (f16 lora_a/lora_b under an f32 base)
        view = artifact.adapters.get(adapter) if adapter else None
        types = base_types + ([p.qtype.name for parts in view.pairs().values() for p in parts.values()]
                              if view is not None else [])
        worst = max(types, key=lambda q: for_type(tols, q).rtol)
        tol = Tol(max(1e-4, 20 * for_type(tols, worst).rtol))  # logits gather the rounding of every layer
        invocation = ref.invocation_tokens(adapter) if view is not None else []
        if invocation:
            checks += _alora(artifact, ref, adapter, ids, invocation, tol)
            continue
        want = _reference(ref, artifact, adapter, ids)
        label = adapter or "base"
        runs = {"pytorch": lambda a=adapter: rebuild_logits(artifact, config_dir, None if a == "(merged)" else a, ids),
                "llama.cpp": lambda a=adapter: llama_cpp_logits(artifact, None if a == "(merged)" else a, ids)}
        for runtime, run in runs.items():
            checks += _compare(runtime, label, run, want, tol)
    return checks


def _compare(runtime: str, label: str, run, want: np.ndarray, tol: Tol) -> list[Check]:
    try:
        got = run()
    except ValueError as e:  # llama-cpp-python: "Failed to load model from file"
        if runtime != "llama.cpp":
            raise
        return [Check(f"{runtime} logits, {label}", "end-to-end", f"does not load ({e})"[:120], "loads", False)]
    return [] if got is None else _logit_checks(runtime, label, got, want, tol)


def _logit_checks(runtime: str, label: str, got: np.ndarray, want: np.ndarray, tol: Tol,
                  top1: bool = True) -> list[Check]:
    rel = float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))
    agree = float(np.mean(got.argmax(-1) == want.argmax(-1)))
    # llama.cpp keeps its KV cache in F16 whatever the weights: ~5e-4 of the logits even for F32 weights
    t = Tol(max(tol.rtol, LLAMA_CPP_FLOOR)) if runtime == "llama.cpp" else tol
    out = [Check(f"{runtime} logits, {label}", "end-to-end", rel, str(t), t.ok(rel, rel))]
    if top1:
        out.append(Check(f"{runtime} top-1 agreement, {label}", "end-to-end", agree, f">={TOP1}", agree >= TOP1))
    return out


def _alora(artifact: Artifact, ref: PeftReference, adapter: str, ids: list[int], invocation: list[int],
           tol: Tol) -> list[Check]:
    """An activated LoRA over a prompt holding its invocation tokens: before them the logits are the base's,
    from them on PEFT's (which applies the adapter from the invocation's first token). Only llama.cpp runs it
    this way; the PyTorch rebuild would apply the adapter everywhere, so it is not run for aLoRA."""
    start = len(ids) // 2
    ids = ids[:start] + invocation + ids[start:]
    label = f"{adapter}, from its invocation tokens (vs PEFT)"
    try:
        got = llama_cpp_logits(artifact, adapter, ids, start)
    except ValueError as e:
        return [Check(f"llama.cpp logits, {label}", "end-to-end", f"does not load ({e})"[:120], "loads", False)]
    if got is None:
        return []
    base, tuned = ref.logits(ids, None), ref.logits(ids, adapter)
    return (_logit_checks("llama.cpp", f"{adapter}, before its invocation tokens (vs base)", got[:start],
                          base[:start], tol, top1=False)
            + _logit_checks("llama.cpp", label, got[start:], tuned[start:], tol))


def _reference(ref: PeftReference, artifact: Artifact, adapter: str | None, ids: list[int]) -> np.ndarray:
    if adapter != "(merged)":
        return ref.logits(ids, adapter)
    return ref.logits_combined(ids, artifact.merged_scales)
