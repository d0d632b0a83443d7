"""Conversion speed and memory: lorapack against llama.cpp's converters, same machine, same input, same run.

    .venv/bin/python benchmarks/bench_convert.py [--models gemma3-270m,llama-1.5b] [--repeat 1]

For each model: llama.cpp's convert_hf_to_gguf.py (base) + convert_lora_to_gguf.py (adapter), against one
`lorapack build --layout separate` writing both, all to f16. Each command runs in a fresh process; wall time and
that process's peak RSS are measured (ru_maxrss of the child). Results: benchmarks/results/convert.json and .png.
The ~1.5B-parameter llama checkpoint (bf16, two shards, random weights) and its rank-16 adapter are generated
on first use under benchmarks/.data/ without torch, one tensor at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / ".data"
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "scripts"))

_MEASURE = ("import resource, subprocess, sys, time; t = time.perf_counter(); "
            "rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode; "
            "w = time.perf_counter() - t; "
            "print(rc, w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def measure(cmd: list[str]) -> dict:
    """Wall seconds and peak RSS (MiB) of one command, run by a fresh wrapper so ru_maxrss is that child's."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True)
    rc, wall, rss_kb = out.stdout.split()
    if int(rc) != 0:
        raise SystemExit(f"command failed ({rc}): {' '.join(cmd)}")
    return {"wall_s": round(float(wall), 2), "peak_rss_mib": round(int(rss_kb) / 1024, 1)}


# --- a generated ~1.5B llama ------------------------------------------------------------------------------------

LLAMA_15B = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
                 num_key_value_heads=16, vocab_size=32000)


def _write_safetensors(path: Path, specs: list[tuple[str, tuple[int, ...]]], rng) -> None:
    """bf16 safetensors written tensor by tensor (header first: offsets follow from the shapes)."""
    header, offset = {}, 0
    for name, shape in specs:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for name, shape in specs:
            std = 1.0 if name.endswith("norm.weight") else 0.02
            v = rng.standard_normal(shape, dtype=np.float32) * std
            f.write((v.view(np.uint32) >> 16).astype(np.uint16).tobytes())


def make_llama_15b(dest: Path) -> tuple[Path, Path]:
    base, adapter = dest / "base", dest / "adapter"
    if (dest / "done").exists():
        return base, adapter
    shutil.rmtree(dest, ignore_errors=True)
    base.mkdir(parents=True)
    c = LLAMA_15B
    h, ff, L = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    layer = lambda i: [  # noqa: E731
        (f"model.layers.{i}.input_layernorm.weight", (h,)), (f"model.layers.{i}.mlp.down_proj.weight", (h, ff)),
        (f"model.layers.{i}.mlp.gate_proj.weight", (ff, h)), (f"model.layers.{i}.mlp.up_proj.weight", (ff, h)),
        (f"model.layers.{i}.post_attention_layernorm.weight", (h,)),
        *[(f"model.layers.{i}.self_attn.{p}_proj.weight", (h, h)) for p in "kvoq"]]
    shards = [[("model.embed_tokens.weight", (c["vocab_size"], h))] + sum((layer(i) for i in range(L // 2)), []),
              sum((layer(i) for i in range(L // 2, L)), []) + [("lm_head.weight", (c["vocab_size"], h)),
                                                                 ("model.norm.weight", (h,))]]
    rng = np.random.default_rng(0)
    weight_map = {}
    for k, specs in enumerate(shards):
        name = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        _write_safetensors(base / name, specs, rng)
        weight_map.update({n: name for n, _ in specs})
    (base / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "rms_norm_eps": 1e-5,
              "max_position_embeddings": 4096, "rope_theta": 10000.0, "tie_word_embeddings": False,
              "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu", **c}
    (base / "config.json").write_text(json.dumps(config, indent=1))
    tok = ROOT / "samples" / "out" / "llama" / "base"
    for f in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(tok / f, base / f)
    _make_adapter(adapter, specs=[n for s in shards for n, shape in s if len(shape) == 2 and "layers" in n],
                  shapes={n: shape for s in shards for n, shape in s}, rng=rng)
    (dest / "done").write_text("ok\n")
    return base, adapter


def _make_adapter(dest: Path, specs: list[str], shapes: dict, rng, r: int = 16) -> None:
    from safetensors.numpy import save_file

    dest.mkdir(parents=True)
    tensors = {}
    for name in specs:
        out, inp = shapes[name]
        stem = "base_model.model." + name[: -len(".weight")]
        tensors[f"{stem}.lora_A.weight"] = (rng.standard_normal((r, inp), dtype=np.float32) * 0.01)
        tensors[f"{stem}.lora_B.weight"] = (rng.standard_normal((out, r), dtype=np.float32) * 0.01)
    save_file(tensors, dest / "adapter_model.safetensors")
    (dest / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": r, "lora_alpha": 32, "task_type": "CAUSAL_LM", "use_rslora": False,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}))


# --- the runs ---------------------------------------------------------------------------------------------------

def bench(name: str, base: Path, adapter: Path, ref: Path, tmp: Path, repeat: int) -> dict:
    py, lorapack = sys.executable, str(Path(sys.executable).parent / "lorapack")
    runs = {"llama.cpp base": [py, str(ref / "convert_hf_to_gguf.py"), str(base), "--outtype", "f16",
                               "--outfile", str(tmp / "ref-base.gguf")],
            "llama.cpp adapter": [py, str(ref / "convert_lora_to_gguf.py"), str(adapter), "--base", str(base),
                                  "--outtype", "f16", "--outfile", str(tmp / "ref-adapter.gguf")],
            "lorapack base+adapter": [lorapack, "build", str(base), str(adapter), "--layout", "separate",
                                      "--outtype", "f16", "-o", str(tmp / "ours"), "--force", "--quiet"]}
    result = {}
    for label, cmd in runs.items():
        best = min((measure(cmd) for _ in range(repeat)), key=lambda m: m["wall_s"])
        result[label] = best
        print(f"  {name:12s} {label:22s} {best['wall_s']:7.2f} s  {best['peak_rss_mib']:8.1f} MiB", flush=True)
    ref_wall = result["llama.cpp base"]["wall_s"] + result["llama.cpp adapter"]["wall_s"]
    ref_rss = max(result["llama.cpp base"]["peak_rss_mib"], result["llama.cpp adapter"]["peak_rss_mib"])
    ours = result["lorapack base+adapter"]
    result["speedup"] = round(ref_wall / ours["wall_s"], 2)
    result["rss_ratio"] = round(ours["peak_rss_mib"] / ref_rss, 3)
    result["input_bytes"] = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    print(f"  {name:12s} lorapack is {result['speedup']}x faster, peak RSS {result['rss_ratio']:.0%} of llama.cpp's")
    return result


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    names = list(results)
    for ax, key, label in ((axes[0], "wall_s", "wall time (s)"), (axes[1], "peak_rss_mib", "peak RSS (MiB)")):
        ref = [results[n]["llama.cpp base"][key] + (results[n]["llama.cpp adapter"][key] if key == "wall_s" else 0)
               for n in names]
        ours = [results[n]["lorapack base+adapter"][key] for n in names]
        x = np.arange(len(names))
        ax.bar(x - 0.2, ref, 0.4, label="llama.cpp converters")
        ax.bar(x + 0.2, ours, 0.4, label="lorapack")
        ax.set_xticks(x, names)
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("base + adapter → f16 GGUF (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gemma3-270m,llama-1.5b")
    ap.add_argument("--repeat", type=int, default=1, help="runs per command; the fastest counts")
    args = ap.parse_args()
    from fetch_reference import fetch

    ref = fetch(ROOT / ".cache" / "reference")
    inputs = {"gemma3-270m": lambda: (ROOT / "samples/out/gemma3-270m/base",
                                      ROOT / "samples/out/gemma3-270m/adapters/tuned"),
              "llama-1.5b": lambda: make_llama_15b(DATA / "llama-1.5b")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    tmp = DATA / "out"
    tmp.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in args.models.split(","):
        base, adapter = inputs[name]()
        results[name] = bench(name, base, adapter, ref, tmp, args.repeat)
    shutil.rmtree(tmp, ignore_errors=True)
    meta = {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"), "outtype": "f16"}
    (RESULTS / "convert.json").write_text(json.dumps({"machine": meta, "results": results}, indent=2))
    plot(results, RESULTS / "convert.png")
    print(f"saved {RESULTS / 'convert.json'} and {RESULTS / 'convert.png'}")


if __name__ == "__main__":
    main()
