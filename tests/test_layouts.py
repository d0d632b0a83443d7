"""Layouts: combined → unpack is byte-identical to separate; merged weights equal W + s·(α/r)·B·A computed
independently with PEFT; builds are deterministic; every file records the base fingerprint."""

from __future__ import annotations

import filecmp
import json

import numpy as np
import pytest
from conftest import lorapack
from gguf import GGUFReader
from reference_math import peft_deltas, rel_err, unpermute

from lorapack.formats.safetensors import read_header


def _tree(d):
    return sorted(p.relative_to(d) for p in d.rglob("*") if p.is_file())


@pytest.mark.parametrize("arch", ["llama", "gemma3"])
def test_unpack_equals_separate(samples, tmp_path, arch):
    base = samples / arch / "base"
    second = "embed" if arch == "llama" else "plain"  # gemma3's embed adapter cannot go separate (tied)
    ads = [f"x={samples / arch / 'adapters' / 'plain'}", f"embed={samples / arch / 'adapters' / second}"]
    lorapack("build", base, *ads, "-o", tmp_path / "c.gguf", "--outtype", "q8_0")
    lorapack("build", base, *ads, "-o", tmp_path / "sep", "--layout", "separate", "--outtype", "q8_0")
    lorapack("unpack", tmp_path / "c.gguf", "-o", tmp_path / "un")
    files = _tree(tmp_path / "sep")
    assert files == _tree(tmp_path / "un")
    assert sorted(p.name for p in (tmp_path / "sep" / "adapters").iterdir()) == ["embed.gguf", "x.gguf"]
    for rel in files:
        assert filecmp.cmp(tmp_path / "sep" / rel, tmp_path / "un" / rel, shallow=False), f"{rel} differs"


def test_builds_are_deterministic(samples, tmp_path):
    base, ad = samples / "qwen2" / "base", samples / "qwen2" / "adapters" / "plain"
    for out in ("a.gguf", "b.gguf"):
        lorapack("build", base, ad, "-o", tmp_path / out)
    assert filecmp.cmp(tmp_path / "a.gguf", tmp_path / "b.gguf", shallow=False)


def test_fingerprint_in_every_file_and_independent_of_outtype(samples, tmp_path):
    base, ad = samples / "phi3" / "base", samples / "phi3" / "adapters" / "plain"
    lorapack("build", base, ad, "-o", tmp_path / "f16", "--layout", "separate")
    lorapack("build", base, ad, "-o", tmp_path / "q8.gguf", "--layout", "merged", "--outtype", "q8_0")
    prints = set()
    for path in [tmp_path / "f16" / "base.gguf", tmp_path / "f16" / "adapters" / "plain.gguf", tmp_path / "q8.gguf"]:
        prints.add(str(GGUFReader(path).fields["lorapack.base.fingerprint"].contents()))
    assert len(prints) == 1


@pytest.mark.parametrize("arch,adapter,scale", [("llama", "patterns", 0.5), ("qwen2", "plain", 1.0),
                                               ("gemma3", "embed", 2.0)])
def test_merged_equals_independent_merge(samples, tmp_path, arch, adapter, scale):
    base, ad = samples / arch / "base", samples / arch / "adapters" / adapter
    lorapack("build", base, f"a={ad}", "-o", tmp_path / "m.gguf", "--layout", "merged", "--outtype", "f32",
             "--scale", f"a={scale}")
    merged = {t.name: np.asarray(t.data, dtype=np.float32) for t in GGUFReader(tmp_path / "m.gguf").tensors}
    src = read_header(base / "model.safetensors")
    cfg = json.loads((base / "config.json").read_text())
    gguf_names = {"model.embed_tokens": "token_embd.weight"}
    worst = 0.0
    for module, delta in peft_deltas(base, ad).items():
        name = gguf_names.get(module) or _gguf_name(module)
        expected = src[f"{module}.weight"].read_f32() + np.float32(scale) * delta
        got = merged[name]
        if arch == "llama" and name.split(".")[2] in ("attn_q", "attn_k"):
            heads = cfg["num_attention_heads"] if "attn_q" in name else cfg["num_key_value_heads"]
            got = unpermute(got, heads)
        if arch == "gemma3" and name == "token_embd.weight":
            expected = expected[: got.shape[0]]
        worst = max(worst, rel_err(got, expected))
    print(f"{arch}/{adapter} merged at scale {scale}: worst relative error {worst:.2e} (tolerance 1e-6)")
    assert worst <= 1e-6


def _gguf_name(module: str) -> str:
    _, _, bid, _, kind = module.split(".")
    kinds = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
    return f"blk.{bid}.{kinds[kind]}.weight"


def test_merged_dora_equals_peft_merge(samples, tmp_path):
    """DoRA baked in: W' = m/‖W + ΔW‖·(W + ΔW), against PEFT's own merge_and_unload."""
    import torch
    from reference_math import peft_model

    base, ad = samples / "llama" / "base", samples / "llama" / "adapters" / "dora"
    lorapack("build", base, ad, "-o", tmp_path / "m.gguf", "--layout", "merged", "--outtype", "f32")
    merged = {t.name: np.asarray(t.data, dtype=np.float32) for t in GGUFReader(tmp_path / "m.gguf").tensors}
    with torch.no_grad():
        ref = peft_model(base, ad).merge_and_unload().state_dict()
    worst = 0.0
    for bid in range(2):
        for kind, hf in (("attn_q", "q_proj"), ("attn_v", "v_proj")):
            got = merged[f"blk.{bid}.{kind}.weight"]
            got = unpermute(got, 4) if kind == "attn_q" else got
            worst = max(worst, rel_err(got, ref[f"model.layers.{bid}.self_attn.{hf}.weight"].numpy()))
    print(f"merged DoRA vs PEFT merge_and_unload: worst relative error {worst:.2e} (tolerance 1e-6)")
    assert worst <= 1e-6
