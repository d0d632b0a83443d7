"""llama.cpp (llama-cpp-python) loads the separate layout; its logits with and without each adapter match the
PyTorch PEFT model. f32 weights, so the difference is llama.cpp's arithmetic, not storage rounding."""

from __future__ import annotations

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
         ("olmo2", "plain"), ("olmo3", "plain"),
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
    if adapter in ("plain", "experts"):
        record(arch, "llama.cpp", f"{d_adapter:.1e} / {effect:.2f}" + (" (experts)" if adapter == "experts" else ""))


@pytest.mark.parametrize("arch,adapter", [("gemma3", "embed"), ("llama", "patterns"), ("phi3", "plain"),
                                          ("qwen3moe", "experts")])
def test_llama_cpp_runs_merged(samples, tmp_path, arch, adapter):
    """The merged layout (here also the way to run an embedding LoRA on a tied-embedding base)."""
    base, ad = samples / arch / "base", samples / arch / "adapters" / adapter
    lorapack("build", base, ad, "-o", tmp_path / "m.gguf", "--layout", "merged", "--outtype", "f32")
    got, ref = llama_cpp_logits(str(tmp_path / "m.gguf")), torch_logits(base, ad)
    d = np.abs(got - ref).max()
    print(f"{arch}/{adapter} merged: max|Δ| {d:.2e} (tolerance {ATOL})")
    assert d <= ATOL
