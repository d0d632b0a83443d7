"""llama.cpp (llama-cpp-python) loads the separate layout; its logits with and without each adapter match the
PyTorch PEFT model. f32 weights, so the difference is llama.cpp's arithmetic, not storage rounding."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import lorapack, need, record
from reference_math import peft_model

ATOL = 5e-3  # max |Δlogit|; adapters move the logits by ~0.8-8, so a wrong adapter cannot pass
IDS = [1, 45, 67, 200, 13, 99, 300, 5, 77, 410]
CASES = [("llama", "plain"), ("llama", "embed"), ("llama", "trainer"), ("llama", "rslora"), ("llama", "patterns"),
         ("phi3", "plain"), ("phi3", "rslora"), ("gemma3", "plain"), ("qwen2", "plain"), ("qwen2", "alpha_pattern"),
         ("qwen3", "plain"), ("gemma3mm", "plain"),
         ("gemma2", "plain"), ("granite", "plain"), ("smollm3", "plain"),
         ("qwen3moe", "plain"), ("qwen3moe", "experts"),  # experts: llama.cpp's converter refuses them
         ("olmo2", "plain"), ("olmo3", "plain"), ("qwen35", "plain"), ("qwen35mm", "plain"), ("gemma4", "plain"),
         ("gemma4mm", "plain"),
         ("mistral3", "plain")]  # mistral3: llama.cpp's own LoRA converter writes the base model instead


def llama_cpp_logits(model: str, lora: str | None = None) -> np.ndarray:
    try:
        import llama_cpp
    except ImportError:
        need(False, "llama-cpp-python is not installed (pip install 'lorapack[llama]')")
    llm = llama_cpp.Llama(model_path=model, lora_path=lora, logits_all=True, n_ctx=64, n_threads=2,
                          verbose=False)
    llm.eval(IDS)
    return np.array(llm.scores[: len(IDS)], dtype=np.float32)


def torch_logits(base, adapter=None) -> np.ndarray:
    with torch.no_grad():
        return peft_model(base, adapter)(torch.tensor([IDS])).logits[0].float().numpy()


@pytest.mark.parametrize("arch,adapter", CASES)
def test_llama_cpp_matches_peft(samples, tmp_path, arch, adapter):
    base, ad = samples / arch / "base", samples / arch / "adapters" / adapter
    lorapack("build", base, ad, "-o", tmp_path / "s", "--layout", "separate", "--outtype", "f32",
             "--adapter-outtype", "f32")
    plain = llama_cpp_logits(str(tmp_path / "s" / "base.gguf"))
    tuned = llama_cpp_logits(str(tmp_path / "s" / "base.gguf"), str(tmp_path / "s" / "adapters" / f"{adapter}.gguf"))
    ref_plain, ref_tuned = torch_logits(base), torch_logits(base, ad)
    d_base, d_adapter = np.abs(plain - ref_plain).max(), np.abs(tuned - ref_tuned).max()
    effect = np.abs(ref_tuned - ref_plain).max()
    print(f"{arch}/{adapter}: base max|Δ| {d_base:.2e}, with adapter {d_adapter:.2e}, adapter effect {effect:.2f}"
          f" (tolerance {ATOL})")
    assert effect > 10 * ATOL, "the sample adapter must visibly change the logits"
    assert d_base <= ATOL and d_adapter <= min(ATOL, effect / 100)  # at most 1/100 of the adapter's own effect
    if adapter in ("plain", "experts"):  # every architecture's merged layout too
        lorapack("build", base, ad, "-o", tmp_path / "m.gguf", "--layout", "merged", "--outtype", "f32")
        d_merged = np.abs(llama_cpp_logits(str(tmp_path / "m.gguf")) - ref_tuned).max()
        print(f"{arch}/{adapter} merged: max|Δ| {d_merged:.2e}")
        assert d_merged <= min(ATOL, effect / 100)
        record(arch, "llama.cpp", f"{d_adapter:.1e} / {effect:.2f}" + (" (experts)" if adapter == "experts" else "")
               + f", merged {d_merged:.1e}")


@pytest.mark.parametrize("arch,adapter", [("gemma3", "embed"), ("llama", "patterns")])
def test_llama_cpp_runs_merged(samples, tmp_path, arch, adapter):
    """The merged layout of adapters beyond the plain ones test_llama_cpp_matches_peft merges: an embedding
    LoRA on a tied-embedding base (the way to run one), rank and alpha patterns."""
    base, ad = samples / arch / "base", samples / arch / "adapters" / adapter
    lorapack("build", base, ad, "-o", tmp_path / "m.gguf", "--layout", "merged", "--outtype", "f32")
    got, ref = llama_cpp_logits(str(tmp_path / "m.gguf")), torch_logits(base, ad)
    d = np.abs(got - ref).max()
    print(f"{arch}/{adapter} merged: max|Δ| {d:.2e} (tolerance {ATOL})")
    assert d <= ATOL


def test_llama_cpp_runs_alora_as_peft(samples, tmp_path):
    """An activated LoRA (PEFT's alora_invocation_tokens): llama.cpp evaluates the prompt up to the invocation
    without the adapter and the rest with it, in one KV cache, as llama-server does; before the invocation the
    logits equal the base model's, from it on PEFT's aLoRA model's. Combined and unpack carry the tokens; merged
    refuses the adapter."""
    import ctypes

    import llama_cpp

    base, ad = samples / "llama" / "base", samples / "llama" / "adapters" / "alora"
    tokens = json.loads((ad / "adapter_config.json").read_text())["alora_invocation_tokens"]
    ids, start = IDS[:5] + tokens + IDS[5:], 5
    lorapack("build", base, ad, "-o", tmp_path / "s", "--layout", "separate", "--outtype", "f32",
             "--adapter-outtype", "f32")
    llm = llama_cpp.Llama(model_path=str(tmp_path / "s" / "base.gguf"), logits_all=True, n_ctx=64, n_threads=2,
                          lora_path=str(tmp_path / "s" / "adapters" / "alora.gguf"), verbose=False)
    llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, None, 0, None)
    llm.eval(ids[:start])
    adapters = (llama_cpp.llama_adapter_lora_p_ctypes * 1)(llm._lora_adapter)
    llama_cpp.llama_set_adapters_lora(llm._ctx.ctx, adapters, 1, (ctypes.c_float * 1)(1.0))
    llm.eval(ids[start:])
    got = np.array(llm.scores[: len(ids)], dtype=np.float32)
    llm.close()
    with torch.no_grad():
        plain = peft_model(base)(torch.tensor([ids])).logits[0].numpy()
        tuned = peft_model(base, ad)(torch.tensor([ids])).logits[0].numpy()
    before, after = np.abs(got[:start] - plain[:start]).max(), np.abs(got[start:] - tuned[start:]).max()
    effect = np.abs(tuned[start:] - plain[start:]).max()
    print(f"llama/alora: before the invocation max|Δ| vs base {before:.2e}; from it vs PEFT {after:.2e}; "
          f"adapter effect {effect:.2f}; PEFT before the invocation vs base {np.abs(tuned - plain)[:start].max()}")
    assert np.array_equal(tuned[:start], plain[:start])  # PEFT: nothing before the invocation
    assert effect > 10 * ATOL and before <= ATOL and after <= min(ATOL, effect / 100)
    # combined carries the tokens, unpack gives the separate adapter back byte for byte; merged refuses aLoRA
    lorapack("build", base, ad, "-o", tmp_path / "c.gguf", "--outtype", "f32", "--adapter-outtype", "f32")
    lorapack("unpack", tmp_path / "c.gguf", "-o", tmp_path / "u")
    assert (tmp_path / "u" / "adapters" / "alora.gguf").read_bytes() == \
        (tmp_path / "s" / "adapters" / "alora.gguf").read_bytes()
    refused = lorapack("build", base, ad, "-o", tmp_path / "m.gguf", "--layout", "merged", check=False)
    assert refused.returncode == 2 and "aLoRA" in refused.stderr, refused.stderr
    record("llama", "llama.cpp", f"aLoRA {after:.1e} / {effect:.2f} (before the invocation {before:.1e})")
