"""Input variants that must convert exactly like llama.cpp: sharded checkpoints, a chat template in its own file,
rope scaling (Llama 3 factors, Phi-3 longrope, linear/yarn); inspect; more refusals."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import lorapack
from gguf_compare import diff
from safetensors.numpy import load_file, save_file
from test_refusals import copy_adapter, edit_config, edit_tensors, refused


def variant(samples, tmp_path, arch, **config):
    base = tmp_path / f"{arch}-base"
    shutil.copytree(samples / arch / "base", base)
    cfg = json.loads((base / "config.json").read_text())
    if "rope_scaling" in config:  # a legacy config: rope_scaling and rope_theta at the top, no rope_parameters
        cfg["rope_theta"] = cfg.pop("rope_parameters")["rope_theta"]
    cfg.update(config)
    (base / "config.json").write_text(json.dumps(cfg))
    return base


def test_sharded_checkpoint_equals_single_file(samples, tmp_path):
    base = tmp_path / "sharded"
    shutil.copytree(samples / "llama" / "base", base)
    tensors = load_file(base / "model.safetensors")
    (base / "model.safetensors").unlink()
    names = sorted(tensors)
    parts = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
             "model-00002-of-00002.safetensors": names[len(names) // 2:]}
    for part, keys in parts.items():
        save_file({k: tensors[k] for k in keys}, base / part, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: part for part, keys in parts.items() for k in keys}}
    (base / "model.safetensors.index.json").write_text(json.dumps(index))
    lorapack("build", samples / "llama" / "base", "-o", tmp_path / "one.gguf")
    lorapack("build", base, "-o", tmp_path / "two.gguf")
    assert diff(str(tmp_path / "two.gguf"), str(tmp_path / "one.gguf")) == []


def test_chat_template_jinja(samples, ref_run, tmp_path):
    base = variant(samples, tmp_path, "phi3")
    cfg = json.loads((base / "tokenizer_config.json").read_text())
    (base / "chat_template.jinja").write_text(cfg.pop("chat_template"))
    (base / "tokenizer_config.json").write_text(json.dumps(cfg))
    lorapack("build", base, "-o", tmp_path / "o.gguf")
    assert diff(str(tmp_path / "o.gguf"), str(ref_run.base(base, "f16"))) == []


ROPE = {
    "llama3": ("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}}),
    "linear": ("qwen2", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}),
    "yarn": ("qwen2", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
                                        "beta_fast": 32.0, "beta_slow": 1.0}}),
    # one factor per rotary frequency: the phi3 sample ropes 12 of its 16 head dims (partial_rotary_factor 0.75)
    "longrope": ("phi3", {"max_position_embeddings": 1024, "original_max_position_embeddings": 256,
                          "rope_scaling": {"type": "longrope", "long_factor": [1.0 + i / 8 for i in range(6)],
                                           "short_factor": [1.0] * 6}}),
}


@pytest.mark.parametrize("kind", ROPE)
def test_rope_scaling_matches_llama_cpp(samples, ref_run, tmp_path, kind):
    arch, config = ROPE[kind]
    base = variant(samples, tmp_path, arch, **config)
    lorapack("build", base, "-o", tmp_path / "o.gguf")
    problems = diff(str(tmp_path / "o.gguf"), str(ref_run.base(base, "f16")))
    print(f"{kind}: {problems}")
    assert problems == []


def test_inspect(samples, tmp_path):
    s = samples / "llama"
    lorapack("build", s / "base", f"a={s / 'adapters' / 'plain'}", "-o", tmp_path / "sep", "--layout", "separate")
    info = json.loads(lorapack("inspect", tmp_path / "sep", "--json").stdout)
    assert info["layout"] == "separate" and info["fingerprints_consistent"]
    assert info["files"][1]["adapter"]["alpha"] == 16.0 and info["files"][1]["adapter"]["tensors"] == 28
    assert "architecture: llama" in lorapack("inspect", tmp_path / "sep" / "base.gguf").stdout


@pytest.mark.parametrize("change,message", [
    ({"fan_in_fan_out": True}, "fan_in_fan_out"),
    ({"target_parameters": ["mlp.experts.gate_up_proj"]}, "target_parameters"),
    ({"use_dora": True}, "magnitude vector is missing"),
])
def test_unsupported_features_refused(samples, tmp_path, change, message):
    ad = copy_adapter(samples, tmp_path)
    edit_config(ad, **change)
    refused("build", samples / "llama" / "base", ad, "-o", tmp_path / "o.gguf", expect=[message])


def test_nonzero_lora_bias_refused_zero_accepted(samples, tmp_path):
    ad = copy_adapter(samples, tmp_path)
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.bias"
    edit_tensors(ad, lambda t: t.update({key: np.zeros(64, np.float32)}))
    lorapack("build", samples / "llama" / "base", ad, "-o", tmp_path / "ok.gguf")  # no effect: fine
    edit_tensors(ad, lambda t: t.update({key: np.ones(64, np.float32)}))
    refused("build", samples / "llama" / "base", ad, "-o", tmp_path / "o.gguf", expect=["lora_bias"])


@pytest.mark.parametrize("where", ["modules_to_save", "lora"])
def test_resized_vocabulary_refused_naming_both_sizes(samples, tmp_path, where):
    """An adapter trained after resize_token_embeddings (more rows than the base's 512) is refused by name."""
    ad = copy_adapter(samples, tmp_path)
    rows = 520
    if where == "modules_to_save":
        key = "base_model.model.model.embed_tokens.modules_to_save.weight"
        edit_tensors(ad, lambda t: t.update({key: np.ones((rows, 64), np.float32)}))
    else:
        a = "base_model.model.lm_head.lora_A.weight"
        b = "base_model.model.lm_head.lora_B.weight"
        edit_tensors(ad, lambda t: t.update({a: np.ones((8, 64), np.float32), b: np.ones((rows, 8), np.float32)}))
    refused("build", samples / "llama" / "base", ad, "-o", tmp_path / "o.gguf",
            expect=["resized vocabulary", str(rows), "512"])


def test_qwen35_without_its_mtp_tensors(samples, tmp_path):
    """A Qwen3.5 fine-tune saved by transformers keeps mtp_num_hidden_layers in config.json but no mtp.* tensors
    (transformers neither loads nor saves them). llama.cpp's converter still declares the MTP block there, and
    llama.cpp then cannot load its file; lorapack writes the text model alone (with a warning), which llama.cpp
    loads and runs with the adapter. An MTP count the tensors contradict is refused."""
    import llama_cpp
    from safetensors.torch import load_file as load_torch
    from safetensors.torch import save_file as save_torch

    base = variant(samples, tmp_path, "qwen35")
    weights = load_torch(base / "model.safetensors")
    save_torch({k: v for k, v in weights.items() if not k.startswith("mtp.")}, base / "model.safetensors")
    ad = samples / "qwen35" / "adapters" / "plain"
    proc = lorapack("build", base, ad, "-o", tmp_path / "s", "--layout", "separate")
    assert "no mtp.* tensors" in proc.stderr, proc.stderr
    from lorapack.formats.gguf import read_gguf

    g = read_gguf(tmp_path / "s" / "base.gguf")
    assert g.get("qwen35.block_count") == 2 and g.get("qwen35.nextn_predict_layers") is None
    assert g.get("qwen35.attention.recurrent_layers") == [True, False]
    llm = llama_cpp.Llama(model_path=str(tmp_path / "s" / "base.gguf"), n_ctx=32, verbose=False,
                          lora_path=str(tmp_path / "s" / "adapters" / "plain.gguf"))
    llm.eval([2, 45, 67])
    llm.close()
    lorapack("validate", tmp_path / "s", "--base", base, ad, "--quiet")
    broken = variant(samples, tmp_path / "b", "qwen35", mtp_num_hidden_layers=2)  # the checkpoint has one MTP layer
    refused("build", broken, "-o", tmp_path / "o.gguf", expect=["mtp_num_hidden_layers is 2", "[0]"])
