"""Hostile and unlucky inputs through the CLI: no code execution, nothing written outside -o, nothing lost,
no traceback. Every refusal is one `error:` line (and at most a `hint:`), exit 2 — or for validate, exit 1 when
the artifact itself is what is wrong."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lorapack.formats.gguf import read_gguf
from lorapack.pack.gguf_io import write_plan
from lorapack.pack.unpack import _subplan
from lorapack.spec.plan import KV

SECONDS = {"validate": 30.0}  # validate imports torch and loads the reference model; everything else: 10 s
GIB = 1 << 30


# Linux keeps a process's peak RSS across exec, so a CLI forked straight from this (large) pytest process would
# report pytest's peak: a small Python in between forks the CLI and reports its children's peak.
_WRAP = ("import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
         "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
         "sys.exit(rc if rc >= 0 else 128 - rc)")


def lorapack(*args, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    """The CLI in a fresh process, each case held to its time and to 1 GiB of peak RSS."""
    argv = [sys.executable, "-m", "lorapack", *map(str, args)]
    with tempfile.TemporaryDirectory() as tmp:
        peak = Path(tmp) / "peak"
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", _WRAP, str(peak), *argv], input=input or "",
                              capture_output=True, text=True, timeout=120)
        took = time.perf_counter() - t
        rss_kib = int(peak.read_text())
    limit = SECONDS.get(str(args[0]), 10.0)
    print(f"lorapack {args[0]}: {took:.1f} s, peak RSS {rss_kib >> 10} MiB")
    assert took <= limit, f"lorapack {args[0]} took {took:.1f} s (limit {limit:.0f} s)"
    assert rss_kib * 1024 <= GIB, f"lorapack {args[0]} peaked at {rss_kib >> 10} MiB"
    done = subprocess.CompletedProcess(argv, proc.returncode, proc.stdout, proc.stderr)
    if check and done.returncode != 0:
        raise AssertionError(f"lorapack {' '.join(map(str, args))} exited {done.returncode}:\n{done.stderr}")
    return done


def one_error(proc, code: int = 2, *expect: str) -> str:
    err = proc.stderr.strip().splitlines()
    print(proc.stderr)
    assert proc.returncode == code, proc.stderr
    assert err and err[0].startswith("error: "), proc.stderr
    assert len(err) <= 2 and all(e.startswith(("error:", "hint:")) for e in err), "one error line, one hint"
    assert "Traceback" not in proc.stderr and "\x1b" not in proc.stderr
    for text in expect:
        assert text in err[0], err[0]
    return err[0]


def no_temps(folder):
    assert not [p.name for p in folder.iterdir() if ".lorapack-tmp" in p.name]


def copy(samples, tmp_path, what="base", arch="llama", name="plain"):
    src = samples / arch / ("base" if what == "base" else f"adapters/{name}")
    dest = tmp_path / (what if what == "base" else f"ad-{name}")
    shutil.copytree(src, dest)
    return dest


def rewrite_gguf(src, dst, **replace: KV) -> None:
    """Copy a GGUF with some keys replaced (a file someone else made); keys keep their place."""
    plan = _subplan(read_gguf(src), lambda k: True, lambda t: True)
    plan.add(*replace.values())
    write_plan(dst, plan)


@pytest.fixture(scope="module")
def combined(samples, tmp_path_factory):
    out = tmp_path_factory.mktemp("combined") / "c.gguf"
    lorapack("build", samples / "llama" / "base", f"chat={samples / 'llama' / 'adapters' / 'plain'}", "-o", out)
    return out


# --- 1. code execution ----------------------------------------------------------------------------------------

def test_validate_never_runs_checkpoint_code(samples, tmp_path, combined):
    base = copy(samples, tmp_path)
    marker = tmp_path / "EXECUTED"
    (base / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    cfg = json.loads((base / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilModel"}
    (base / "config.json").write_text(json.dumps(cfg))
    proc = lorapack("validate", combined, "--base", base, f"chat={samples / 'llama' / 'adapters' / 'plain'}",
                    "--quiet", input="y\ny\n", check=False)
    print(proc.stdout[-500:], proc.stderr[-500:])
    assert not marker.exists(), "checkpoint code ran"
    assert proc.returncode in (0, 1, 2) and "Traceback" not in proc.stderr


# --- 2. names from files --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../../x/important", "a/b", "", "\x1b[31mred"])
def test_unpack_refuses_names_from_the_file(combined, tmp_path, name):
    from gguf import GGUFValueType as VT

    from lorapack.spec.plan import array

    hostile = tmp_path / "h.gguf"
    rewrite_gguf(combined, hostile, lorapack_combined_adapters=array("lorapack.combined.adapters", [name], VT.STRING))
    (tmp_path / "x").mkdir()
    (tmp_path / "out").mkdir()
    proc = lorapack("unpack", hostile, "-o", tmp_path / "out" / "d", check=False)
    one_error(proc, 2, "invalid adapter name")
    assert not list((tmp_path / "x").iterdir()) and not list((tmp_path / "out").iterdir())


def test_unpack_refuses_listed_adapter_without_tensors(combined, tmp_path):
    from gguf import GGUFValueType as VT

    from lorapack.spec.plan import array

    hostile = tmp_path / "h.gguf"
    rewrite_gguf(combined, hostile,
                 lorapack_combined_adapters=array("lorapack.combined.adapters", ["chat", "ghost"], VT.STRING))
    one_error(lorapack("unpack", hostile, "-o", tmp_path / "d", check=False), 2, "ghost", "no tensors")
    assert not (tmp_path / "d").exists()


# --- 3. data loss ---------------------------------------------------------------------------------------------

def test_validate_report_never_overwrites_without_force(samples, tmp_path, combined):
    precious = tmp_path / "model.safetensors"
    precious.write_bytes(b"precious")
    args = ["validate", combined, "--base", samples / "llama" / "base",
            f"chat={samples / 'llama' / 'adapters' / 'plain'}", "--quiet"]
    one_error(lorapack(*args, "--report", precious, check=False), 2, "already exists")
    one_error(lorapack(*args, "--junit", precious, check=False), 2, "already exists")
    assert precious.read_bytes() == b"precious"
    lorapack(*args, "--report", precious, "--force")
    assert json.loads(precious.read_text())["verdict"] == "pass"
    no_temps(tmp_path)


def test_force_never_replaces_a_folder_with_a_file(samples, tmp_path):
    base = copy(samples, tmp_path)
    ad = samples / "llama" / "adapters" / "plain"
    one_error(lorapack("build", base, ad, "-o", base, "--force", check=False), 2, "replace the input")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("keep")
    one_error(lorapack("build", base, ad, "-o", victim, "--force", check=False), 2, "not a regular file")
    one_error(lorapack("build", base, ad, "-o", victim, "--layout", "separate", "--force", check=False), 2,
              "not a folder lorapack wrote")
    assert (victim / "keep").read_text() == "keep"
    assert (base / "config.json").is_file()
    proc = subprocess.run([sys.executable, "-m", "lorapack", "build", str(base), str(ad), "-o", ".",
                           "--layout", "separate", "--force"], cwd=tmp_path, capture_output=True, text=True)
    one_error(proc, 2)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        one_error(lorapack("build", base, ad, "-o", fifo, "--force", check=False), 2, "not a regular file")


def test_force_replaces_a_lorapack_folder_atomically(samples, tmp_path):
    base, ad = samples / "llama" / "base", samples / "llama" / "adapters" / "plain"
    out = tmp_path / "dist"
    lorapack("build", base, ad, "-o", out, "--layout", "separate")
    inode = out.stat().st_ino
    lorapack("build", base, ad, "-o", out, "--layout", "separate", "--force")
    assert out.stat().st_ino != inode and (out / "base.gguf").is_file()
    no_temps(tmp_path)


def test_placement_refuses_an_output_that_appeared_meanwhile(tmp_path):
    from lorapack.errors import LorapackError
    from lorapack.outputs import staged

    out = tmp_path / "o.gguf"
    with pytest.raises(LorapackError, match="appeared while"):
        with staged(out, force=False) as tmp:
            tmp.write_bytes(b"new")
            out.write_bytes(b"someone else's")  # a concurrent build finished first
    assert out.read_bytes() == b"someone else's"
    no_temps(tmp_path)
    with staged(out, force=True) as tmp:  # --force: one atomic exchange
        tmp.write_bytes(b"new")
    assert out.read_bytes() == b"new"
    no_temps(tmp_path)


def test_adapters_only_writes_only_adapter_files(samples, tmp_path):
    base, ad = samples / "llama" / "base", samples / "llama" / "adapters" / "plain"
    user = tmp_path / "models"
    user.mkdir()
    (user / "model-Q4_K_M.gguf").write_bytes(b"the user's base")
    lorapack("build", base, f"chat={ad}", "--layout", "separate", "--adapters-only", "-o", user)
    assert (user / "adapters" / "chat.gguf").is_file()
    assert (user / "model-Q4_K_M.gguf").read_bytes() == b"the user's base"
    one_error(lorapack("build", base, f"chat={ad}", "--layout", "separate", "--adapters-only", "-o", user,
                       check=False), 2, "already exists")
    lorapack("build", base, f"chat={ad}", "--layout", "separate", "--adapters-only", "-o", user, "--force")
    assert sorted(p.name for p in user.iterdir()) == ["adapters", "model-Q4_K_M.gguf"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_signals_leave_no_temporaries(samples, tmp_path, sig):
    gemma = samples / "gemma3-270m" / "base"
    base = gemma if gemma.is_dir() else samples / "llama" / "base"
    out = tmp_path / "o.gguf"
    proc = subprocess.Popen([sys.executable, "-m", "lorapack", "build", str(base), "-o", str(out), "--outtype",
                             "q8_0"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and not [p for p in tmp_path.iterdir() if ".lorapack-tmp" in p.name]:
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    print(err)
    assert proc.returncode == 128 + sig, "the signal must arrive while the build writes (Gemma 3 270M q8_0)"
    assert err.startswith("error: interrupted")
    assert not out.exists()
    no_temps(tmp_path)


def test_kill_9_temporaries_are_swept_by_the_next_run(samples, tmp_path):
    out = tmp_path / "o.gguf"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".o.gguf.lorapack-tmp-{dead.pid}-deadbeef"
    stale.write_bytes(b"\0" * 1024)
    lorapack("build", samples / "llama" / "base", "-o", out)
    assert not stale.exists() and out.is_file()


# --- 4. pickles -----------------------------------------------------------------------------------------------

def test_validate_never_reads_pickles(samples, tmp_path, combined):
    ad = copy(samples, tmp_path, "adapter")
    (ad / "adapter_model.safetensors").rename(ad / "model.tmp")
    (ad / "adapter_model.bin").write_bytes(b"\x80\x04not really a pickle")
    one_error(lorapack("validate", combined, "--base", samples / "llama" / "base", f"chat={ad}", check=False), 2,
              "adapter_model.safetensors")
    (ad / "model.tmp").rename(ad / "adapter_model.safetensors")
    base = copy(samples, tmp_path)
    (base / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")  # read it and validation breaks
    lorapack("validate", combined, "--base", base, f"chat={ad}", "--quiet")


# --- 5. non-finite --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha", ["NaN", "Infinity", '"16"'])
def test_non_finite_or_string_alpha_refused(samples, tmp_path, alpha):
    ad = copy(samples, tmp_path, "adapter")
    text = (ad / "adapter_config.json").read_text()
    cfg = json.loads(text)
    (ad / "adapter_config.json").write_text(json.dumps({**cfg, "lora_alpha": 0}).replace(
        '"lora_alpha": 0', f'"lora_alpha": {alpha}'))
    one_error(lorapack("build", samples / "llama" / "base", ad, "-o", tmp_path / "o.gguf", check=False), 2,
              "lora_alpha")


@pytest.mark.parametrize("scale", ["inf", "1e39", "-1e309", "nan"])
def test_non_finite_scale_refused(samples, tmp_path, scale):
    one_error(lorapack("build", samples / "llama" / "base", samples / "llama" / "adapters" / "plain", "--layout",
                       "merged", "--scale", f"plain={scale}", "-o", tmp_path / "o.gguf", check=False), 2, "--scale")


def test_values_overflowing_the_output_type_refused(samples, tmp_path):
    ad = copy(samples, tmp_path, "adapter")
    t = load_file(ad / "adapter_model.safetensors")
    key = next(k for k in t if k.endswith("lora_B.weight"))
    t[key] = np.full_like(t[key], 1e30)
    save_file(t, ad / "adapter_model.safetensors")
    one_error(lorapack("build", samples / "llama" / "base", ad, "-o", tmp_path / "o.gguf", check=False), 2,
              "not finite once stored as F16")
    assert not (tmp_path / "o.gguf").exists()
    no_temps(tmp_path)


# --- 6. hangs and blow-ups ------------------------------------------------------------------------------------

def test_catastrophic_pattern_never_reaches_pythons_re(samples, tmp_path):
    """(\\w+\\.?)+z takes exponential time in Python's re on every module name (PEFT's matcher would hang for
    hours); lorapack matches with `regex` under a time budget and hands PEFT exact names."""
    ad = copy(samples, tmp_path, "adapter")
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg["alpha_pattern"] = {r"(\w+\.?)+z": 4}
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    t = time.perf_counter()
    out = tmp_path / "o.gguf"
    lorapack("build", samples / "llama" / "base", f"chat={ad}", "-o", out)
    lorapack("validate", out, "--base", samples / "llama" / "base", f"chat={ad}", "--quiet")
    took = time.perf_counter() - t
    print(f"build + validate in {took:.1f} s")
    assert took < 60


def test_pattern_over_its_time_budget_refused():
    from lorapack.errors import AdapterError
    from lorapack.formats.peft_config import pattern_value

    t = time.perf_counter()
    with pytest.raises(AdapterError, match="takes too long"):
        pattern_value({"((a|aa)+)+b": 1}, "model." + "a" * 40, 2, "alpha_pattern key")
    print(f"refused after {time.perf_counter() - t:.3f} s")


def test_huge_vocab_size_and_probes_refused(samples, tmp_path, combined):
    base = copy(samples, tmp_path)
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, "vocab_size": 1 << 31}))
    one_error(lorapack("build", base, "-o", tmp_path / "o.gguf", check=False), 2, "vocab_size")
    (base / "config.json").write_text(json.dumps({**cfg, "vocab_size": cfg["vocab_size"] * 4}))
    one_error(lorapack("build", base, "-o", tmp_path / "o.gguf", check=False), 2, "exceeds")
    one_error(lorapack("validate", combined, "--base", samples / "llama" / "base", "--probes", "100000000",
                       check=False), 2, "--probes")


def test_huge_string_array_claim_is_refused_without_reading(tmp_path):
    """A sparse 2 GB file whose header claims a 2^40-element string array: refused from the header alone."""
    path = tmp_path / "sparse.gguf"
    with open(path, "wb") as f:
        f.write(struct.pack("<IIQQ", 0x46554747, 3, 0, 1) + struct.pack("<Q", 3) + b"k.x"
                + struct.pack("<IIQ", 9, 8, 1 << 40))
        f.truncate(2 << 30)
    t = time.perf_counter()
    one_error(lorapack("inspect", path, check=False), 2, "string array claims")
    assert time.perf_counter() - t < 10


# --- 7, 8. messages -------------------------------------------------------------------------------------------

def test_control_characters_are_escaped(samples, tmp_path):
    ad = tmp_path / "bad\nhint: forged\x1b[2J"
    shutil.copytree(samples / "llama" / "adapters" / "plain", ad)
    (ad / "adapter_config.json").unlink()
    err = one_error(lorapack("build", samples / "llama" / "base", ad, "-o", tmp_path / "o.gguf", check=False), 2)
    assert "\\x0a" in err and "\\x1b" in err


def test_usage_errors_are_one_line(samples, tmp_path):
    one_error(lorapack("build", check=False), 2, "Missing argument")
    one_error(lorapack("frobnicate", check=False), 2, "No such command")
    one_error(lorapack("build", samples / "llama" / "base", "-o", tmp_path / "o.gguf", "--layout", "x",
                       check=False), 2, "--layout")


def test_inspect_empty_folder_refused(tmp_path):
    one_error(lorapack("inspect", tmp_path, check=False), 2, "neither base.gguf")


@pytest.mark.parametrize("edit", [
    {"architectures": "LlamaForCausalLM"}, {"num_attention_heads": 0}, {"num_attention_heads": -4},
    {"num_attention_heads": "4"}, {"hidden_size": 63, "head_dim": None}, {"num_key_value_heads": 3},
    {"rms_norm_eps": "tiny"}])
def test_bad_config_values_refused(samples, tmp_path, edit):
    base = copy(samples, tmp_path)
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, **edit}))
    key = next(iter(edit))
    one_error(lorapack("build", base, "-o", tmp_path / "o.gguf", check=False), 2, key)


@pytest.mark.parametrize("change,expect", [
    ({"r": 4}, "rank 4"), ({"target_modules": []}, "target_modules is empty"),
    ({"alpha_pattern": {"(": 2}}, "not a valid regular expression")])
def test_adapter_config_contradictions_refused(samples, tmp_path, change, expect):
    ad = copy(samples, tmp_path, "adapter")
    cfg = json.loads((ad / "adapter_config.json").read_text())
    (ad / "adapter_config.json").write_text(json.dumps({**cfg, **change}))
    one_error(lorapack("build", samples / "llama" / "base", ad, "-o", tmp_path / "o.gguf", check=False), 2, expect)


def test_integer_weights_refused(samples, tmp_path):
    base = copy(samples, tmp_path)
    t = load_file(base / "model.safetensors")
    key = next(k for k in t if k.endswith("q_proj.weight"))
    t[key] = t[key].astype(np.int32)
    save_file(t, base / "model.safetensors")
    one_error(lorapack("build", base, "-o", tmp_path / "o.gguf", check=False), 2, "dtype I32")


def test_validate_truncated_artifact_is_a_failure_not_a_crash(samples, tmp_path, combined):
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(combined.read_bytes()[: combined.stat().st_size // 2])
    proc = lorapack("validate", cut, "--base", samples / "llama" / "base",
                    f"chat={samples / 'llama' / 'adapters' / 'plain'}", "--quiet", check=False)
    print(proc.stdout[-800:], proc.stderr[-800:])
    assert proc.returncode == 1 and "FAIL" in proc.stdout and "Traceback" not in proc.stderr


# --- found by an adversarial review: each was an internal error (exit 3), a warning on stderr or a lost input ----

@pytest.mark.parametrize("arch,edit", [
    ("llama", {"text_config": None}),
    ("gemma3", {"num_attention_heads": None}),
    ("llama", {"rope_parameters": {"rope_type": "yarn", "factor": 2.0}}),
    ("qwen2", {"rope_scaling": {"type": "yarn", "factor": 2.0, "original_max_position_embeddings": None}}),
    ("llama", {"rope_parameters": {"rope_theta": 1e300}}),
    ("llama", {"rope_parameters": {"full_attention": 5}}),
    ("phi3", {"rope_scaling": {"type": "linear", "factor": 2.0}}),
])
def test_config_shapes_that_crashed(samples, tmp_path, arch, edit):
    base = copy(samples, tmp_path, arch=arch)
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, **edit}))
    proc = lorapack("build", base, "-o", tmp_path / "o.gguf", check=False)
    if proc.returncode != 0:
        one_error(proc, 2)
    assert "Warning" not in proc.stderr


@pytest.mark.parametrize("change", [{"lora_alpha": 1e39}, {"alpha_pattern": {"q_proj": 1e300}}])
def test_overflowing_alphas_refused_in_one_line(samples, tmp_path, change):
    ad = copy(samples, tmp_path, "adapter", name="patterns")
    cfg = json.loads((ad / "adapter_config.json").read_text())
    (ad / "adapter_config.json").write_text(json.dumps({**cfg, **change}))
    for layout in ("combined", "merged"):
        one_error(lorapack("build", samples / "llama" / "base", ad, "--layout", layout, "-o", tmp_path / "o.gguf",
                           check=False), 2, next(iter(change)))


def test_force_never_replaces_files_inside_inputs(samples, tmp_path, combined):
    base, ad = copy(samples, tmp_path), copy(samples, tmp_path, "adapter")
    weights = (base / "model.safetensors").read_bytes()
    for target in (base / "model.safetensors", ad / "adapter_config.json"):
        one_error(lorapack("build", base, ad, "-o", target, "--force", check=False), 2, "inside the input")
    one_error(lorapack("validate", combined, "--base", base, f"chat={ad}", "--report", base / "model.safetensors",
                       "--force", check=False), 2, "inside the input")
    link = tmp_path / "link.gguf"
    link.symlink_to(combined)
    one_error(lorapack("validate", link, "--base", base, f"chat={ad}", "--report", combined, "--force",
                       check=False), 2, "replace the input")
    assert (base / "model.safetensors").read_bytes() == weights


def test_symlink_cannot_hide_an_input_inside_the_output(samples, tmp_path):
    ad = samples / "llama" / "adapters" / "plain"
    out = tmp_path / "out"
    lorapack("build", samples / "llama" / "base", ad, "--layout", "separate", "-o", out)
    shutil.copytree(samples / "llama" / "base", out / "base3")
    (tmp_path / "ol").symlink_to(out)
    one_error(lorapack("build", tmp_path / "ol" / "base3", ad, "--layout", "separate", "-o", out, "--force",
                       check=False), 2, "replace the input")
    assert (out / "base3" / "config.json").is_file()


def test_validate_checks_what_llama_cpp_requires_of_an_adapter(samples, tmp_path):
    from lorapack.spec.plan import string

    L = samples / "llama"
    lorapack("build", L / "base", f"a={L / 'adapters' / 'plain'}", "--layout", "separate", "-o", tmp_path / "s")
    ad = tmp_path / "s" / "adapters" / "a.gguf"
    for key, value in (("general.type", "model"), ("adapter.type", "ia3"), ("general.architecture", "phi3")):
        shutil.copy(ad, tmp_path / "orig.gguf")
        rewrite_gguf(tmp_path / "orig.gguf", ad, **{key.replace(".", "_"): string(key, value)})
        proc = lorapack("validate", tmp_path / "s", "--base", L / "base", f"a={L / 'adapters' / 'plain'}",
                        "--quiet", check=False)
        assert proc.returncode == 1 and f"a: {key}" in proc.stdout, proc.stdout
        shutil.copy(tmp_path / "orig.gguf", ad)


@pytest.mark.parametrize("bad", ["X=1", "=1", "F16=-1", "F16=nan", "F16=inf", "F16=1e400"])
def test_bad_tolerances_refused(bad):
    from lorapack.errors import LorapackError
    from lorapack.validate.tolerances import parse

    with pytest.raises(LorapackError, match="tolerance"):
        parse((bad,))


def test_scale_given_twice_refused(samples, tmp_path):
    one_error(lorapack("build", samples / "llama" / "base", samples / "llama" / "adapters" / "plain", "--layout",
                       "merged", "--scale", "plain=1", "--scale", "plain=2", "-o", tmp_path / "o.gguf",
                       check=False), 2, "twice")


def test_inspect_wrong_key_type_in_a_separate_folder(samples, tmp_path):
    from gguf import GGUFValueType as VT

    from lorapack.spec.plan import array

    L = samples / "llama"
    lorapack("build", L / "base", f"a={L / 'adapters' / 'plain'}", "--layout", "separate", "-o", tmp_path / "s")
    ad = tmp_path / "s" / "adapters" / "a.gguf"
    shutil.copy(ad, tmp_path / "orig.gguf")
    rewrite_gguf(tmp_path / "orig.gguf", ad,
                 lorapack_base_fingerprint=array("lorapack.base.fingerprint", ["x"], VT.STRING))
    one_error(lorapack("inspect", tmp_path / "s", check=False), 2, "lorapack.base.fingerprint")
