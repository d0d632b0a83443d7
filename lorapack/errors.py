"""Domain errors: raised where a problem is found, printed by the CLI as one `error:` line and a `hint:`."""

from __future__ import annotations


class LorapackError(Exception):
    """Bad input or an unsupported feature. `problems` are joined with '; ' on the error line."""

    def __init__(self, *problems: str, hint: str | None = None):
        self.problems = [p for p in problems if p]
        self.hint = hint
        super().__init__("; ".join(self.problems))


class UnsupportedArchitecture(LorapackError):
    pass


class AdapterError(LorapackError):
    pass


class CheckpointError(LorapackError):
    pass


_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
_CONTROL.update({c: f"\\u{c:04x}" for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]})  # bidi overrides


def clean(text: object) -> str:
    """Text from files (tensor, key and file names) with control characters escaped: it cannot forge extra
    lines or reach the terminal as escape sequences."""
    return str(text).translate(_CONTROL)
