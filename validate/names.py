"""GGUF tensor names → the Hugging Face modules of the model being checked, through the architecture's name table
(lorapack.spec.names: llama.cpp's own TensorNameMap). Of the HF names llama.cpp accepts for a tensor, the one the
source checkpoint or the PEFT model has is the answer."""

from __future__ import annotations

from lorapack.spec.arch import MULTIMODAL_TEXT, TOWERS, Spec, spec_named
from lorapack.spec.names import mtp_layers, name_table

__all__ = ["TOWERS", "Names", "canonical"]

GENERATED = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")


def canonical(name: str) -> str:
    """A module or tensor name of a (possibly multimodal) model in the text model's own terms."""
    dotted = name + "."
    for old, new in MULTIMODAL_TEXT:
        if dotted.startswith(old):
            return (new + dotted[len(old):])[:-1]
    return name


class Names:
    def __init__(self, arch: str, config: dict, present):
        self.spec: Spec | None = spec_named(arch)
        self.present: set[str] = set()
        self.add_present(present)
        layers = config.get("num_hidden_layers") or 0
        # llama.cpp's blocks: the text model's layers, then its MTP blocks (Qwen3.5)
        self.blocks = layers + (mtp_layers(self.spec, config, self.present) if self.spec is not None else 0)
        self.table = name_table(self.spec, self.blocks, layers) if self.spec is not None else None

    def add_present(self, names) -> None:
        """Names to look for, as given and in the text model's terms (bare parameters such as A_log have no
        module of their own, so only their canonical tensor names place them)."""
        self.present |= set(names) | {canonical(n) for n in names}

    def module(self, gguf_name: str) -> tuple[str, str] | None:
        """GGUF tensor name → (HF module, 'weight'|'bias'), or None for generated tensors and unknown names."""
        if self.table is None or gguf_name in GENERATED:
            return None
        return self.table.hf_module(gguf_name, self.present)
