"""Base and adapter GGUFs equal what llama.cpp's converters write for the same inputs: every key (provenance
keys excepted), every tensor's name, type, shape and bytes."""

from __future__ import annotations

import pytest
from conftest import lorapack
from gguf_compare import diff

ARCHS = ["llama", "phi3", "gemma3", "qwen2"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_base_matches_llama_cpp(samples, ref_run, tmp_path, arch, outtype):
    base = samples / arch / "base"
    lorapack("build", base, "-o", tmp_path / "s", "--layout", "separate", "--outtype", outtype,
             samples / arch / "adapters" / "plain")
    problems = diff(str(tmp_path / "s" / "base.gguf"), str(ref_run.base(base, outtype)))
    print(f"{arch} {outtype}: {len(problems)} differences")
    assert problems == []


@pytest.mark.parametrize("outtype", ["f32", "bf16"])
def test_base_other_types(samples, ref_run, tmp_path, outtype):
    base = samples / "gemma3" / "base"
    lorapack("build", base, "-o", tmp_path / "m.gguf", "--layout", "combined", "--outtype", outtype)
    assert diff(str(tmp_path / "m.gguf"), str(ref_run.base(base, outtype))) == []


ADAPTERS = [("llama", "plain"), ("llama", "embed"), ("phi3", "plain"), ("gemma3", "plain"),
            ("gemma3", "embed"), ("qwen2", "plain")]


@pytest.mark.parametrize("arch,adapter", ADAPTERS)
@pytest.mark.parametrize("outtype", ["f16", "q8_0", "f32"])
def test_adapter_matches_llama_cpp(samples, ref_run, tmp_path, arch, adapter, outtype):
    base, ad = samples / arch / "base", samples / arch / "adapters" / adapter
    lorapack("build", base, ad, "-o", tmp_path / "s", "--layout", "separate", "--adapters-only",
             "--adapter-outtype", outtype)
    problems = diff(str(tmp_path / "s" / "adapters" / f"{adapter}.gguf"), str(ref_run.lora(ad, base, outtype)))
    print(f"{arch}/{adapter} {outtype}: {len(problems)} differences")
    assert problems == []
