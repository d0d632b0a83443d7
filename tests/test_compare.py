"""`lorapack compare`: the three layouts side by side, runtime figures from llama.cpp running them."""

from __future__ import annotations

import json

from conftest import lorapack, need


def test_compare_gemma_270m(samples, tmp_path):
    g = samples / "gemma3-270m"
    need((g / "done").exists(), "the Gemma 3 270M sample is not built (python samples/make_gemma.py)")
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        need(False, "llama-cpp-python is not installed")
    proc = lorapack("compare", g / "base", f"tuned={g / 'adapters' / 'tuned'}", "-o", tmp_path / "cmp")
    print(proc.stdout)
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 10_000
    assert set(report["layouts"]) == {"combined", "separate", "merged-tuned"}
    assert all(v["validation"] == "pass" for v in report["layouts"].values())
    runtime = report["runtime"]
    assert set(runtime) == {"base alone", "runtime tuned", "merged tuned"}
    assert all(v["prompt_tok_s"] > 0 and v["decode_tok_s"] > 0 and v["load_s"] > 0 for v in runtime.values())
    assert report["agreement tuned"]["top1_agreement"] >= 0.9
    for word in ("prompt t/s", "decode t/s", "agreement tuned"):
        assert word in proc.stdout


def test_compare_two_adapters_reports_switching(samples, tmp_path):
    s = samples / "llama"
    # q8_0: llama.cpp's quantized kernels run too (a native AMX build dies here with SIGILL)
    proc = lorapack("compare", s / "base", s / "adapters" / "plain", f"rs={s / 'adapters' / 'rslora'}",
                    "-o", tmp_path / "cmp", "--outtype", "q8_0")
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert report["switching"]["runtime_switch_s"] >= 0 and report["switching"]["load_another_merged_s"] > 0
    assert "switching adapters" in proc.stdout


def test_compare_without_runtime(samples, tmp_path):
    s = samples / "qwen2"
    lorapack("compare", s / "base", s / "adapters" / "plain", "-o", tmp_path / "cmp", "--no-runtime")
    report = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert "runtime" not in report and report["layouts"]["separate"]["validation"] == "pass"
