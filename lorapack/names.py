"""Adapter names: one rule for names given on the command line and names read from files.

A name becomes a file name (`adapters/NAME.gguf`) and a tensor namespace (`adapter.NAME.`), so it may hold only
letters, digits, '_' and '-' — no separators, dots or control characters that could leave the output folder.
"""

from __future__ import annotations

import re
from pathlib import Path

from lorapack.errors import LorapackError

NAME_RX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
RULE = "1–32 letters, digits, '_' or '-', starting with a letter or digit"


def valid_name(name: object) -> bool:
    return isinstance(name, str) and NAME_RX.fullmatch(name) is not None


def check_name(name: object, where: str) -> str:
    if not valid_name(name):
        raise LorapackError(f"{where}: adapter name {ascii(name)[:50]} is invalid ({RULE})")
    return name  # type: ignore[return-value]


def parse_adapter_arg(text: str) -> tuple[str, Path]:
    """`NAME=PATH` when the text before the first '=' is a valid name; a path otherwise, named after its folder.
    Text with '=' whose head is not a valid name, and which is no existing path either, is refused naming the
    name (the user meant NAME=DIR)."""
    head, sep, rest = text.partition("=")
    if sep and valid_name(head):
        return head, Path(rest)
    path = Path(text)
    if sep and not path.exists():
        raise LorapackError(f"adapter argument {ascii(text)[:80]}: name {ascii(head)[:40]} is invalid ({RULE})",
                            hint="write NAME=DIR, e.g. chat=adapters/chat")
    name = path.resolve().name
    if not valid_name(name):
        name = re.sub(r"[^A-Za-z0-9_-]", "_", name).lstrip("_-")[:32] or "adapter"
    return name, path
