"""Qwen3-MoE: the validator's expert checks (stacked base experts, per-expert LoRA from target_parameters) pass a
clean artifact and name experts put out of order, in the base stack and in an adapter's lora_b."""

from __future__ import annotations

import numpy as np
from conftest import lorapack, record
from test_validate import patch_tensor


def _swap_experts(d: np.ndarray) -> np.ndarray:
    out = d.copy()
    out[[0, 1]] = d[[1, 0]]
    return out


def test_moe_clean_and_experts_out_of_order(samples, tmp_path):
    base, ads = samples / "qwen3moe" / "base", samples / "qwen3moe" / "adapters"
    args = (ads / "plain", ads / "experts")
    lorapack("build", base, *args, "-o", tmp_path / "art", "--layout", "separate")
    clean = lorapack("validate", tmp_path / "art", "--base", base, *args, check=False)
    print(clean.stdout.splitlines()[-1])
    assert clean.returncode == 0, clean.stdout
    patch_tensor(tmp_path / "art" / "base.gguf", "blk.0.ffn_up_exps.weight", _swap_experts)
    patch_tensor(tmp_path / "art" / "adapters" / "experts.gguf", "blk.1.ffn_down_exps.weight.lora_b", _swap_experts)
    bad = lorapack("validate", tmp_path / "art", "--base", base, *args, check=False)
    failed = [line for line in bad.stdout.splitlines() if line.startswith("failed:")]
    print("\n".join(failed))
    assert bad.returncode == 1
    assert any("blk.0.ffn_up_exps.weight" in f for f in failed)
    assert any("blk.1.ffn_down_exps.weight" in f and "experts" in f for f in failed)
    record("qwen3moe", "validate", "clean pass; experts out of order named in the base stack and in lora_b")


def test_expert_patterns_equal_peft(samples, tmp_path):
    """rank_pattern / alpha_pattern on expert parameters: each stored expert delta, scaled as llama.cpp scales
    it, equals PEFT's own merge (computed here from PEFT, not by the validator)."""
    import torch
    from gguf import GGUFReader, dequantize
    from reference_math import peft_model

    base, ad = samples / "qwen3moe" / "base", samples / "qwen3moe" / "adapters" / "experts_patterns"
    lorapack("build", base, ad, "-o", tmp_path / "s", "--layout", "separate", "--adapter-outtype", "f32")
    reader = GGUFReader(tmp_path / "s" / "adapters" / "experts_patterns.gguf")
    alpha = float(reader.fields["adapter.lora.alpha"].contents())
    tensors = {t.name: dequantize(t.data, t.tensor_type).reshape([int(x) for x in reversed(t.shape)])
               for t in reader.tensors}
    model = peft_model(base, ad)
    worst = 0.0
    for i, layer in enumerate(model.base_model.model.model.layers):
        wrapper = layer.mlp.experts
        for param, parts in (("down_proj", ["down"]), ("gate_up_proj", ["gate", "up"])):
            w = wrapper if wrapper.parameter_name == param else wrapper.base_layer
            with torch.no_grad():
                want = w.get_delta_weight("default").float().numpy()
            got = np.concatenate([alpha / tensors[f"blk.{i}.ffn_{p}_exps.weight.lora_b"].shape[-1]
                                  * tensors[f"blk.{i}.ffn_{p}_exps.weight.lora_b"]
                                  @ tensors[f"blk.{i}.ffn_{p}_exps.weight.lora_a"] for p in parts], axis=1)
            rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
            worst = max(worst, rel)
    print(f"expert deltas with rank/alpha patterns vs PEFT: worst relative error {worst:.1e} (tolerance 1e-5)")
    assert worst <= 1e-5
    ok = lorapack("validate", tmp_path / "s", "--base", base, ad, "--quiet", check=False)
    assert ok.returncode == 0, ok.stdout
