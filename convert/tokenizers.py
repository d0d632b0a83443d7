"""Tokenizer routes: how llama.cpp's converter reads each architecture's vocabulary (its set_vocab), by the
name a spec gives in `tokenizer`."""

from __future__ import annotations

from gguf import GGUFValueType as VT
from gguf import Keys

from lorapack.errors import CheckpointError
from lorapack.formats.jsonfile import is_int, read_json
from lorapack.spec.plan import array, boolean, string

from .vocab import (
    TokType,
    bpe_vocab,
    hf_bpe_tokens,
    overlay_added,
    release_tokenizers,
    special_keys,
    spm_tokens,
    spm_vocab,
    vocab_keys,
)


def spm_or_bpe(ckpt, h) -> list:
    """tokenizer.model when present (SentencePiece), else tokenizer.json as byte-level BPE."""
    if ckpt.file("tokenizer.model"):
        return spm_vocab(ckpt.path, h.find(["vocab_size_per_layer_input", "vocab_size"], None))
    return bpe_vocab(ckpt.path, h.get("vocab_size"))


def tokenizer_config(ckpt) -> dict:
    path = ckpt.file("tokenizer_config.json")
    return read_json(path, CheckpointError) if path else {}


def add_space_prefix(value: bool):
    return boolean(Keys.Tokenizer.ADD_PREFIX, value)


def llama(ckpt, h) -> list:
    kv = []
    if (prefix := tokenizer_config(ckpt).get("add_prefix_space")) is not None:
        kv.append(add_space_prefix(prefix))
    return kv + spm_or_bpe(ckpt, h)


def gemma2(ckpt, h) -> list:
    return spm_or_bpe(ckpt, h) + [add_space_prefix(False)]


def gemma3(ckpt, h) -> list:
    kv = spm_or_bpe(ckpt, h)
    return kv + [add_space_prefix(False)] if ckpt.file("tokenizer.model") else kv


def phi3(ckpt, h) -> list:
    if tokenizer_config(ckpt).get("tokenizer_class") == "GPT2Tokenizer":
        return bpe_vocab(ckpt.path, h.get("vocab_size"))
    if not ckpt.file("tokenizer.model"):
        raise CheckpointError(f"phi3 needs {ckpt.path / 'tokenizer.model'}")
    tokens, scores, types = spm_tokens(ckpt.path, h.get("vocab_size"), normalize=False)
    _overlay_tokenizer_json(ckpt, tokens, scores, types)
    return vocab_keys("llama", "default", tokens, types, scores) + special_keys(ckpt.path, n_vocab=len(tokens))


def _overlay_tokenizer_json(ckpt, tokens, scores, types) -> None:
    """Phi-3 also takes added tokens from tokenizer.json (llama.cpp's Phi3 converter does)."""
    path = ckpt.file("tokenizer.json")
    if not path:
        return
    added = read_json(path, CheckpointError, max_bytes=1 << 30).get("added_tokens") or []
    if not (isinstance(added, list) and all(isinstance(d, dict) and is_int(d.get("id")) and d["id"] >= 0
                                            and isinstance(d.get("content"), str) for d in added)):
        raise CheckpointError("tokenizer.json: added_tokens must be a list of {id, content} entries")
    for data in added:
        overlay_added(tokens, scores, types, data["id"], data, normalize=False)



def bpe(ckpt, h) -> list:
    """tokenizer.json as byte-level BPE only (llama.cpp's TextModel default, _set_vocab_gpt2)."""
    if not ckpt.file("tokenizer.json"):
        raise CheckpointError(f"{ckpt.path.name}: this architecture's vocabulary comes from tokenizer.json, "
                              "which is missing")
    return bpe_vocab(ckpt.path, h.get("vocab_size"))


# Gemma 4's chat-format tokens: llama.cpp marks them USER_DEFINED so that they are always rendered
GEMMA4_VISIBLE = {"<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>",
                  '<|"|>'}


def gemma4(ckpt, h) -> list:
    """llama.cpp's Gemma4Model.set_vocab: tokenizer.json's tokens (LlamaHfVocab), every score -1000, model
    "gemma4", no pre-tokenizer key."""
    if not ckpt.file("tokenizer.json"):
        raise CheckpointError(f"{ckpt.path.name}: gemma4's vocabulary comes from tokenizer.json, which is missing")
    tokens, types = hf_bpe_tokens(ckpt.path)
    types = [int(TokType.USER_DEFINED) if t in GEMMA4_VISIBLE else k for t, k in zip(tokens, types)]
    release_tokenizers()
    kv = [string(Keys.Tokenizer.MODEL, "gemma4"), array(Keys.Tokenizer.LIST, tokens, VT.STRING),
          array(Keys.Tokenizer.SCORES, [-1000.0] * len(tokens), VT.FLOAT32),
          array(Keys.Tokenizer.TOKEN_TYPE, types, VT.INT32)]
    return kv + special_keys(ckpt.path, load_merges=True) + [add_space_prefix(False),
                                                               boolean(Keys.Tokenizer.ADD_BOS, True)]


ROUTES = {"bpe": bpe, "spm_or_bpe": spm_or_bpe, "llama": llama, "gemma2": gemma2, "gemma3": gemma3,
          "gemma4": gemma4, "phi3": phi3}


def vocabulary(spec, ckpt, h) -> list:
    return ROUTES[spec.tokenizer](ckpt, h)
