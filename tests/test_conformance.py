"""Base and adapter GGUFs equal what llama.cpp's converters write for the same inputs: every key (provenance
keys excepted), every tensor's name, type, shape and bytes."""

from __future__ import annotations

import pytest
from conftest import lorapack, record
from gguf_compare import diff

ARCHS = ["llama", "phi3", "gemma2", "gemma3", "gemma3mm", "granite", "mistral3", "qwen2", "qwen3", "smollm3",
         "qwen3moe", "olmo2", "olmo3", "qwen35", "qwen35mm", "gemma4", "gemma4mm"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_base_matches_llama_cpp(samples, ref_run, tmp_path, arch, outtype):
    base = samples / arch / "base"
    lorapack("build", base, "-o", tmp_path / "s", "--layout", "separate", "--outtype", outtype,
             samples / arch / "adapters" / "plain")
    # llama.cpp cannot read this sample's tokenizer as a Qwen3.5 multimodal one (transformers swaps in its
    # Qwen3_5Tokenizer, whose pre-tokenizer hash llama.cpp does not know for a Gemma vocabulary); its text model
    # and MTP block are the qwen35 sample's, so the text GGUF must be what llama.cpp writes for that one
    ref = samples / "qwen35" / "base" if arch == "qwen35mm" else base
    problems = diff(str(tmp_path / "s" / "base.gguf"), str(ref_run.base(ref, outtype)))
    print(f"{arch} {outtype}: {len(problems)} differences" + (" (against qwen35's reference)" if ref != base else ""))
    assert problems == []
    record(arch, "base", outtype if ref == base else f"{outtype} equal to qwen35's")


@pytest.mark.parametrize("outtype", ["f32", "bf16"])
def test_base_other_types(samples, ref_run, tmp_path, outtype):
    base = samples / "gemma3" / "base"
    lorapack("build", base, "-o", tmp_path / "m.gguf", "--layout", "combined", "--outtype", outtype)
    assert diff(str(tmp_path / "m.gguf"), str(ref_run.base(base, outtype))) == []


ADAPTERS = [("llama", "plain"), ("llama", "embed"), ("llama", "alora"), ("phi3", "plain"), ("gemma3", "plain"),
            ("gemma3", "embed"), ("qwen2", "plain"), ("qwen3", "plain"),
            ("gemma3mm", "plain"), ("gemma2", "plain"), ("granite", "plain"), ("smollm3", "plain"),
            ("qwen3moe", "plain"), ("olmo2", "plain"), ("olmo3", "plain"), ("qwen35", "plain"), ("qwen35mm", "plain"),
            ("gemma4", "plain"), ("gemma4mm", "plain")]


@pytest.mark.parametrize("arch,adapter", ADAPTERS)
@pytest.mark.parametrize("outtype", ["f16", "q8_0", "f32"])
def test_adapter_matches_llama_cpp(samples, ref_run, tmp_path, arch, adapter, outtype):
    base, ad = samples / arch / "base", samples / arch / "adapters" / adapter
    ours = tmp_path / "s" / "adapters" / f"{adapter}.gguf"
    if (arch, adapter) == ("gemma3", "embed"):
        # separate refuses embedding LoRA on a tied base (llama.cpp aborts on it at run time), so write the
        # adapter file through the library: the conversion itself must still equal llama.cpp's
        write_adapter_file(base, ad, outtype, ours)
    else:
        lorapack("build", base, ad, "-o", tmp_path / "s", "--layout", "separate", "--adapters-only",
                 "--adapter-outtype", outtype)
    problems = diff(str(ours), str(ref_run.lora(ad, base, outtype)))
    print(f"{arch}/{adapter} {outtype}: {len(problems)} differences")
    assert problems == []
    if adapter == "plain":
        record(arch, "adapter", outtype)


@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_gemma3_270m_matches_llama_cpp(samples, ref_run, tmp_path, outtype):
    """The real checkpoint: 262k-token BPE vocabulary, merges, 18 layers, and its trained rank-16 adapter."""
    from conftest import need

    g = samples / "gemma3-270m"
    need((g / "done").exists(), "the Gemma 3 270M sample is not built (python samples/make_gemma.py)")
    base, ad = g / "base", g / "adapters" / "tuned"
    lorapack("build", base, ad, "-o", tmp_path / "s", "--layout", "separate", "--outtype", outtype,
             "--adapter-outtype", outtype)
    base_problems = diff(str(tmp_path / "s" / "base.gguf"), str(ref_run.base(base, outtype)))
    ad_problems = diff(str(tmp_path / "s" / "adapters" / "tuned.gguf"), str(ref_run.lora(ad, base, outtype)))
    print(f"gemma3-270m {outtype}: base {len(base_problems)}, adapter {len(ad_problems)} differences")
    assert base_problems == [] and ad_problems == []


def test_comparer_sees_differences(samples, ref_run):
    """The comparison itself can fail: f16 and q8_0 conversions of the same base differ."""
    base = samples / "llama" / "base"
    problems = diff(str(ref_run.base(base, "f16")), str(ref_run.base(base, "q8_0")))
    assert any("Q8_0" in p for p in problems)


def write_adapter_file(base, ad, outtype, dest):
    from lorapack.convert.adapter_plan import adapter_plan
    from lorapack.convert.base import resolve
    from lorapack.convert.checkpoint import load_checkpoint
    from lorapack.convert.peft import load_adapter
    from lorapack.pack.gguf_io import write_plan
    from lorapack.spec.types import parse_outtype

    model = resolve(load_checkpoint(base))
    dest.parent.mkdir(parents=True)
    write_plan(dest, adapter_plan(load_adapter(ad.name, ad, model), model, parse_outtype(outtype)))


def test_mistral3_adapter_where_llama_cpps_converter_is_wrong(samples, ref_run, tmp_path):
    """llama.cpp's LoRA converter 'succeeds' on a Mistral3ForConditionalGeneration adapter but writes the base
    model; lorapack writes the adapter (its logits in llama.cpp match PEFT's: tests/test_llama_cpp.py)."""
    from lorapack.formats.gguf import read_gguf

    base, ad = samples / "mistral3" / "base", samples / "mistral3" / "adapters" / "plain"
    theirs = read_gguf(ref_run.lora(ad, base, "f16"))
    lorapack("build", base, ad, "-o", tmp_path / "s", "--layout", "separate")
    ours = read_gguf(tmp_path / "s" / "adapters" / "plain.gguf")
    print(f"llama.cpp: general.type {theirs.get('general.type')}, {len(theirs.tensors)} tensors "
          f"(e.g. {theirs.tensors[0].name}); lorapack: {ours.get('general.type')}, {len(ours.tensors)} tensors")
    assert ours.get("general.type") == "adapter" and all(t.name.endswith((".lora_a", ".lora_b")) for t in ours.tensors)
    assert theirs.get("general.type") == "model"  # when llama.cpp fixes this, compare the two byte for byte
    record("mistral3", "adapter", "llama.cpp's converter writes the base model; lorapack's checked by logits")
