"""What the adapters compute, from PyTorch + PEFT (the reference), and an independent inverse of llama.cpp's
q/k row permutation. Nothing here imports lorapack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def peft_model(base: Path, adapter: Path | None = None, name: str = "default"):
    import transformers

    # the class the checkpoint names (AutoModelForCausalLM would give Qwen3.5's multimodal config a text-only
    # model, whose module names the adapter's do not match)
    cls = getattr(transformers, transformers.AutoConfig.from_pretrained(base).architectures[0])
    model = cls.from_pretrained(base, dtype=torch.float32)
    if adapter is None:
        return model.eval()
    from peft import PeftModel

    return PeftModel.from_pretrained(model, adapter, adapter_name=name).eval()


def peft_deltas(base: Path, adapter: Path) -> dict[str, np.ndarray]:
    """module name → PEFT's delta weight (scaling included), HF orientation (out, in); embeddings (vocab, dim)."""
    from peft.tuners.lora import LoraLayer

    model = peft_model(base, adapter)
    out = {}
    for name, module in model.base_model.model.named_modules():
        if isinstance(module, LoraLayer) and "default" in module.scaling:
            d = module.get_delta_weight("default").detach().float().numpy()
            out[name] = d
    return out


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's rope row order (rows of each head: halves interleaved back)."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))
