"""`lorapack validate`: every correct artifact passes; every planted defect fails (exit 1) and is named."""

from __future__ import annotations

import json
import mmap
import shutil
import struct

import numpy as np
import pytest
from conftest import lorapack, record
from gguf import GGUFReader
from reference_math import unpermute

from lorapack.formats.gguf import read_gguf

LLAMA = "llama"


def validate(artifact, samples, arch=LLAMA, adapters=("plain", "rs=rslora"), *extra, check=None):
    args = [f"{a.split('=')[0]}={samples / arch / 'adapters' / a.split('=')[-1]}" for a in adapters]
    proc = lorapack("validate", artifact, "--base", samples / arch / "base", *args, *extra, check=False)
    print(proc.stdout[-3000:], proc.stderr[-2000:])
    if check is not None:
        assert proc.returncode == check, proc.stderr
    return proc


@pytest.fixture(scope="module")
def good(samples, tmp_path_factory):
    """A correct separate artifact: llama base (q/k permuted) with a plain and an rsLoRA adapter."""
    d = tmp_path_factory.mktemp("good")
    ads = [f"plain={samples / LLAMA / 'adapters' / 'plain'}", f"rs={samples / LLAMA / 'adapters' / 'rslora'}"]
    lorapack("build", samples / LLAMA / "base", *ads, "-o", d / "sep", "--layout", "separate")
    lorapack("build", samples / LLAMA / "base", *ads, "-o", d / "q8", "--layout", "separate", "--outtype", "q8_0")
    return d


def planted(good, tmp_path, which="sep"):
    dest = tmp_path / which
    shutil.copytree(good / which, dest)
    return dest


def patch_tensor(path, name, fn):
    """fn(values) → new values, for one tensor in place: F32/F16 as typed arrays, block types as each row's
    bytes (what gguf-py's reader shows), located by lorapack's own reader (gguf-py's is slow on large vocabs)."""
    t = next(t for t in read_gguf(path).tensors if t.name == name)
    if t.qtype.name in ("F32", "F16"):
        dtype, shape = np.float32 if t.qtype.name == "F32" else np.float16, t.shape
    else:
        dtype, shape = np.uint8, (*t.shape[:-1], t.nbytes // max(1, int(np.prod(t.shape[:-1]))))
    data = np.memmap(path, dtype=dtype, mode="r+", offset=t.offset, shape=shape)
    data[...] = fn(np.array(data))
    data.flush()
    del data


_SCALAR = {"UINT8": "<B", "INT8": "<b", "UINT16": "<H", "INT16": "<h", "UINT32": "<I", "INT32": "<i",
           "FLOAT32": "<f", "UINT64": "<Q", "INT64": "<q", "FLOAT64": "<d", "BOOL": "<?"}


def patch_key(path, key, value):
    """A scalar key's value in place, found by its stored bytes (lorapack's reader; gguf-py's is slow)."""
    field = read_gguf(path).fields[key]
    stored = struct.pack("<Q", len(key.encode())) + key.encode() + field.raw
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        at = mm.find(stored)
        assert at >= 0 and mm.find(stored, at + 1) < 0, f"{key} not found once"
        new = struct.pack(_SCALAR[field.vtype.name], value)
        mm[at + len(stored) - len(new): at + len(stored)] = new


def patch_many(path, keys: dict, tensors: dict):
    for key, value in keys.items():
        patch_key(path, key, value)
    for name, fn in tensors.items():
        patch_tensor(path, name, fn)


def expect_named(proc, *names):
    assert proc.returncode == 1, f"expected a mismatch (exit 1), got {proc.returncode}"
    for n in names:
        assert n in proc.stdout, f"{n} not named in the output"


def test_correct_artifact_passes(good, samples):
    proc = validate(good / "sep", samples, check=0)
    assert "PASS" in proc.stdout


ADAPTER_DEFECTS = {
    "scaled lora_b": ("blk.1.attn_v.weight.lora_b", lambda d: d * np.float16(1.05)),
    "zeroed lora_b": ("blk.0.ffn_up.weight.lora_b", lambda d: np.zeros_like(d)),
    "missing q/k permutation": ("blk.0.attn_q.weight.lora_b", lambda d: unpermute(d, 4)),
}


@pytest.mark.parametrize("defect", ADAPTER_DEFECTS)
def test_adapter_tensor_defects(good, samples, tmp_path, defect):
    name, fn = ADAPTER_DEFECTS[defect]
    art = planted(good, tmp_path)
    patch_tensor(art / "adapters" / "plain.gguf", name, fn)
    expect_named(validate(art, samples), name)


def test_swapped_layers(good, samples, tmp_path):
    art = planted(good, tmp_path)
    path = art / "adapters" / "plain.gguf"
    r = GGUFReader(path, "r+")
    t0, t1 = (next(t for t in r.tensors if t.name == f"blk.{i}.attn_v.weight.lora_b") for i in (0, 1))
    a, b = np.array(t0.data), np.array(t1.data)
    t0.data[...], t1.data[...] = b, a
    expect_named(validate(art, samples), "blk.0.attn_v.weight.lora_b", "blk.1.attn_v.weight.lora_b")


def test_wrong_alpha(good, samples, tmp_path):
    art = planted(good, tmp_path)
    patch_key(art / "adapters" / "plain.gguf", "adapter.lora.alpha", 24.0)
    expect_named(validate(art, samples), "adapter.lora.alpha", "blk.0.attn_q.weight.lora_b")


def test_rslora_scaled_as_plain_lora(good, samples, tmp_path, ref_run):
    """llama.cpp's own converter writes lora_alpha and ignores rsLoRA: exactly this defect."""
    art = planted(good, tmp_path)
    theirs = ref_run.lora(samples / LLAMA / "adapters" / "rslora", samples / LLAMA / "base", "f16")
    shutil.copy(theirs, art / "adapters" / "rs.gguf")
    proc = validate(art, samples)
    expect_named(proc, "rs: adapter.lora.alpha", "blk.0.attn_q.weight.lora_b")


def test_dropped_pair(good, samples, tmp_path):
    from lorapack.formats.gguf import read_gguf
    from lorapack.pack.gguf_io import write_plan
    from lorapack.pack.unpack import _subplan
    from lorapack.spec.plan import Plan

    art = planted(good, tmp_path)
    path = art / "adapters" / "plain.gguf"
    f = read_gguf(path)
    plan: Plan = _subplan(f, lambda k: True, lambda t: not t.startswith("blk.1.ffn_down.weight."))
    write_plan(tmp_path / "x.gguf", plan)
    shutil.move(tmp_path / "x.gguf", path)
    expect_named(validate(art, samples), "model.layers.1.mlp.down_proj")


@pytest.mark.parametrize("name", ["blk.1.ffn_gate.weight", "token_embd.weight"])
def test_perturbed_base_tensor(good, samples, tmp_path, name):
    art = planted(good, tmp_path)
    rng = np.random.default_rng(0)
    noise = lambda d: (d + rng.normal(0, 0.05 * np.abs(d).max(), d.shape)).astype(d.dtype)  # noqa: E731
    patch_tensor(art / "base.gguf", name, noise)
    expect_named(validate(art, samples), name)


def test_wrong_hyperparameter(good, samples, tmp_path):
    art = planted(good, tmp_path)
    patch_key(art / "base.gguf", "llama.attention.head_count_kv", 1)
    expect_named(validate(art, samples), "llama.attention.head_count_kv")


def test_q8_0_data_corrupted(good, samples, tmp_path):
    art = planted(good, tmp_path, "q8")
    patch_tensor(art / "base.gguf", "blk.0.attn_output.weight", lambda d: d[..., ::-1].copy())
    expect_named(validate(art, samples), "blk.0.attn_output.weight")


def test_adapter_from_another_base(good, samples, tmp_path):
    """Same shapes, other weights: only the recorded fingerprint can tell, and it must."""
    from safetensors.numpy import load_file, save_file

    other = tmp_path / "other-base"
    shutil.copytree(samples / LLAMA / "base", other)
    t = load_file(other / "model.safetensors")
    t["model.norm.weight"] = t["model.norm.weight"] * 1.5
    save_file(t, other / "model.safetensors", metadata={"format": "pt"})
    lorapack("build", other, samples / LLAMA / "adapters" / "plain", "-o", tmp_path / "o", "--layout", "separate",
             "--adapters-only")
    art = planted(good, tmp_path)
    shutil.copy(tmp_path / "o" / "adapters" / "plain.gguf", art / "adapters" / "plain.gguf")
    expect_named(validate(art, samples), "plain: lorapack.base.fingerprint")


def test_adapter_on_one_side_only(good, samples):
    proc = validate(good / "sep", samples, LLAMA, ("plain",))
    expect_named(proc, "adapter rs")


def test_truncated_artifact_is_a_mismatch(good, samples, tmp_path):
    art = planted(good, tmp_path)
    data = (art / "base.gguf").read_bytes()
    (art / "base.gguf").write_bytes(data[: len(data) // 2])
    proc = validate(art, samples)
    assert proc.returncode == 1 and "truncated" in proc.stdout


def test_bad_arguments_exit_2(good, samples, tmp_path):
    proc = lorapack("validate", good / "sep", "--base", tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error:")
    proc = validate(good / "sep", samples, LLAMA, ("plain", "rs=rslora"), "--tolerance", "F16=abc")
    assert proc.returncode == 2


@pytest.mark.parametrize("layout,outtype", [("combined", "f32"), ("combined", "bf16"), ("merged", "f16"),
                                            ("merged", "q8_0"), ("separate", "q4_0"), ("separate", "q5_0")])
def test_clean_artifacts_of_every_type_pass(samples, tmp_path, layout, outtype):
    arch = "phi3" if outtype in ("bf16", "q4_0") else "qwen2" if layout == "merged" else LLAMA
    ads = ("plain",) if arch != LLAMA else ("plain", "rs=rslora")
    args = [f"{a.split('=')[0]}={samples / arch / 'adapters' / a.split('=')[-1]}" for a in ads]
    out = tmp_path / ("a.gguf" if layout != "separate" else "a")
    lorapack("build", samples / arch / "base", *args, "-o", out, "--layout", layout, "--outtype", outtype)
    validate(out, samples, arch, ads, check=0)


def test_dora_and_modules_to_save_in_combined(samples, tmp_path):
    ads = ("dora", "save_head")
    args = [f"{a}={samples / LLAMA / 'adapters' / a}" for a in ads]
    lorapack("build", samples / LLAMA / "base", *args, "-o", tmp_path / "c.gguf")
    validate(tmp_path / "c.gguf", samples, LLAMA, ads, check=0)


def test_report_is_stable_and_junit_written(good, samples, tmp_path):
    reports = []
    for i in range(2):
        validate(good / "sep", samples, LLAMA, ("plain", "rs=rslora"), "--report", tmp_path / f"r{i}.json",
                 "--junit", tmp_path / "j.xml", "--seed", "7", "--force", check=0)
        r = json.loads((tmp_path / f"r{i}.json").read_text())
        r.pop("timing")
        reports.append(r)
    assert reports[0] == reports[1] and reports[0]["verdict"] == "pass"
    assert {"name", "kind", "value", "tolerance", "verdict"} <= set(reports[0]["checks"][0])
    junit = (tmp_path / "j.xml").read_text()
    assert "<testsuite" in junit and 'failures="0"' in junit


def test_modules_to_save_weights_are_checked(samples, tmp_path):
    base, ad = samples / LLAMA / "base", samples / LLAMA / "adapters" / "save_head"
    lorapack("build", base, ad, "-o", tmp_path / "m.gguf", "--layout", "merged")
    validate(tmp_path / "m.gguf", samples, LLAMA, ("save_head",), check=0)
    lorapack("build", base, ad, "-o", tmp_path / "c.gguf")
    patch_tensor(tmp_path / "c.gguf", "adapter.save_head.output.weight", lambda d: d[::-1].copy())
    expect_named(validate(tmp_path / "c.gguf", samples, LLAMA, ("save_head",)), "adapter.save_head.output.weight")


def _lora_b(path) -> dict[str, tuple]:
    return {t.name: tuple(t.shape) for t in GGUFReader(path).tensors if t.name.endswith(".lora_b")}


def _drop(path, stem, tmp_path):
    from lorapack.formats.gguf import read_gguf
    from lorapack.pack.gguf_io import write_plan
    from lorapack.pack.unpack import _subplan

    plan = _subplan(read_gguf(path), lambda k: True, lambda t: not t.startswith(stem + "."))
    write_plan(tmp_path / "dropped.gguf", plan)
    shutil.move(tmp_path / "dropped.gguf", path)


@pytest.mark.parametrize("arch", ["llama", "phi3", "gemma2", "gemma3", "gemma3mm", "granite", "mistral3", "qwen2",
                                  "qwen3", "smollm3", "olmo2", "olmo3", "qwen35", "gemma4"])
def test_planted_defects_every_architecture(samples, tmp_path, arch):
    """The defects of the llama tests above, planted together in other architectures' artifacts (each in its
    own tensor or key, so each must be named on its own)."""
    base, plain = samples / arch / "base", samples / arch / "adapters" / "plain"
    ads = (f"one={plain}", f"two={plain}")
    lorapack("build", base, *ads, "-o", tmp_path / "art", "--layout", "separate")
    clean = lorapack("validate", tmp_path / "art", "--base", base, *ads, "--quiet", check=False)
    assert clean.returncode == 0, clean.stdout
    one, two = tmp_path / "art" / "adapters" / "one.gguf", tmp_path / "art" / "adapters" / "two.gguf"
    b = sorted(_lora_b(one))
    layer0 = [n for n in b if n.startswith("blk.0.")]
    swap_a = next(n for n in layer0 if n.replace("blk.0.", "blk.1.") in b)  # a module both layers have
    swap_b = swap_a.replace("blk.0.", "blk.1.")
    rest = [n for n in layer0 if n != swap_a]
    scaled, zeroed, dropped = rest[0], rest[-1], b[-1].removesuffix(".lora_b")
    patch_tensor(one, scaled, lambda d: d * np.float16(1.05))
    patch_tensor(one, zeroed, lambda d: np.zeros_like(d))
    r = GGUFReader(one, "r+")
    ta, tb = (next(t for t in r.tensors if t.name == n) for n in (swap_a, swap_b))
    xa, xb = np.array(ta.data), np.array(tb.data)
    ta.data[...], tb.data[...] = xb, xa
    del r
    _drop(one, dropped, tmp_path)
    patch_key(two, "adapter.lora.alpha", 3.0)
    rng = np.random.default_rng(1)
    # the multimodal checkpoint's text model is gemma3; OLMo 3 is llama.cpp's olmo2
    gguf_arch = {"gemma3mm": "gemma3", "olmo3": "olmo2"}.get(arch, arch)
    keys, specific = {f"{gguf_arch}.block_count": 7}, []
    if arch == "gemma2":  # a wrong soft-cap
        keys["gemma2.final_logit_softcapping"] = 30.0
    elif arch == "olmo3":  # a wrong sliding window
        keys["olmo2.attention.sliding_window"] = 4096
    elif arch == "gemma4":  # a wrong soft-cap; below, a scaled layer output scale and per-layer embedding
        keys["gemma4.final_logit_softcapping"] = 30.0
    elif arch == "granite":  # a wrong multiplier
        keys["granite.residual_scale"] = 1.0
    specific += [k for k in keys if not k.endswith("block_count")]
    patch_many(tmp_path / "art" / "base.gguf", keys, {
        "token_embd.weight": lambda d: (d + rng.normal(0, 0.05 * np.abs(d).max(), d.shape)).astype(d.dtype),
        "blk.1.ffn_down.weight": lambda d: d * np.float16(1.05)})
    if arch == "qwen3":  # its own feature: per-head q/k norms; a converter that drops one must be caught
        _drop(tmp_path / "art" / "base.gguf", "blk.0.attn_q_norm", tmp_path)
        specific = ["model.layers.0.self_attn.q_norm.weight"]
    elif arch == "olmo2":  # its q/k norms span whole projections; drop one
        _drop(tmp_path / "art" / "base.gguf", "blk.1.attn_k_norm", tmp_path)
        specific = ["model.layers.1.self_attn.k_norm.weight"]
    elif arch == "gemma4":
        patch_many(tmp_path / "art" / "base.gguf", {}, {
            "blk.1.layer_output_scale.weight": lambda d: d * np.float32(1.05),
            "per_layer_token_embd.weight": lambda d: d[::-1].copy()})
        specific += ["blk.1.layer_output_scale.weight", "per_layer_token_embd.weight"]
    elif arch == "qwen35":  # V heads left in HF's grouped order (rows of attn_gate, columns of ssm_out), A_log
        # stored without -exp, and the MTP block's input projection scaled
        patch_many(tmp_path / "art" / "base.gguf", {}, {
            # tiled (3 V heads per K head, 2 K heads) back to grouped
            "blk.0.attn_gate.weight": lambda d: d.reshape(3, 2, -1, d.shape[-1]).swapaxes(0, 1).reshape(d.shape),
            "blk.0.ssm_out.weight": lambda d: d.reshape(d.shape[0], 3, 2, -1).swapaxes(1, 2).reshape(d.shape),
            "blk.0.ssm_a": lambda d: np.log(-d),
            "blk.2.nextn.eh_proj.weight": lambda d: d * np.float16(1.05)})
        specific += ["blk.0.attn_gate.weight", "blk.0.ssm_out.weight", "blk.0.ssm_a", "blk.2.nextn.eh_proj.weight"]
    proc = lorapack("validate", tmp_path / "art", "--base", base, *ads, "--quiet", check=False)
    print(proc.stdout[-3000:])
    hf_dropped = "model.layers." + dropped.split(".")[1]
    planted = [scaled, zeroed, swap_a, swap_b, hf_dropped, "two: adapter.lora.alpha", "token_embd.weight",
               "blk.1.ffn_down.weight", f"{gguf_arch}.block_count", *specific]
    expect_named(proc, *planted)
    # q8_0 data corrupted (an adapter from another base is caught by the fingerprint, as in the llama test)
    lorapack("build", base, f"one={plain}", "-o", tmp_path / "q8", "--layout", "separate", "--outtype", "q8_0")
    patch_tensor(tmp_path / "q8" / "base.gguf", "blk.0.ffn_up.weight", lambda d: d[..., ::-1].copy())
    expect_named(lorapack("validate", tmp_path / "q8", "--base", base, f"one={plain}", "--quiet", check=False),
                 "blk.0.ffn_up.weight")
    record(arch, "validate", f"clean pass; {len(planted) + 1} planted defects named")


@pytest.mark.parametrize("arch,tensor", [("qwen35mm", "blk.0.attn_qkv.weight"), ("gemma4mm", "blk.3.attn_q.weight")])
def test_multimodal_text_models(samples, tmp_path, arch, tensor):
    """Qwen 3.5's and Gemma 4's multimodal checkpoints: their text models validate clean (features planted as
    defects in the text-only samples above, which share the code) and a scaled text-model tensor is named."""
    base, plain = samples / arch / "base", samples / arch / "adapters" / "plain"
    lorapack("build", base, f"one={plain}", "-o", tmp_path / "art", "--layout", "separate")
    validate_art = ("validate", tmp_path / "art", "--base", base, f"one={plain}", "--quiet")
    assert lorapack(*validate_art, check=False).returncode == 0
    patch_tensor(tmp_path / "art" / "base.gguf", tensor, lambda d: d * np.float16(1.05))
    expect_named(lorapack(*validate_art, check=False), tensor)
    record(arch, "validate", "clean pass; a scaled text-model tensor named")


@pytest.mark.parametrize("arch", ["llama", "gemma3mm"])
def test_end_to_end_tiny_samples(samples, tmp_path, arch):
    """--end-to-end on a clean f32 artifact passes (tolerance from the base's and the adapter's stored types;
    llama.cpp's F16 KV cache floors its share at 2e-3), and a zeroed adapter fails on the logits."""
    lorapack("build", samples / arch / "base", f"plain={samples / arch / 'adapters' / 'plain'}", "-o",
             tmp_path / "s", "--layout", "separate", "--outtype", "f32")
    validate(tmp_path / "s", samples, arch, ("plain",), "--end-to-end", "--quiet", check=0)
    ad = tmp_path / "s" / "adapters" / "plain.gguf"
    for name in _lora_b(ad):
        patch_tensor(ad, name, lambda d: np.zeros_like(d))
    proc = validate(tmp_path / "s", samples, arch, ("plain",), "--end-to-end", "--quiet")
    expect_named(proc, "pytorch logits, plain", "llama.cpp logits, plain")


def test_reference_holds_no_base_weights(samples):
    """Without --end-to-end the PEFT reference is built with a stand-in for every base parameter (no memory):
    what it holds is the adapters' tensors, and an adapted layer's base weight only while it runs. Memory then
    does not grow with the model (benchmarks/bench_scale.py measures it at 8B)."""
    from lorapack.validate.reference import PeftReference, Source, is_stand_in

    base, plain = samples / LLAMA / "base", samples / LLAMA / "adapters" / "plain"
    ref = PeftReference(base, {"plain": plain}, weights=Source(base))
    held = {n: p for n, p in ref.model.named_parameters() if not is_stand_in(p)}
    real = {n for n in held if ".lora_" not in n}
    base_bytes = sum(p.numel() * p.element_size() for n, p in ref.model.named_parameters() if n not in held)
    print(f"{len(held)} real parameters, all LoRA; {base_bytes} bytes of base weights stood in for")
    assert held and not real, sorted(real)[:5]
    assert base_bytes > 0
    layer = ref.layers["plain"]["model.layers.0.mlp.down_proj"]
    x = np.random.default_rng(0).standard_normal((4, layer.base_layer.in_features), dtype=np.float32)
    assert np.abs(ref.contribution("plain", "model.layers.0.mlp.down_proj", x)).max() > 0
    assert is_stand_in(layer.base_layer.weight)  # released after the layer ran


def test_several_adapters_read_each_base_weight_once(good, samples, monkeypatch):
    """Two adapters of the same layers: the contributions run layer by layer, so each adapted layer's base weight
    is read from the source once for both (the report keeps its adapter-by-adapter order)."""
    import collections

    from lorapack.validate import reference
    from lorapack.validate.run import Request
    from lorapack.validate.run import validate as run_validate

    reads, real = collections.Counter(), reference.Source.get

    def get(self, name, rows=None, out=None):
        if out is not None:  # a layer's whole base weight, for PEFT's forward
            reads[name] += 1
        return real(self, name, rows, out)

    monkeypatch.setattr(reference.Source, "get", get)
    adapters = [("plain", samples / LLAMA / "adapters" / "plain"), ("rs", samples / LLAMA / "adapters" / "rslora")]
    result = run_validate(Request(good / "sep", samples / LLAMA / "base", adapters))
    pairs = [c.name for c in result.checks if c.kind == "adapter"]
    print(f"{len(pairs)} adapter checks, {len(reads)} base weights read, at most {max(reads.values())} times each")
    assert result.ok and len(pairs) > len(reads) > 0
    assert max(reads.values()) == 1
    assert [n.split(":")[0] for n in pairs] == sorted((n.split(":")[0] for n in pairs), key=["plain", "rs"].index)


def test_end_to_end_refused_up_front_when_it_cannot_fit(samples, tmp_path):
    """--end-to-end on a model that cannot fit in this machine's memory exits 2 with the memory it would need,
    before anything is loaded: never an out-of-memory kill part way through. The 70B-shaped checkpoint is a
    sparse file (a header and holes), so the test costs nothing."""
    base = tmp_path / "big"
    base.mkdir()
    h, ff, layers = 8192, 28672, 80
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": h,
              "intermediate_size": ff, "num_hidden_layers": layers, "num_attention_heads": 64,
              "num_key_value_heads": 8, "vocab_size": 128256, "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16"}
    (base / "config.json").write_text(json.dumps(config))
    header, offset = {}, 0
    for i in range(layers):
        for proj, shape in (("gate", (ff, h)), ("up", (ff, h)), ("down", (h, ff))):
            n = 2 * shape[0] * shape[1]
            header[f"model.layers.{i}.mlp.{proj}_proj.weight"] = {"dtype": "BF16", "shape": list(shape),
                                                                  "data_offsets": [offset, offset + n]}
            offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(base / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset)  # ~113 GB of holes
    art = tmp_path / "art.gguf"
    art.write_bytes(b"")
    proc = lorapack("validate", art, "--base", base, f"plain={samples / LLAMA / 'adapters' / 'plain'}",
                    "--end-to-end", check=False)
    print(proc.stderr)
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "--end-to-end needs about" in error[0] and "GiB" in error[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_multimodal_adapter_in_either_naming(samples, tmp_path):
    """A Gemma 3 multimodal adapter keyed language_model.model.layers.N (transformers 4's naming, the checkpoint's)
    builds the same tensors as one keyed model.language_model.layers.N (PEFT on transformers 5), and validates."""
    from safetensors.numpy import load_file, save_file

    from lorapack.formats.gguf import read_gguf

    S = samples / "gemma3mm"
    old = tmp_path / "old"
    shutil.copytree(S / "adapters" / "plain", old)
    t = load_file(old / "adapter_model.safetensors")
    save_file({k.replace("base_model.model.model.language_model.", "base_model.model.language_model.model."): v
               for k, v in t.items()}, old / "adapter_model.safetensors")
    for name, ad in (("new", S / "adapters" / "plain"), ("old", old)):
        lorapack("build", S / "base", f"{name}={ad}", "--layout", "separate", "-o", tmp_path / f"{name}-art")
    new_f, old_f = (read_gguf(tmp_path / f"{n}-art" / "adapters" / f"{n}.gguf") for n in ("new", "old"))
    assert [(t.name, t.shape) for t in new_f.tensors] == [(t.name, t.shape) for t in old_f.tensors]
    assert all(np.array_equal(new_f.read(a), old_f.read(b)) for a, b in zip(new_f.tensors, old_f.tensors))
    proc = lorapack("validate", tmp_path / "old-art", "--base", S / "base", f"old={old}", "--quiet", check=False)
    print(proc.stdout)
    assert proc.returncode == 0
