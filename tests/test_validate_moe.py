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
