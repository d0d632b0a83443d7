"""Seeded fuzzing of the readers, in-process for breadth: mutated safetensors, GGUF files and configs must either
read correctly or raise LorapackError naming the problem — never another exception, never more than 10 s or
1 GiB for a case. (The CLI's side of the promise — exit code, stderr form — is tested in test_hostile.py.)"""

from __future__ import annotations

import json
import random
import resource
import shutil
import struct
import time

import pytest

from lorapack.errors import LorapackError

CASES = 150  # per format; the whole module runs in well under a minute
SECONDS = 10.0
GIB = 1 << 30


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Fuzz:
    """Runs cases, counting outcomes; any exception but LorapackError fails with the seed that made it."""

    def __init__(self):
        self.ok = self.refused = 0
        self.slowest = 0.0
        self.rss0 = _peak_rss()

    def case(self, label: str, fn) -> None:
        t = time.perf_counter()
        try:
            fn()
            self.ok += 1
        except LorapackError as e:
            assert str(e), f"{label}: empty error message"
            self.refused += 1
        except Exception as e:  # noqa: BLE001 — this is what the test is for
            raise AssertionError(f"{label}: {type(e).__name__}: {e}") from e
        took = time.perf_counter() - t
        self.slowest = max(self.slowest, took)
        assert took <= SECONDS, f"{label} took {took:.1f} s"
        assert _peak_rss() - self.rss0 <= GIB, f"{label} grew the peak RSS past 1 GiB"

    def report(self, what: str) -> None:
        print(f"{what}: {self.ok} read, {self.refused} refused with LorapackError, slowest case "
              f"{self.slowest * 1000:.0f} ms, peak RSS growth {(_peak_rss() - self.rss0) >> 20} MiB")


def _mutate(data: bytes, rng: random.Random, header_end: int) -> bytes:
    """Truncation, bit flips, overwritten runs or inserted bytes, mostly within the header."""
    b = bytearray(data)
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(b[: rng.randrange(len(b))])
    pos = rng.randrange(min(header_end, len(b)))
    if kind == 1:
        for _ in range(rng.randint(1, 8)):
            p = rng.randrange(min(header_end, len(b)))
            b[p] ^= 1 << rng.randrange(8)
    elif kind == 2:
        b[pos:pos + 8] = rng.choice([b"\xff" * 8, b"\x00" * 8, struct.pack("<Q", 1 << 40), b'"x":[[[['])
    else:
        b[pos:pos] = rng.randbytes(rng.randint(1, 16))
    return bytes(b)


# --- safetensors ------------------------------------------------------------------------------------------------

def _read_all_safetensors(path):
    from lorapack.formats.safetensors import read_safetensors

    for ref in read_safetensors(path).tensors.values():
        ref.read_f32() if ref.dtype in ("F32", "F16", "BF16") else ref.read_raw()


def _header_edits(header: dict) -> list[dict]:
    name = next(k for k in header if k != "__metadata__")
    t = header[name]
    edits = [[], "x", {"a": 1}, None]
    out = [{**header, name: e} for e in edits]
    for shape in ([], [0, 64], [-1, 4], [1e30], ["4"], [True], [1 << 62, 1 << 62], [[2]]):
        out.append({**header, name: {**t, "shape": shape}})
    for offs in (["0", "8"], [8, 0], [0], [-8, 0], [0, 1 << 62], None, [0.0, 8.0]):
        out.append({**header, name: {**t, "data_offsets": offs}})
    for dtype in ("F8_E4M3", "", 5, None, "f32"):
        out.append({**header, name: {**t, "dtype": dtype}})
    other = next((k for k in header if k not in ("__metadata__", name)), None)
    if other:  # overlapping tensors
        out.append({**header, other: {**header[other], "data_offsets": t["data_offsets"]}})
    out.append({**header, "__metadata__": {"format": 5}})
    return out


def _write_with_header(path, header, data: bytes) -> None:
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)


def test_fuzz_safetensors(samples, tmp_path):
    rng, fuzz = random.Random(6), Fuzz()
    for src in (samples / "llama" / "base" / "model.safetensors",
                samples / "llama" / "adapters" / "plain" / "adapter_model.safetensors"):
        raw = src.read_bytes()
        (n,) = struct.unpack("<Q", raw[:8])
        header, data = json.loads(raw[8:8 + n]), raw[8 + n:]
        target = tmp_path / "t.safetensors"
        for i in range(CASES):
            target.write_bytes(_mutate(raw, rng, 8 + n))
            fuzz.case(f"{src.name} mutation {i}", lambda: _read_all_safetensors(target))
        for i, h in enumerate(_header_edits(header)):
            _write_with_header(target, h, data)
            fuzz.case(f"{src.name} header edit {i}: {str(h)[:80]}", lambda: _read_all_safetensors(target))
        for i, text in enumerate([b"[" * 100000 + b"]" * 100000, b"[1,2]", b'{"a":1,"a":2}', b"\xff\xfe",
                                  b'{"x": ' + b"9" * 5000 + b"}"]):
            _write_with_header(target, text, data)
            fuzz.case(f"{src.name} raw header {i}", lambda: _read_all_safetensors(target))
    fuzz.report("safetensors")
    assert fuzz.refused > CASES  # the mutations are mostly fatal: the reader must have seen them


# --- GGUF -------------------------------------------------------------------------------------------------------

def _use_gguf(path, tmp_path):
    """Everything lorapack does with a GGUF it is handed: read, decode every key, open as an artifact,
    inspect, unpack."""
    from lorapack.formats.gguf import read_gguf
    from lorapack.outputs import staged
    from lorapack.pack.inspect import describe
    from lorapack.pack.unpack import unpack
    from lorapack.validate.artifact import dequantize, open_artifact

    f = read_gguf(path)
    for fld in f.fields.values():
        fld.value
    for t in f.tensors[:4]:
        dequantize(f, t)
    open_artifact(path)
    describe(path)
    out = tmp_path / "unpacked"
    with staged(out, force=True, kind="dir") as tmp:
        unpack(path, tmp)


def test_fuzz_gguf(samples, tmp_path):
    from conftest import lorapack

    combined = tmp_path / "c.gguf"
    lorapack("build", samples / "llama" / "base", samples / "llama" / "adapters" / "plain", "-o", combined,
             "--outtype", "q8_0")
    raw = combined.read_bytes()
    from lorapack.formats.gguf import read_gguf

    header_end = read_gguf(combined).tensors[0].offset
    rng, fuzz = random.Random(7), Fuzz()
    target = tmp_path / "t.gguf"
    for i in range(CASES * 2):
        target.write_bytes(_mutate(raw, rng, header_end))
        fuzz.case(f"gguf mutation {i}", lambda: _use_gguf(target, tmp_path))
    # hand-made headers: huge counts, a string array claiming 2^40 elements, alignment 0
    magic = struct.pack("<IIQQ", 0x46554747, 3, 0, 1)
    key = struct.pack("<Q", 3) + b"k.x"
    for i, body in enumerate([
        struct.pack("<IIQQ", 0x46554747, 3, 1 << 60, 1 << 60),
        magic + key + struct.pack("<IIQ", 9, 8, 1 << 40) + b"\0" * 64,
        magic + key + struct.pack("<IIQ", 9, 4, 1 << 61),
        magic + struct.pack("<Q", 17) + b"general.alignment" + struct.pack("<II", 4, 0),
        magic + struct.pack("<Q", 17) + b"general.alignment" + struct.pack("<II", 4, 3),
        magic + struct.pack("<Q", 1 << 62) + b"x",
    ]):
        target.write_bytes(body)
        fuzz.case(f"gguf header {i}", lambda: _use_gguf(target, tmp_path))
    fuzz.report("gguf")
    assert fuzz.refused > CASES


# --- configs ----------------------------------------------------------------------------------------------------

BAD_VALUES = [0, -1, "8", 2.5, None, True, [], {}, 1 << 40, float("nan")]
CONFIG_KEYS = ["num_attention_heads", "num_key_value_heads", "hidden_size", "num_hidden_layers",
               "intermediate_size", "vocab_size", "rms_norm_eps", "rope_theta", "max_position_embeddings",
               "architectures", "tie_word_embeddings", "rope_scaling", "head_dim"]
TOKENIZER_KEYS = ["added_tokens_decoder", "add_bos_token", "add_eos_token", "bos_token", "eos_token",
                  "chat_template", "add_prefix_space", "tokenizer_class", "model_max_length", "pad_token"]
ADAPTER_KEYS = ["r", "lora_alpha", "target_modules", "alpha_pattern", "rank_pattern", "use_rslora", "use_dora",
                "peft_type", "modules_to_save", "layers_to_transform"]


def _build(base, adapter, out):
    from lorapack.build import BuildRequest, run_build

    class Bar:
        def __call__(self, n):
            pass

        def close(self):
            pass

    run_build(BuildRequest(base, [f"a={adapter}"], out, force=True), lambda total: Bar())


@pytest.mark.parametrize("which", ["config", "adapter_config", "tokenizer_config", "added_tokens"])
def test_fuzz_configs(samples, tmp_path, which):
    rng, fuzz = random.Random(8), Fuzz()
    base, adapter = tmp_path / "base", tmp_path / "adapter"
    shutil.copytree(samples / "llama" / "base", base)
    shutil.copytree(samples / "llama" / "adapters" / "patterns", adapter)
    path = {"config": base / "config.json", "adapter_config": adapter / "adapter_config.json",
            "tokenizer_config": base / "tokenizer_config.json", "added_tokens": base / "added_tokens.json"}[which]
    original = json.loads(path.read_text()) if path.exists() else {"<extra>": 3}
    keys = {"config": CONFIG_KEYS, "adapter_config": ADAPTER_KEYS, "tokenizer_config": TOKENIZER_KEYS,
            "added_tokens": ["<extra>", "<x>"]}[which]
    cases = [(k, v) for k in keys for v in BAD_VALUES]
    cases += [("added_tokens_decoder", {"x": {"content": "a"}}), ("added_tokens_decoder", {"3": {"content": 5}}),
              ("added_tokens_decoder", {"3": "a"})] if which == "tokenizer_config" else []
    cases += [("alpha_pattern", {"(a+)+$": 4}), ("rank_pattern", {"(": 4}), ("target_modules", "(x+x+)+y"),
              ("alpha_pattern", {r"(.*\.)?((\w+\.?)+z)": 4})] if which == "adapter_config" else []
    rng.shuffle(cases)
    for i, (key, value) in enumerate(cases):
        path.write_text(json.dumps({**original, key: value}))
        fuzz.case(f"{which} {key}={value!r}", lambda: _build(base, adapter, tmp_path / f"o{i}.gguf"))
    for i in range(20):  # truncated and bit-flipped JSON
        text = json.dumps(original).encode()
        path.write_bytes(_mutate(text, rng, len(text)))
        fuzz.case(f"{which} mutation {i}", lambda: _build(base, adapter, tmp_path / f"m{i}.gguf"))
    fuzz.report(which)
    assert fuzz.refused > 0  # some values are ignorable (gguf-py skips a non-bool add_bos_token, as llama.cpp)


# the fields Qwen 3.5's and Gemma 4's metadata and transforms read (linear attention, MTP, per-layer shapes)
ARCH_KEYS = {"qwen35": ["linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim",
                        "linear_value_head_dim", "linear_conv_kernel_dim", "mtp_num_hidden_layers", "layer_types",
                        "full_attention_interval", "head_dim"],
             "gemma4": ["per_layer_config", "global_head_dim", "num_global_key_value_heads", "num_kv_shared_layers",
                        "hidden_size_per_layer_input", "layer_types", "rope_parameters", "use_double_wide_mlp"]}


@pytest.mark.parametrize("arch", sorted(ARCH_KEYS))
def test_fuzz_architecture_configs(samples, tmp_path, arch):
    """Each field through what conversion computes from it before reading tensor data: the config check, the
    architecture's metadata, every tensor's name, type and transforms (the small ones produced)."""
    from gguf import GGMLQuantizationType as QT

    from lorapack.convert.base import base_tensors, resolve
    from lorapack.convert.checkpoint import load_checkpoint

    base = tmp_path / "base"
    shutil.copytree(samples / arch / "base", base)
    original = json.loads((base / "config.json").read_text())
    cases = [(k, v) for k in ARCH_KEYS[arch] for v in BAD_VALUES]
    cases += [("per_layer_config", {"3": {"head_dim": "x"}}), ("per_layer_config", [1]),
              ("linear_num_value_heads", 3), ("num_kv_shared_layers", 9), ("layer_types", ["full_attention"])]

    def plan():
        model = resolve(load_checkpoint(base))
        model.spec.metadata(model.h, 1)
        for t in base_tensors(model, QT.F16, {}, None):
            if t.name.startswith(("rope_freqs", "blk.0.ssm_", "blk.0.attn_gate")):
                t.produce()

    fuzz = Fuzz()
    for key, value in cases:
        (base / "config.json").write_text(json.dumps({**original, key: value}))
        fuzz.case(f"{arch} config {key}={value!r}", plan)
    fuzz.report(f"{arch} config")
    assert fuzz.refused > 0 and fuzz.ok > 0
