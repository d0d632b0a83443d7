"""A tensor over 4 GiB converts and validates: a 131072 × 8192 float32 embedding (4.3 GB), held as a sparse file
whose non-zero rows sit at the start, past the 4 GiB mark and at the end, so the test writes little."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
from conftest import lorapack

from lorapack.formats.gguf import read_gguf

VOCAB, HIDDEN, HEADS, HEAD_DIM, FF = 131072, 8192, 2, 64, 64
MARKED = [0, 1, 65535, 65536, 70000, VOCAB - 1]  # rows 65536 on start past 2^32 bytes of float32


def _checkpoint(dest, samples):
    dest.mkdir()
    q, kv = HEADS * HEAD_DIM, HEAD_DIM
    specs = [("model.embed_tokens.weight", (VOCAB, HIDDEN)), ("model.norm.weight", (HIDDEN,)),
             ("model.layers.0.input_layernorm.weight", (HIDDEN,)),
             ("model.layers.0.post_attention_layernorm.weight", (HIDDEN,)),
             ("model.layers.0.self_attn.q_proj.weight", (q, HIDDEN)),
             ("model.layers.0.self_attn.k_proj.weight", (kv, HIDDEN)),
             ("model.layers.0.self_attn.v_proj.weight", (kv, HIDDEN)),
             ("model.layers.0.self_attn.o_proj.weight", (HIDDEN, q)),
             ("model.layers.0.mlp.gate_proj.weight", (FF, HIDDEN)), ("model.layers.0.mlp.up_proj.weight", (FF, HIDDEN)),
             ("model.layers.0.mlp.down_proj.weight", (HIDDEN, FF))]
    header, offset = {}, 0
    for name, shape in specs:
        n = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    base = 8 + len(blob)
    rng = np.random.default_rng(0)
    with open(dest / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(base + offset)  # holes: zeros that take no disk
        for row in MARKED:  # non-zero embedding rows, some past 4 GiB into the tensor
            f.seek(base + row * HIDDEN * 4)
            f.write((rng.standard_normal(HIDDEN) * 0.02).astype(np.float32).tobytes())
        for name, shape in specs[1:]:  # every other tensor whole
            f.seek(base + header[name]["data_offsets"][0])
            ones = name.endswith("norm.weight")
            f.write((np.ones(shape) if ones else rng.standard_normal(shape) * 0.02).astype(np.float32).tobytes())
    config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
              "intermediate_size": FF, "num_hidden_layers": 1, "num_attention_heads": HEADS,
              "num_key_value_heads": 1, "head_dim": HEAD_DIM, "vocab_size": VOCAB, "rms_norm_eps": 1e-5,
              "max_position_embeddings": 256, "rope_theta": 10000.0, "tie_word_embeddings": True,
              "torch_dtype": "float32", "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu"}
    (dest / "config.json").write_text(json.dumps(config))
    for f in ("tokenizer.model", "tokenizer_config.json"):
        shutil.copy(samples / "llama" / "base" / f, dest / f)
    return base + header["model.embed_tokens.weight"]["data_offsets"][0]


def _adapter(dest):
    from safetensors.numpy import save_file

    dest.mkdir()
    rng = np.random.default_rng(1)
    stem = "base_model.model.model.embed_tokens"
    save_file({f"{stem}.lora_embedding_A": rng.standard_normal((4, VOCAB)).astype(np.float32) * 0.1,
               f"{stem}.lora_embedding_B": rng.standard_normal((HIDDEN, 4)).astype(np.float32) * 0.1},
              dest / "adapter_model.safetensors")
    (dest / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 4, "lora_alpha": 8, "task_type": "CAUSAL_LM", "target_modules": ["embed_tokens"]}))


def test_tensor_over_4_gib_converts_and_validates(samples, tmp_path):
    base = tmp_path / "base"
    embed_at = _checkpoint(base, samples)
    _adapter(tmp_path / "ad")
    out = tmp_path / "big.gguf"
    lorapack("build", base, f"e={tmp_path / 'ad'}", "-o", out, "--layout", "combined", "--outtype", "f16")
    gguf = read_gguf(out)
    t = next(t for t in gguf.tensors if t.name == "token_embd.weight")
    print(f"token_embd.weight {list(t.shape)} {t.qtype.name}: {t.nbytes} bytes stored, {VOCAB * HIDDEN * 4} in the "
          "source")
    assert t.shape == (VOCAB, HIDDEN) and t.nbytes == VOCAB * HIDDEN * 2
    with open(out, "rb") as f, open(base / "model.safetensors", "rb") as src:  # rows past 4 GiB, bit for bit
        for row in MARKED:
            f.seek(t.offset + row * HIDDEN * 2)
            src.seek(embed_at + row * HIDDEN * 4)
            want = np.frombuffer(src.read(HIDDEN * 4), np.float32).astype(np.float16)
            assert np.array_equal(np.frombuffer(f.read(HIDDEN * 2), np.float16), want), row
    proc = lorapack("validate", out, "--base", base, f"e={tmp_path / 'ad'}", "--quiet", check=False)
    print(proc.stdout[-1500:], proc.stderr[-1500:])
    assert proc.returncode == 0 and "PASS" in proc.stdout
