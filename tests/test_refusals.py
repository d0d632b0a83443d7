"""Every refusal: a clear one-line error (exit 2), problems reported together, nothing at the output path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import lorapack
from safetensors.numpy import load_file, save_file


def copy_adapter(samples, tmp_path, arch="llama", name="plain"):
    dest = tmp_path / f"ad-{name}"
    shutil.copytree(samples / arch / "adapters" / name, dest)
    return dest


def edit_config(path, **changes):
    cfg = json.loads((path / "adapter_config.json").read_text())
    cfg.update(changes)
    (path / "adapter_config.json").write_text(json.dumps(cfg))


def edit_tensors(path, fn):
    t = load_file(path / "adapter_model.safetensors")
    fn(t)
    save_file(t, path / "adapter_model.safetensors")


def refused(*args, expect: list[str]):
    out = args[args.index("-o") + 1]
    proc = lorapack(*args, check=False)
    err = proc.stderr.strip().splitlines()
    print(proc.stderr)
    assert proc.returncode == 2, proc.stderr
    assert err and err[0].startswith("error: "), proc.stderr
    assert len(err) <= 2 and all(e.startswith(("error:", "hint:")) for e in err), "one error line and one hint"
    for text in expect:
        assert text in err[0]
    assert not out.exists(), "a failed build left something at the output path"
    assert not [p for p in out.parent.iterdir() if ".lorapack-tmp" in p.name]
    return err[0]


def test_bin_pickle_refused_unopened(samples, tmp_path):
    ad = copy_adapter(samples, tmp_path)
    (ad / "adapter_model.safetensors").unlink()
    (ad / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")  # never opened
    refused("build", samples / "llama" / "base", ad, "-o", tmp_path / "o.gguf",
            expect=["adapter_model.bin", "never unpickles"])


def test_other_peft_type_refused(samples, tmp_path):
    ad = copy_adapter(samples, tmp_path)
    edit_config(ad, peft_type="IA3")
    refused("build", samples / "llama" / "base", ad, "-o", tmp_path / "o.gguf", expect=["peft_type IA3"])


def test_problems_are_reported_together(samples, tmp_path):
    ad = copy_adapter(samples, tmp_path)

    def damage(t):
        del t["base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"]  # a without b
        t["base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"][0, 0] = np.nan  # non-finite
        t["base_model.model.model.layers.0.mystery.lora_A.weight"] = np.zeros((8, 64), np.float32)
        t["base_model.model.model.layers.0.mystery.lora_B.weight"] = np.zeros((64, 8), np.float32)
    edit_tensors(ad, damage)
    msg = refused("build", samples / "llama" / "base", ad, "-o", tmp_path / "o.gguf",
                  expect=["lora_B is missing", "non-finite", "unknown module model.layers.0.mystery"])
    assert msg.count("; ") >= 2


def test_adapter_for_another_base_refused(samples, tmp_path):
    refused("build", samples / "llama" / "base", samples / "gemma3" / "adapters" / "plain", "-o",
            tmp_path / "o.gguf", expect=["another base"])


def test_targets_matching_nothing(samples, tmp_path):
    ad = copy_adapter(samples, tmp_path)
    def rename(t):  # a GPT-2-style adapter: valid LoRA pairs for modules this base does not have
        for k in list(t):
            t[k.replace("model.layers", "transformer.h")] = t.pop(k)
    edit_tensors(ad, rename)
    refused("build", samples / "llama" / "base", ad, "-o", tmp_path / "o.gguf",
            expect=["targets match nothing in the base model"])


@pytest.mark.parametrize("adapter,names", [("dora", ["DoRA", "q_proj"]), ("save_head", ["modules_to_save", "lm_head"])])
def test_separate_refuses_what_it_cannot_carry(samples, tmp_path, adapter, names):
    base, ad = samples / "llama" / "base", samples / "llama" / "adapters" / adapter
    refused("build", base, ad, "-o", tmp_path / "sep", "--layout", "separate", expect=names)
    lorapack("build", base, ad, "-o", tmp_path / "c.gguf")  # combined carries it
    refused("unpack", tmp_path / "c.gguf", "-o", tmp_path / "un", expect=names)


def test_tied_lm_head_refused_by_separate_untied_by_merged(samples, tmp_path):
    base = samples / "qwen2" / "base"  # tie_word_embeddings
    ad = copy_adapter(samples, tmp_path, "qwen2", "plain")
    edit_config(ad, target_modules=["lm_head"])
    rng = np.random.default_rng(0)
    edit_tensors(ad, lambda t: t.clear() or t.update({
        "base_model.model.lm_head.lora_A.weight": rng.normal(size=(8, 64)).astype(np.float32),
        "base_model.model.lm_head.lora_B.weight": rng.normal(size=(512, 8)).astype(np.float32)}))
    refused("build", base, ad, "-o", tmp_path / "sep", "--layout", "separate", expect=["lm_head", "tied"])
    lorapack("build", base, ad, "-o", tmp_path / "m.gguf", "--layout", "merged")
    from gguf import GGUFReader

    names = {t.name for t in GGUFReader(tmp_path / "m.gguf").tensors}
    assert "output.weight" in names and "token_embd.weight" in names


def test_unsupported_architecture_lists_supported(samples, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(samples / "llama" / "base", base)
    cfg = json.loads((base / "config.json").read_text())
    cfg["architectures"] = ["FalconForCausalLM"]
    (base / "config.json").write_text(json.dumps(cfg))
    refused("build", base, "-o", tmp_path / "o.gguf", expect=["FalconForCausalLM"])
    proc = lorapack("build", base, "-o", tmp_path / "o.gguf", check=False)
    assert "Phi3ForCausalLM" in proc.stderr and "Gemma3ForCausalLM" in proc.stderr


def test_corrupt_safetensors(samples, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(samples / "llama" / "base", base)
    data = (base / "model.safetensors").read_bytes()
    (base / "model.safetensors").write_bytes(data[: len(data) // 2])
    refused("build", base, "-o", tmp_path / "o.gguf", expect=["truncated"])


def test_cli_argument_errors(samples, tmp_path):
    base, ad = samples / "llama" / "base", samples / "llama" / "adapters" / "plain"
    refused("build", base, f"a={ad}", f"a={ad}", "-o", tmp_path / "o.gguf", expect=["duplicate adapter names: a"])
    refused("build", base, "-o", tmp_path / "m.gguf", "--layout", "merged", expect=["at least one adapter"])
    refused("build", base, ad, "-o", tmp_path / "o.gguf", "--outtype", "q2_k", expect=["unknown output type"])
    (tmp_path / "exists.gguf").write_bytes(b"keep me")
    proc = lorapack("build", base, ad, "-o", tmp_path / "exists.gguf", check=False)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert (tmp_path / "exists.gguf").read_bytes() == b"keep me"
    lorapack("build", base, ad, "-o", tmp_path / "exists.gguf", "--force")
    assert (tmp_path / "exists.gguf").read_bytes()[:4] == b"GGUF"


def test_name_rule(samples, tmp_path):
    """NAME=PATH only when the text before '=' is a valid name; an existing path is named after its folder;
    anything else is refused naming the name."""
    from lorapack.errors import LorapackError
    from lorapack.names import parse_adapter_arg

    assert parse_adapter_arg("chat=/x/y") == ("chat", __import__("pathlib").Path("/x/y"))
    (tmp_path / "a=b").mkdir()
    assert parse_adapter_arg(str(tmp_path / "a=b"))[0] == "a_b"
    for text in ("-bad=/x/y", "/x/a=b", "bad name=/x"):
        with pytest.raises(LorapackError, match="is invalid"):
            parse_adapter_arg(text)


def test_tied_embedding_lora_refused_by_separate(samples, tmp_path):
    """llama.cpp reuses token_embd as the output matrix of a tied model and would apply the LoRA there too."""
    refused("build", samples / "gemma3" / "base", samples / "gemma3" / "adapters" / "embed", "-o", tmp_path / "s",
            "--layout", "separate", expect=["tied embeddings"])


def test_multimodal_vision_lora_refused_by_name(samples, tmp_path):
    """Gemma3ForConditionalGeneration: LoRA on the vision tower cannot run in llama.cpp's text model."""
    refused("build", samples / "gemma3mm" / "base", samples / "gemma3mm" / "adapters" / "vision", "-o",
            tmp_path / "o.gguf", expect=["vision tower", "model.vision_tower.encoder.layers.0"])


def test_multimodal_build_says_images_need_mmproj(samples, tmp_path):
    proc = lorapack("build", samples / "gemma3mm" / "base", samples / "gemma3mm" / "adapters" / "plain", "-o",
                    tmp_path / "o.gguf")
    assert "mmproj" in proc.stdout
