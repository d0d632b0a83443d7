"""Qwen3.5 (Qwen3_5ForCausalLM, and the text model of Qwen3_5ForConditionalGeneration): a hybrid of Gated DeltaNet
linear attention (linear_attn: in_proj_qkv/z/a/b, a causal conv, A_log, dt_bias, a gated norm) and full attention
with an output gate folded into q_proj, norms as 1 + w; more V heads than K heads, which llama.cpp reorders; an MTP
block under mtp.* that llama.cpp keeps as a last block (llama.cpp's Qwen3_5TextModel)."""

from __future__ import annotations

from gguf import GGUFValueType as VT
from gguf import Keys

from lorapack.errors import CheckpointError
from lorapack.spec import kinds
from lorapack.spec.arch import MULTIMODAL_TEXT, Spec
from lorapack.spec.hparams import text_params
from lorapack.spec.plan import array, u32

A = "qwen35"
# what llama.cpp writes when rope_parameters lacks mrope_section (its loader requires the key)
DEFAULT_MROPE_SECTION = [11, 11, 10, 0]


def metadata(h, file_type: int) -> list:
    kv = text_params(A, h, file_type)
    if (n_mtp := h.block_count - h.n_layers) > 0:
        kv.append(u32(Keys.LLM.NEXTN_PREDICT_LAYERS.format(arch=A), n_mtp))
    n_v = h.find(["linear_num_value_heads"])
    kv += [u32(Keys.SSM.CONV_KERNEL.format(arch=A), h.find(["linear_conv_kernel_dim"])),
           u32(Keys.SSM.STATE_SIZE.format(arch=A), h.find(["linear_key_head_dim"])),
           u32(Keys.SSM.GROUP_COUNT.format(arch=A), h.find(["linear_num_key_heads"])),
           u32(Keys.SSM.TIME_STEP_RANK.format(arch=A), n_v),
           u32(Keys.SSM.INNER_SIZE.format(arch=A), h.find(["linear_value_head_dim"]) * n_v)]
    if isinstance(types := h.get("layer_types"), list):
        if len(types) != h.n_layers:
            raise CheckpointError(f"config.json: layer_types has {len(types)} entries, num_hidden_layers is "
                                  f"{h.n_layers}")
        recurrent = [t == "linear_attention" for t in types] + [False] * (h.block_count - h.n_layers)
        kv.append(array(f"{A}.attention.recurrent_layers", recurrent, VT.BOOL))
    kv.append(u32(Keys.LLM.FULL_ATTENTION_INTERVAL.format(arch=A), h.get("full_attention_interval", 4)))
    head_dim = h.get("head_dim") or h.find(["hidden_size"]) // h.find(["num_attention_heads"])
    kv.append(u32(Keys.Rope.DIMENSION_COUNT.format(arch=A), int(head_dim * h.rope.get("partial_rotary_factor", 0.25))))
    if "mrope_section" not in h.rope:
        kv.append(array(Keys.Rope.DIMENSION_SECTIONS.format(arch=A), DEFAULT_MROPE_SECTION, VT.INT32))
    return kv


SPEC = Spec(
    name=A,
    hf_classes=("Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration"),
    metadata=metadata,
    tokenizer="bpe",  # TextModel's set_vocab: tokenizer.json only
    transforms=(kinds.NORM_OFFSET, kinds.V_HEAD_ORDER, kinds.SSM_A_LOG, kinds.CONV_SQUEEZE),
    prefixes=MULTIMODAL_TEXT,
    renames=((".linear_attn.dt_bias", ".linear_attn.dt_proj.bias"),),  # as llama.cpp, before its table
    mtp={"fc": "eh_proj", "pre_fc_norm_embedding": "enorm", "pre_fc_norm_hidden": "hnorm",
         "norm": "shared_head.norm"},
    # Qwen3_5TextConfig's defaults (transformers 5)
    defaults={"num_key_value_heads": 4, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
              "vocab_size": 248320, "rope_theta": 10000.0, "head_dim": 256, "linear_conv_kernel_dim": 4,
              "linear_key_head_dim": 128, "linear_value_head_dim": 128, "linear_num_key_heads": 16,
              "linear_num_value_heads": 32},
)
