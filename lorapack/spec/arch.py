"""What one architecture is, declared: its HF classes, name rules, transforms by kind, metadata, defaults and
tokenizer route. Neither convert nor validate owns it; each reads the declaration and does its own half of the
work (convert a kind forward, validate the same kind's inverse, written separately).

Every `Spec` registers itself when built; the modules in `lorapack/archs/` are found by listing that package, so
adding an architecture is adding one file there.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from lorapack.errors import UnsupportedArchitecture

from . import kinds

if TYPE_CHECKING:
    import numpy as np

    from .hparams import HParams
    from .plan import KV

# transformers 5 (so PEFT) nests a multimodal model's text model as model.language_model.*, checkpoints keep
# language_model.model.*; both are the text model's model.*
MULTIMODAL_TEXT = (("model.language_model.", "model."), ("language_model.model.", "model."),
                   ("language_model.lm_head.", "lm_head."))
# a multimodal checkpoint's other towers: llama.cpp's text model leaves them out (images go to its mmproj file)
TOWERS = ("vision_tower.", "multi_modal_projector.", "vision_model.", "audio_tower.", "model.vision_tower.",
          "model.multi_modal_projector.", "model.audio_tower.", "model.vision_model.", "model.visual.", "visual.",
          "model.embed_vision.", "model.embed_audio.")

_REGISTRY: dict[str, Spec] = {}  # HF class name → Spec
_LOADED = False


@dataclass(frozen=True, eq=False)  # identity hash: specs are registry entries
class Spec:
    name: str  # GGUF general.architecture (a gguf.MODEL_ARCH member, lower case)
    hf_classes: tuple[str, ...]
    # (HParams, file type) → the GGUF keys llama.cpp's converter writes for it (helpers in lorapack.spec.hparams)
    metadata: Callable[[HParams, int], list[KV]]
    tokenizer: str = "spm_or_bpe"  # the vocabulary route, by name (convert/vocab.py ROUTES)
    transforms: tuple[str, ...] = ()  # kinds.* names
    # what transformers' config class fills in when config.json omits a key (a callable: of the other keys)
    defaults: dict = field(default_factory=dict)
    # HF module pattern ({bid} = block) → GGUF name, only for what gguf-py's TensorNameMap lacks
    names: dict[str, str] = field(default_factory=dict)
    # name rules: prefixes rewritten to the text model's own names before any lookup
    prefixes: tuple[tuple[str, str], ...] = ()
    # fused HF tensors llama.cpp stores split: suffix → (suffixes of its equal row parts), e.g. gate_up → gate, up
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)
    skip: tuple[str, ...] = ("rotary_emb.inv_freq",)  # HF tensor-name suffixes llama.cpp drops
    # the config's sliding_window reaches {arch}.attention.sliding_window (the validator checks it)
    sliding_window: bool = False
    # tensors llama.cpp computes from the config (rope factors): HParams → [(GGUF name, float32 values)]
    generated: Callable[[HParams], list[tuple[str, np.ndarray]]] | None = None
    # multi-token-prediction blocks kept under mtp.* (mtp.layers.I.* and these top-level tensors), which llama.cpp
    # appends after the text model's layers as blocks N+I: top-level name → its name in block N (see names.py)
    mtp: dict[str, str] = field(default_factory=dict)
    # parameter renames llama.cpp makes before its table maps a name: (checkpoint suffix, renamed suffix)
    renames: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        unknown = set(self.transforms) - set(kinds.ALL)
        if unknown:
            raise ValueError(f"{self.name}: unknown transform kinds {sorted(unknown)}")
        for cls in self.hf_classes:
            _REGISTRY[cls] = self

    def has(self, kind: str) -> bool:
        return kind in self.transforms

    def text_name(self, name: str) -> str:
        """A module or tensor name in the text model's own terms (prefix rules applied)."""
        dotted = name + "."
        for old, new in self.prefixes:
            if dotted.startswith(old):
                return (new + dotted[len(old):])[:-1]
        return name


def is_tower(name: str) -> bool:
    """A tensor or module of a multimodal checkpoint's vision/audio side (never part of the text model)."""
    return name.startswith(TOWERS) or ".vision_tower." in name


def registry() -> dict[str, Spec]:
    """HF class name → Spec, for every module in lorapack/archs (imported once)."""
    global _LOADED
    if not _LOADED:
        import lorapack.archs as package

        for info in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{info.name}")
        _LOADED = True
    return _REGISTRY


def spec_for(config: dict) -> Spec:
    table = registry()
    names = config.get("architectures") or []
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else {}
    for name in [*names, *(text.get("architectures") or [])]:
        if isinstance(name, str) and name in table:
            return table[name]
    shown = ", ".join(map(str, names)) or f"model_type {config.get('model_type')!r}"
    raise UnsupportedArchitecture(f"unsupported architecture {shown}", hint=f"supported: {', '.join(sorted(table))}")


def spec_named(gguf_arch: str) -> Spec | None:
    """The spec whose GGUF general.architecture is `gguf_arch`."""
    return next((s for s in registry().values() if s.name == gguf_arch), None)


def spec_of(config: dict) -> Spec | None:
    """The spec for a config.json, or None when no architecture there is supported."""
    try:
        return spec_for(config)
    except UnsupportedArchitecture:
        return None
