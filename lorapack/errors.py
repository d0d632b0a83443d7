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
