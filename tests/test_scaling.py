"""rsLoRA, rank_pattern and alpha_pattern adapters: the delta llama.cpp applies (adapter.lora.alpha / rank of
each tensor, times lora_b·lora_a) equals PEFT's within 1e-4 relative, tensor by tensor."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import lorapack
from gguf import GGUFReader
from reference_math import peft_deltas, rel_err, unpermute

TOL = 1e-4
GGUF_TO_HF = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
              "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
              "ffn_down": "mlp.down_proj", "attn_qkv": "self_attn.qkv_proj"}
CASES = [("llama", "rslora"), ("llama", "patterns"), ("qwen2", "alpha_pattern"), ("phi3", "rslora"),
         ("llama", "plain"), ("llama", "trainer"), ("llama", "one_layer")]


def llama_cpp_deltas(path) -> dict[str, np.ndarray]:
    r = GGUFReader(path)
    alpha = float(r.fields["adapter.lora.alpha"].contents())
    t = {x.name: np.asarray(x.data, dtype=np.float32) for x in r.tensors}  # numpy order
    out = {}
    for name in t:
        if name.endswith(".lora_a"):
            stem = name[: -len(".lora_a")]
            a, b = t[name], t[stem + ".lora_b"]  # a (r, in), b (out, r)
            rank = b.shape[1]  # llama.cpp: ne[0] of lora_b
            out[stem] = (alpha / rank) * (b @ a)
    return out


@pytest.mark.parametrize("arch,adapter", CASES)
def test_effective_delta_matches_peft(samples, tmp_path, arch, adapter):
    base, ad = samples / arch / "base", samples / arch / "adapters" / adapter
    lorapack("build", base, ad, "-o", tmp_path / "s", "--layout", "separate", "--adapters-only",
             "--adapter-outtype", "f32")
    ours = llama_cpp_deltas(str(tmp_path / "s" / "adapters" / f"{adapter}.gguf"))
    ref = peft_deltas(base, ad)
    cfg = json.loads((base / "config.json").read_text())
    worst = 0.0
    assert len(ours) == len(ref), f"{len(ours)} adapted tensors in the GGUF, {len(ref)} in PEFT"
    for stem, delta in ours.items():
        _, bid, kind, _ = stem.split(".")
        hf = "mlp.gate_up_proj" if (arch, kind) == ("phi3", "ffn_up") else GGUF_TO_HF[kind]  # fused in Phi-3
        module = f"model.layers.{bid}.{hf}"
        if arch == "llama" and kind in ("attn_q", "attn_k"):
            heads = cfg["num_attention_heads"] if kind == "attn_q" else cfg["num_key_value_heads"]
            delta = unpermute(delta, heads)
        err = rel_err(delta, ref[module])
        worst = max(worst, err)
        assert err <= TOL, f"{stem}: relative error {err:.2e} > {TOL}"
    print(f"{arch}/{adapter}: {len(ours)} tensors, worst relative error {worst:.2e} (tolerance {TOL})")
