"""The real sample: Gemma 3 270M with its trained rank-16 adapter, every layout, f16 and q8_0, a base quantized
by llama.cpp itself (Q4_K_M), reports stable across runs, and the end-to-end check."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import lorapack, need


@pytest.fixture(scope="module")
def gemma(samples):
    g = samples / "gemma3-270m"
    need((g / "done").exists(), "the Gemma 3 270M sample is not built (python samples/make_gemma.py)")
    return g


def run_validate(artifact, g, *extra):
    proc = lorapack("validate", artifact, "--base", g / "base", f"tuned={g / 'adapters' / 'tuned'}", "--quiet",
                    *extra, check=False)
    print(proc.stdout[-2000:])
    return proc


@pytest.mark.parametrize("layout,outtype", [("separate", "f16"), ("separate", "q8_0"), ("combined", "f16"),
                                            ("merged", "f16"), ("merged", "q8_0")])
def test_gemma_270m_every_layout_passes(gemma, tmp_path, layout, outtype):
    out = tmp_path / ("a" if layout == "separate" else "a.gguf")
    lorapack("build", gemma / "base", f"tuned={gemma / 'adapters' / 'tuned'}", "-o", out, "--layout", layout,
             "--outtype", outtype, "--adapter-outtype", outtype)
    proc = run_validate(out, gemma)
    assert proc.returncode == 0 and "PASS" in proc.stdout


def test_gemma_270m_report_is_stable(gemma, tmp_path):
    lorapack("build", gemma / "base", f"tuned={gemma / 'adapters' / 'tuned'}", "-o", tmp_path / "s",
             "--layout", "separate")
    reports = []
    for i in range(2):
        assert run_validate(tmp_path / "s", gemma, "--seed", "3", "--report", tmp_path / f"{i}.json").returncode == 0
        r = json.loads((tmp_path / f"{i}.json").read_text())
        r.pop("timing")
        reports.append(r)
    assert reports[0] == reports[1]
    assert len(reports[0]["checks"]) > 370  # 236 base tensors, 126 adapted layers, metadata, structure


def test_llama_quantized_q4_k_m_base_passes(gemma, tmp_path):
    """A base quantized by llama.cpp (llama_model_quantize, Q4_K_M), judged with the tolerances of its types."""
    try:
        import llama_cpp
    except ImportError:
        need(False, "llama-cpp-python is not installed")
    lorapack("build", gemma / "base", f"tuned={gemma / 'adapters' / 'tuned'}", "-o", tmp_path / "s",
             "--layout", "separate")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 2
    src, dst = str(tmp_path / "s" / "base.gguf").encode(), str(tmp_path / "q4.gguf").encode()
    assert llama_cpp.llama_model_quantize(src, dst, params) == 0
    shutil.move(tmp_path / "q4.gguf", tmp_path / "s" / "base.gguf")
    proc = run_validate(tmp_path / "s", gemma)
    assert proc.returncode == 0, "a correct Q4_K_M artifact must pass with Q4_K/Q6_K tolerances"


def test_end_to_end_rebuild_never_reads_the_weights(gemma, tmp_path):
    """The PyTorch rebuild gets a folder holding config.json only, and still reproduces the PEFT logits."""
    from reference_math import peft_model

    from lorapack.validate.artifact import open_artifact
    from lorapack.validate.end_to_end import prompt, rebuild_logits

    lorapack("build", gemma / "base", f"tuned={gemma / 'adapters' / 'tuned'}", "-o", tmp_path / "s",
             "--layout", "separate", "--outtype", "f32", "--adapter-outtype", "f32")
    config_only = tmp_path / "config-only"
    config_only.mkdir()
    shutil.copy(gemma / "base" / "config.json", config_only)
    ids = prompt(262144, 0)
    got = rebuild_logits(open_artifact(tmp_path / "s"), config_only, "tuned", ids)
    import torch

    with torch.no_grad():
        want = peft_model(gemma / "base", gemma / "adapters" / "tuned")(torch.tensor([ids])).logits[0].numpy()
    rel = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
    print(f"rebuilt-from-artifact logits vs PEFT: max relative difference {rel:.2e} (tolerance 1e-4)")
    assert rel <= 1e-4


def test_end_to_end_cli(gemma, tmp_path):
    lorapack("build", gemma / "base", f"tuned={gemma / 'adapters' / 'tuned'}", "-o", tmp_path / "m.gguf",
             "--layout", "merged")
    proc = run_validate(tmp_path / "m.gguf", gemma, "--end-to-end", "--report", tmp_path / "r.json")
    checks = json.loads((tmp_path / "r.json").read_text())["checks"]
    e2e = [c for c in checks if c["kind"] == "end-to-end"]
    print("\n".join(f"{c['name']}: {c['value']} ({c['tolerance']})" for c in e2e))
    assert proc.returncode == 0 and len(e2e) == 4  # pytorch and llama.cpp: logits and top-1
