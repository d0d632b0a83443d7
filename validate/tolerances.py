"""Default tolerances per stored type: relative Frobenius error of a tensor (or of a layer's output on the
probes) against the reference. Every correct artifact passes them; the planted defects in tests/ fail them by
orders of magnitude. Override with --tolerance TYPE=RTOL[:ATOL]."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gguf import GGMLQuantizationType

from lorapack.errors import LorapackError


@dataclass(frozen=True)
class Tol:
    rtol: float
    atol: float = 0.0  # an absolute bound on max |error| that also passes (for all-zero references)

    def ok(self, rel: float, abs_err: float) -> bool:
        if not (math.isfinite(rel) and math.isfinite(abs_err)):  # NaN compares false both ways: never a pass
            return False
        return rel <= self.rtol or abs_err <= self.atol

    def __str__(self) -> str:
        return f"{self.rtol:g}" + (f":{self.atol:g}" if self.atol else "")


DEFAULTS = {
    "F32": Tol(1e-5), "F16": Tol(2e-3), "BF16": Tol(1.2e-2), "Q8_0": Tol(1.5e-2), "Q6_K": Tol(3e-2),
    "Q5_0": Tol(6e-2), "Q5_1": Tol(6e-2), "Q5_K": Tol(6e-2), "Q4_0": Tol(0.12), "Q4_1": Tol(0.12),
    "Q4_K": Tol(0.12), "Q3_K": Tol(0.25), "Q2_K": Tol(0.45),
}
OTHER = Tol(0.5)
_KNOWN = {t.name for t in GGMLQuantizationType}


def parse(values: tuple[str, ...]) -> dict[str, Tol]:
    table = dict(DEFAULTS)
    for v in values:
        name, sep, spec = v.partition("=")
        rtol, _, atol = spec.partition(":")
        try:
            tol = Tol(float(rtol), float(atol) if atol else 0.0)
        except ValueError:
            tol = None
        if not sep or tol is None or not all(0 <= x < 1e3 for x in (tol.rtol, tol.atol)):  # NaN fails too
            raise LorapackError(f"--tolerance {v!r} is not TYPE=RTOL[:ATOL] with finite non-negative numbers")
        if name.upper() not in _KNOWN:
            raise LorapackError(f"--tolerance {v!r}: unknown type {name!r}", hint=f"types: {', '.join(DEFAULTS)}")
        table[name.upper()] = tol
    return table


def for_type(table: dict[str, Tol], qtype_name: str) -> Tol:
    return table.get(qtype_name, OTHER)
