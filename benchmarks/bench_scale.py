"""Scale: an 8B-shaped checkpoint (and the same with 16 layers) converted and validated by lorapack, beside
llama.cpp's converters and a `cp` of the source, in one run.

    .venv/bin/python benchmarks/bench_scale.py [--layers 32,16] [--steps cp,f16,q8_0,validate]

The checkpoint has Llama-3-8B's shapes (hidden 4096, 32 heads / 8 KV heads, FFN 14336, vocab 128256, bf16, four
shards) and a rank-16 all-linear adapter. It is generated here in seconds: one random block of finite bf16
values, tiled (what the bytes hold does not change what converting them costs).

Every command runs in a fresh process, ends with `sync` inside its timing (lorapack and llama.cpp's converters
do not fsync; this way both pay for the same flush), and starts with the page cache equally warm: the previous
output flushed and deleted, then the source read once. Memory is the peak, over the command's life, of the RSS
summed over its whole process tree (sampled every 20 ms from /proc; file pages a process maps, as llama.cpp's
converter maps the safetensors, count as they do in RSS). The disk's limit is the time to `cp` the source
shards (read + write of the same bytes; GNU cp copies inside the kernel).

Results: benchmarks/results/scale.json and scale.png. Needs free disk for the source, one output and, for the
q8_0 byte comparison, two q8_0 outputs: about 2.2 × the source (checked before anything is written).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / ".data"
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "scripts"))

SHAPE = dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32, num_key_value_heads=8,
             head_dim=128, vocab_size=128256)
RANK = 16
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# --- the checkpoint -----------------------------------------------------------------------------------------------

def tensor_specs(layers: int) -> list[tuple[str, tuple[int, ...]]]:
    h, ff, v = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["vocab_size"]
    kv = SHAPE["num_key_value_heads"] * SHAPE["head_dim"]
    specs = [("model.embed_tokens.weight", (v, h))]
    for i in range(layers):
        p = f"model.layers.{i}."
        specs += [(p + "input_layernorm.weight", (h,)), (p + "post_attention_layernorm.weight", (h,)),
                  (p + "self_attn.q_proj.weight", (h, h)), (p + "self_attn.k_proj.weight", (kv, h)),
                  (p + "self_attn.v_proj.weight", (kv, h)), (p + "self_attn.o_proj.weight", (h, h)),
                  (p + "mlp.gate_proj.weight", (ff, h)), (p + "mlp.up_proj.weight", (ff, h)),
                  (p + "mlp.down_proj.weight", (h, ff))]
    return specs + [("model.norm.weight", (h,)), ("lm_head.weight", (v, h))]


def source_bytes(layers: int) -> int:
    return sum(2 * int(np.prod(s)) for _, s in tensor_specs(layers))


def _pool(rng) -> bytes:
    """16 MiB of bf16 values ~ N(0, 0.02): finite, and random enough that no compressor or quantizer shortcut
    applies."""
    v = rng.standard_normal(8 << 20, dtype=np.float32) * np.float32(0.02)
    return (v.view(np.uint32) >> 16).astype(np.uint16).tobytes()


def _write_shard(path: Path, specs: list[tuple[str, tuple[int, ...]]], pool: bytes) -> None:
    header, offset = {}, 0
    for name, shape in specs:
        n = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * ((8 - len(blob) % 8) % 8)
    view = memoryview(pool)
    with open(path, "wb") as f:
        f.write(len(blob).to_bytes(8, "little") + blob)
        for k, (_, shape) in enumerate(specs):
            left, at = 2 * int(np.prod(shape)), (k * 4099 * 2) % len(pool)  # each tensor starts elsewhere
            while left:
                piece = view[at: at + left]
                f.write(piece)
                left -= len(piece)
                at = 0


def make_checkpoint(dest: Path, layers: int) -> tuple[Path, Path]:
    base, adapter = dest / "base", dest / "adapter"
    if (dest / "done").exists():
        return base, adapter
    shutil.rmtree(dest, ignore_errors=True)
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    pool = _pool(rng)
    specs = tensor_specs(layers)
    total, shards, current, size = source_bytes(layers), [], [], 0
    for spec in specs:  # four shards of about equal size, as HF writes them
        current.append(spec)
        size += 2 * int(np.prod(spec[1]))
        if size >= total / 4 * (len(shards) + 1) and len(shards) < 3:
            shards.append(current)
            current = []
    shards.append(current)
    weight_map = {}
    for k, part in enumerate(shards):
        name = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        _write_shard(base / name, part, pool)
        weight_map.update({n: name for n, _ in part})
    (base / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "rms_norm_eps": 1e-5,
              "max_position_embeddings": 8192, "rope_theta": 500000.0, "tie_word_embeddings": False,
              "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu",
              "num_hidden_layers": layers, **SHAPE}
    (base / "config.json").write_text(json.dumps(config, indent=1))
    tok = ROOT / "samples" / "out" / "llama" / "base"
    for f in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(tok / f, base / f)
    make_adapter(adapter, specs, rng)
    (dest / "done").write_text("ok\n")
    return base, adapter


def make_adapter(dest: Path, specs, rng) -> None:
    from safetensors.numpy import save_file

    dest.mkdir(parents=True)
    tensors = {}
    for name, shape in specs:
        if len(shape) == 2 and name.rsplit(".", 2)[-2] in TARGETS:
            stem = "base_model.model." + name.removesuffix(".weight")
            tensors[f"{stem}.lora_A.weight"] = rng.standard_normal((RANK, shape[1]), dtype=np.float32) * 0.01
            tensors[f"{stem}.lora_B.weight"] = rng.standard_normal((shape[0], RANK), dtype=np.float32) * 0.01
    save_file(tensors, dest / "adapter_model.safetensors")
    (dest / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": RANK, "lora_alpha": 32, "task_type": "CAUSAL_LM", "target_modules": TARGETS}))


# --- measuring ----------------------------------------------------------------------------------------------------

def _tree_rss(root: int) -> int:
    """Bytes resident in `root` and every descendant (one scan of /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    total, todo, page = 0, [root], os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            pass
    return total


def run(cmd: list[str]) -> dict:
    """Wall seconds (the command, then `sync`) and the process tree's peak RSS (MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, done = [0], threading.Event()

    def sample():
        while not done.wait(0.02):
            peak[0] = max(peak[0], _tree_rss(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, _ = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{err[-2000:]}")
    os.sync()
    wall = time.perf_counter() - t0
    # not ru_maxrss: a forked child starts with its parent's high-water mark, which exec does not reset
    return {"wall_s": round(wall, 2), "peak_rss_mib": round(peak[0] / 2**20, 1)}


def warm(base: Path) -> None:
    """The previous output flushed, the source read once: every command starts with the same page cache."""
    os.sync()
    for shard in sorted(base.glob("*.safetensors")):
        with open(shard, "rb") as f:
            while f.readinto(_BUF):
                pass


_BUF = bytearray(64 << 20)


def remove(*paths: Path) -> None:
    for p in paths:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    os.sync()


# --- the runs -----------------------------------------------------------------------------------------------------

def bench(layers: int, steps: set[str], ref: Path) -> dict:
    py, lorapack = sys.executable, str(Path(sys.executable).parent / "lorapack")
    t = time.perf_counter()
    base, adapter = make_checkpoint(DATA / f"llama-8b-shape-{layers}L", layers)
    res: dict = {"layers": layers, "source_gb": round(source_bytes(layers) / 1e9, 2),
                 "generate_s": round(time.perf_counter() - t, 1)}
    out = DATA / "scale-out"
    remove(out)
    out.mkdir(parents=True)

    def step(label: str, cmd: list[str], *outputs: Path, keep: bool = False) -> dict:
        warm(base)
        m = run(cmd)
        res[label] = m
        print(f"  {layers:2d}L {label:34s} {m['wall_s']:7.2f} s  peak {m['peak_rss_mib']:8.1f} MiB", flush=True)
        if not keep:
            remove(*outputs)
        return m

    shards = sorted(str(p) for p in base.glob("*.safetensors"))
    step("cp (disk limit)", ["cp", *shards, str(out)], *[out / Path(s).name for s in shards])
    sep = out / "ours"
    if "f16" in steps or "validate" in steps:
        step("lorapack build separate f16", [lorapack, "build", str(base), f"a={adapter}", "--layout", "separate",
                                              "--outtype", "f16", "-o", str(sep), "--quiet"], sep, keep=True)
    if "validate" in steps:
        step("lorapack validate separate f16", [lorapack, "validate", str(sep), "--base", str(base),
                                                 f"a={adapter}", "--quiet"], keep=True)
    remove(sep)
    if "f16" in steps:
        step("llama.cpp convert_hf_to_gguf f16", [py, str(ref / "convert_hf_to_gguf.py"), str(base), "--outtype",
                                                  "f16", "--outfile", str(out / "ref.gguf")], out / "ref.gguf")
        step("llama.cpp convert_lora_to_gguf f16", [py, str(ref / "convert_lora_to_gguf.py"), str(adapter),
                                                    "--base", str(base), "--outtype", "f16", "--outfile",
                                                    str(out / "ref-lora.gguf")], out / "ref-lora.gguf")
    if "q8_0" in steps:
        ours, theirs = out / "ours-q8_0", out / "ref-q8_0.gguf"
        step("lorapack build base q8_0", [lorapack, "build", str(base), "--layout", "separate", "--outtype", "q8_0",
                                          "-o", str(ours), "--quiet"], keep=True)
        step("llama.cpp convert_hf_to_gguf q8_0", [py, str(ref / "convert_hf_to_gguf.py"), str(base),
                                                   "--outtype", "q8_0", "--outfile", str(theirs)], keep=True)
        # in a child process: the comparison maps both files, which would swell this process's RSS
        res["q8_0 tensors identical"] = subprocess.run(
            [py, __file__, "--same-tensors", str(ours / "base.gguf"), str(theirs)]).returncode == 0
        print(f"  {layers:2d}L q8_0 tensors byte-identical: {res['q8_0 tensors identical']}", flush=True)
        remove(ours, theirs)
    remove(out)
    ratios(res)
    return res


def same_tensors(a: Path, b: Path) -> bool:
    """Every tensor's name, type, shape and data bytes equal (metadata holds provenance that may differ; the
    conformance tests compare it key by key at small sizes)."""
    from gguf import GGUFReader

    ta = {t.name: t for t in GGUFReader(a).tensors}
    tb = {t.name: t for t in GGUFReader(b).tensors}
    if ta.keys() != tb.keys():
        return False
    return all(ta[n].tensor_type == tb[n].tensor_type and list(ta[n].shape) == list(tb[n].shape)
               and np.array_equal(ta[n].data.view(np.uint8), tb[n].data.view(np.uint8)) for n in ta)


def ratios(res: dict) -> None:
    cp = res["cp (disk limit)"]["wall_s"]
    if "lorapack build separate f16" in res:
        ours = res["lorapack build separate f16"]
        res["f16 lorapack / cp"] = round(ours["wall_s"] / cp, 2)
    if "llama.cpp convert_hf_to_gguf f16" in res:
        a, b = res["llama.cpp convert_hf_to_gguf f16"], res["llama.cpp convert_lora_to_gguf f16"]
        res["f16 speedup vs llama.cpp (both converters)"] = round((a["wall_s"] + b["wall_s"]) / ours["wall_s"], 2)
        res["f16 peak RSS lorapack / llama.cpp"] = round(
            ours["peak_rss_mib"] / max(a["peak_rss_mib"], b["peak_rss_mib"]), 3)
    if "lorapack build base q8_0" in res:
        res["q8_0 speedup vs llama.cpp"] = round(res["llama.cpp convert_hf_to_gguf q8_0"]["wall_s"]
                                                 / res["lorapack build base q8_0"]["wall_s"], 2)
    for k, v in res.items():
        if not isinstance(v, dict) and (" / " in k or "speedup" in k):
            print(f"  {res['layers']:2d}L {k}: {v}", flush=True)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [k for k, v in results[0].items() if isinstance(v, dict)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, key, title in ((axes[0], "wall_s", "wall time (s), sync included"),
                           (axes[1], "peak_rss_mib", "peak RSS of the process tree (MiB)")):
        x = np.arange(len(labels))
        for k, res in enumerate(results):
            ax.barh(x + 0.4 * k - 0.2, [res.get(lb, {}).get(key, 0) for lb in labels], 0.4,
                    label=f"{res['layers']} layers ({res['source_gb']} GB bf16)")
        ax.set_yticks(x, labels)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.legend()
    fig.suptitle("Llama-3-8B shapes, 2 cores: lorapack, llama.cpp's converters, cp (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default="32,16", help="layer counts to run, comma-separated")
    ap.add_argument("--steps", default="f16,q8_0,validate", help="of f16, q8_0, validate (cp always runs)")
    ap.add_argument("--keep-source", action="store_true", help="keep the generated checkpoints for another run")
    ap.add_argument("--same-tensors", nargs=2, metavar="GGUF", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.same_tensors:
        raise SystemExit(0 if same_tensors(*map(Path, args.same_tensors)) else 1)
    from fetch_reference import fetch

    ref = fetch(ROOT / ".cache" / "reference")
    steps = set(args.steps.split(","))
    results = []
    for layers in map(int, args.layers.split(",")):
        need = int(source_bytes(layers) * 2.2)
        free = shutil.disk_usage(DATA.parent).free
        have = source_bytes(layers) if (DATA / f"llama-8b-shape-{layers}L" / "done").exists() else 0
        if free + have < need:
            raise SystemExit(f"error: {layers} layers need about {need / 1e9:.0f} GB free disk under {DATA}; "
                             f"{free / 1e9:.0f} GB is free")
        results.append(bench(layers, steps, ref))
        if not args.keep_source:
            remove(DATA / f"llama-8b-shape-{layers}L")
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
            "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)}
    (RESULTS / "scale.json").write_text(json.dumps({"machine": meta, "results": results}, indent=2) + "\n")
    plot(results, RESULTS / "scale.png")
    print(f"saved {RESULTS / 'scale.json'} and {RESULTS / 'scale.png'}")


if __name__ == "__main__":
    main()
