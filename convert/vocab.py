"""Tokenizer files → GGUF vocabulary keys, as llama.cpp's converter writes them.

Two families: SentencePiece (`tokenizer.model`, model "llama") and byte-level BPE (`tokenizer.json`, model "gpt2",
with the pre-tokenizer named by the hash of a check text). Special ids, add_*_token flags, merges and the chat
template come from gguf-py's SpecialVocab, which reads the same files the same way for every architecture.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from enum import IntEnum
from hashlib import sha256
from pathlib import Path
from typing import Any

import gguf
from gguf import GGUFValueType as VT
from gguf import Keys

from lorapack.errors import CheckpointError
from lorapack.formats.jsonfile import is_int, read_json
from lorapack.spec.plan import KV, array, string

log = logging.getLogger(__name__)
_PRE = json.loads((Path(__file__).parent / "bpe_pre_hashes.json").read_text(encoding="utf-8"))


class TokType(IntEnum):
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


def vocab_keys(model: str, pre: str, tokens: list[bytes | str], toktypes: list[int],
               scores: list[float] | None) -> list[KV]:
    kv = [string(Keys.Tokenizer.MODEL, model), string(Keys.Tokenizer.PRE, pre),
          array(Keys.Tokenizer.LIST, tokens, VT.STRING)]
    if scores is not None:
        kv.append(array(Keys.Tokenizer.SCORES, scores, VT.FLOAT32))
    kv.append(array(Keys.Tokenizer.TOKEN_TYPE, toktypes, VT.INT32))
    return kv


def special_keys(folder: Path, n_vocab: int | None = None, load_merges: bool = False) -> list[KV]:
    """Special token ids, add_*_token flags, merges and chat template, via gguf-py's SpecialVocab."""
    for name in ("tokenizer_config.json", "special_tokens_map.json", "config.json", "generation_config.json"):
        if (folder / name).exists():
            read_json(folder / name, CheckpointError)  # bounded and well-formed before gguf-py parses it
    try:
        special = gguf.SpecialVocab(folder, load_merges=load_merges, n_vocab=n_vocab)
        recorder = gguf.GGUFWriter(path=None, arch="recorder")
        special.add_to_gguf(recorder, quiet=True)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:  # gguf-py trusts the files' types
        raise CheckpointError(f"tokenizer files in {folder.name} have unexpected contents ({type(e).__name__}: "
                              f"{e})") from None
    out = []
    for key, v in recorder.kv_data[0].items():
        sub = v.sub_type
        if v.type == VT.ARRAY and sub is None:  # the writer infers it from the first element at write time
            sub = VT.get_type(v.value[0]) if len(v.value) else VT.STRING
        if not key.startswith("general."):
            out.append(KV(key, v.type, v.value, sub))
    return out


def looks_special(text: str) -> bool:
    """Added tokens some models forget to mark special (llama.cpp's list)."""
    return (text in ("<pad>", "<mask>", "<2mass>", "[@BOS@]")
            or (text.startswith("<|") and text.endswith("|>"))
            or (text.startswith("<｜") and text.endswith("｜>"))
            or (text.startswith("<unused") and text.endswith(">")))


# --- SentencePiece -----------------------------------------------------------------------------------------

def spm_tokens(folder: Path, vocab_size: int | None, normalize: bool = True
               ) -> tuple[list[bytes], list[float], list[int]]:
    """Pieces, scores and types from tokenizer.model, overlaid with added tokens; padded to vocab_size."""
    from sentencepiece import SentencePieceProcessor

    sp = SentencePieceProcessor()
    try:
        sp.LoadFromFile(str(folder / "tokenizer.model"))
    except (OSError, RuntimeError) as e:
        raise CheckpointError(f"tokenizer.model cannot be read ({e})") from None
    n = vocab_size or sp.vocab_size()
    tokens = [f"[PAD{i}]".encode() for i in range(n)]
    scores, types = [-10000.0] * n, [int(TokType.UNUSED)] * n
    for i in range(min(sp.vocab_size(), n)):
        tokens[i], scores[i], types[i] = sp.IdToPiece(i).encode(), sp.GetScore(i), _spm_type(sp, i)
    for key, i in added_tokens(folder).items():
        if i < n:
            tokens[i], scores[i], types[i] = key.encode(), -1000.0, int(TokType.USER_DEFINED)
    for i, data in added_tokens_decoder(folder).items():
        if i < n:
            overlay_added(tokens, scores, types, i, data, normalize)
    return tokens, scores, types


def overlay_added(tokens, scores, types, i: int, data: dict, normalize: bool = True) -> None:
    """An added token replaces entry i. `normalize`: also catch unmarked specials and pre-normalize spaces
    (llama.cpp's generic SentencePiece path; its Phi-3 path takes the token as it is)."""
    text = data["content"]
    if data.get("special") or (normalize and looks_special(text)):
        types[i] = int(TokType.CONTROL)
    else:
        text = text.replace("\u2581", " ") if normalize else text
        types[i] = int(TokType.USER_DEFINED)
    tokens[i], scores[i] = text.encode(), -1000.0


def _spm_type(sp: Any, i: int) -> int:
    if sp.IsUnknown(i):
        return TokType.UNKNOWN
    if sp.IsControl(i):
        return TokType.CONTROL
    if sp.IsUnused(i):
        return TokType.UNUSED
    if sp.IsByte(i):
        return TokType.BYTE
    return TokType.NORMAL


def spm_vocab(folder: Path, vocab_size: int | None) -> list[KV]:
    tokens, scores, types = spm_tokens(folder, vocab_size)
    return vocab_keys("llama", "default", tokens, types, scores) + special_keys(folder, n_vocab=len(tokens))


# --- byte-level BPE -------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=2)
def load_tokenizer_json(folder: Path):
    """tokenizer.json through the `tokenizers` library, loaded once per folder (it can take seconds)."""
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{folder} has neither tokenizer.model nor tokenizer.json")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:  # the Rust side raises a bare Exception on malformed files
        raise CheckpointError(f"{path.name} cannot be read ({e})") from None


def release_tokenizers() -> None:
    """Drop loaded tokenizers (hundreds of MB for a 262k vocabulary) and hand the memory back to the OS,
    so it does not add to the peak while tensors stream."""
    import ctypes
    import gc

    load_tokenizer_json.cache_clear()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the memory is reused by later allocations anyway
        pass


def bpe_vocab(folder: Path, vocab_size: int | None) -> list[KV]:
    tok = load_tokenizer_json(folder)
    tokens, types = _bpe_tokens(tok, vocab_size)
    kv = vocab_keys("gpt2", bpe_pre(tok), tokens, types, None)
    del tok
    release_tokenizers()  # before SpecialVocab parses the same JSON again: keeps the two peaks apart
    return kv + special_keys(folder, load_merges=True)


_NAMED_SPECIALS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def special_texts(folder: Path) -> list[str]:
    """The tokens transformers counts as special (all_special_tokens): the named ones, then the extra ones, from
    tokenizer_config.json, else special_tokens_map.json."""
    def text(v):
        return v.get("content") if isinstance(v, dict) else v

    found: list[str] = []
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        cfg = _json(folder / name)
        extra = cfg.get("extra_special_tokens", cfg.get("additional_special_tokens")) or []
        values = [cfg.get(k) for k in _NAMED_SPECIALS] + list(extra.values() if isinstance(extra, dict) else extra)
        found += [t for v in values if isinstance(t := text(v), str) and t not in found]
        if found:
            return found
    return found


def hf_bpe_tokens(folder: Path) -> tuple[list[str], list[int]]:
    """tokenizer.json's SentencePiece-style BPE (byte fallback) as gguf-py's LlamaHfVocab lists it: the model's
    vocabulary in id order, bytes <0xNN> as BYTE, special tokens as CONTROL, the rest NORMAL; then added tokens
    past it (special: CONTROL, else USER_DEFINED)."""
    tok = load_tokenizer_json(folder)
    model = tok.model
    if type(model).__name__ != "BPE" or not model.byte_fallback or type(tok.decoder).__name__ != "Sequence":
        raise CheckpointError("tokenizer.json is not a byte-fallback BPE tokenizer (SentencePiece style), which "
                              "llama.cpp reads this architecture's vocabulary as")
    vocab, n_base = tok.get_vocab(with_added_tokens=True), tok.get_vocab_size(with_added_tokens=False)
    reverse = {i: t for t, i in vocab.items()}
    special = special_texts(folder)
    if missing := [t for t in special if t not in vocab]:
        raise CheckpointError(f"special tokens {missing[:4]} are not in tokenizer.json's vocabulary")
    special_ids = {vocab[t] for t in special}
    tokens, types = [], []
    for i in range(n_base):
        if i not in reverse:
            raise CheckpointError(f"tokenizer.json has no token with id {i} (its vocabulary has {n_base})")
        text = reverse[i]
        tokens.append(text)
        types.append(int(TokType.BYTE if re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", text) else
                         TokType.CONTROL if i in special_ids else TokType.NORMAL))
    for i, info in sorted(tok.get_added_tokens_decoder().items()):
        if i >= n_base:
            tokens.append(info.content)
            types.append(int(TokType.CONTROL if info.content in special else TokType.USER_DEFINED))
    return tokens, types


def bpe_pre(tok: Any) -> str:
    ids = tok.encode(_PRE["chktxt"], add_special_tokens=True).ids
    chkhsh = sha256(str(ids).encode()).hexdigest()
    if chkhsh not in _PRE["hashes"]:
        raise CheckpointError(f"BPE pre-tokenizer not recognised by llama.cpp (hash {chkhsh[:16]}…)",
                              hint="llama.cpp could not tokenize with it either; use a known tokenizer")
    return _PRE["hashes"][chkhsh]


def _bpe_tokens(tok: Any, vocab_size: int | None) -> tuple[list[str], list[int]]:
    vocab = tok.get_vocab(with_added_tokens=True)
    added = tok.get_added_tokens_decoder()  # id → AddedToken
    added_text = {t.content for t in added.values()}
    n = vocab_size or len(vocab)
    if vocab and max(vocab.values()) >= n:
        raise CheckpointError(f"tokenizer ids exceed vocab_size {n}")
    reverse = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(n):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(int(TokType.UNUSED))
            continue
        text = reverse[i]
        if text in added_text:
            text, kind = _added_token(tok, added[i], text)
        else:
            kind = TokType.NORMAL
        tokens.append(text)
        types.append(int(kind))
    return tokens, types


def _added_token(tok: Any, info: Any, text: str) -> tuple[str, TokType]:
    if not info.normalized:  # llama.cpp assumes added tokens are pre-normalized
        text = tok.decode(tok.encode(text, add_special_tokens=False).ids, skip_special_tokens=False)
    if info.special or looks_special(text):
        return text, TokType.CONTROL
    return text.replace("\u2581", " "), TokType.USER_DEFINED


def _json(path: Path) -> dict:
    return read_json(path, CheckpointError) if path.exists() else {}


def added_tokens(folder: Path) -> dict[str, int]:
    """added_tokens.json: token text → non-negative id."""
    table = _json(folder / "added_tokens.json")
    if not all(isinstance(k, str) and is_int(v) and v >= 0 for k, v in table.items()):
        raise CheckpointError("added_tokens.json must map token texts to non-negative integer ids")
    return table


def added_tokens_decoder(folder: Path) -> dict[int, dict]:
    """tokenizer_config.json's added_tokens_decoder: id → {content: str, special: bool, …}."""
    table = _json(folder / "tokenizer_config.json").get("added_tokens_decoder") or {}
    out = {}
    for key, data in table.items() if isinstance(table, dict) else [(None, None)]:
        if not (isinstance(key, str) and key.isdigit() and isinstance(data, dict)
                and isinstance(data.get("content"), str)):
            raise CheckpointError("tokenizer_config.json: added_tokens_decoder must map ids to "
                                  '{"content": "...", ...} entries')
        out[int(key)] = data
    return out
