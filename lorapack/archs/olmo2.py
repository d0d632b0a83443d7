"""OLMo 2 and OLMo 3 (Olmo2ForCausalLM, Olmo3ForCausalLM): norms after attention and MLP instead of before, RMS
norms over the whole q and k projections; OLMo 3 adds sliding-window attention on three layers of four (both
llama.cpp's Olmo2Model, MODEL_ARCH.OLMO2). No q/k permutation."""

from __future__ import annotations

from gguf import GGUFValueType as VT
from gguf import Keys

from lorapack.spec.arch import Spec
from lorapack.spec.hparams import n_heads, text_params
from lorapack.spec.plan import array, u32

A = "olmo2"


def metadata(h, file_type: int) -> list:
    kv = text_params(A, h, file_type)
    if h.get("sliding_window") is None:  # OLMo 2 (or a window left unset)
        return kv
    if isinstance(types := h.get("layer_types"), list):
        pattern = [t == "sliding_attention" for t in types]
    else:  # OLMo 3's default: every fourth layer attends fully
        pattern = [(i + 1) % 4 != 0 for i in range(h.block_count)]
    return kv + [u32(Keys.Attention.SLIDING_WINDOW.format(arch=A), h.get("sliding_window")),
                 array(Keys.Attention.SLIDING_WINDOW_PATTERN.format(arch=A), pattern, VT.BOOL)]


SPEC = Spec(
    name=A,
    hf_classes=("Olmo2ForCausalLM", "Olmo3ForCausalLM"),
    metadata=metadata,
    tokenizer="bpe",  # TextModel's set_vocab: tokenizer.json only
    sliding_window=True,
    # Olmo2Config's defaults (transformers 5); Olmo3Config's differ only in what config.json always carries
    defaults={"num_key_value_heads": n_heads, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
              "vocab_size": 50304, "rope_theta": 10000.0},
)
