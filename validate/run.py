"""`lorapack validate`: open the artifact and the references, run the checks, report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from lorapack.errors import LorapackError
from lorapack.formats.gguf import CorruptGGUF

from .artifact import open_artifact
from .checks import Check, Validator
from .reference import PeftReference, Source
from .tolerances import parse

MAX_PROBES = 4096  # probes are (probes × in_features) float32 per layer: bounded so memory is too


@dataclass
class Request:
    artifact: Path
    base: Path
    adapters: list[tuple[str, Path]]
    probes: int = 8
    seed: int = 0
    tolerances: tuple[str, ...] = ()
    end_to_end: bool = False


@dataclass
class Result:
    checks: list[Check]
    timing: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def validate(req: Request) -> Result:
    t0 = time.perf_counter()
    tols = parse(req.tolerances)
    names = [n for n, _ in req.adapters]
    if len(set(names)) != len(names):
        raise LorapackError(f"duplicate adapter names: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    if not 1 <= req.probes <= MAX_PROBES:
        raise LorapackError(f"--probes must be from 1 to {MAX_PROBES}")
    source = Source(req.base)
    ref = PeftReference(req.base, dict(req.adapters), background=True)  # loads while the base checks run
    t1 = time.perf_counter()
    checks = check_artifact(req, source, ref, tols)
    t2 = time.perf_counter()
    # load_s: until the checks could start; checks_s includes whatever of the model load they waited for
    return Result(checks, {"load_s": round(t1 - t0, 3), "checks_s": round(t2 - t1, 3)})


def check_artifact(req: Request, source: Source, ref: PeftReference, tols) -> list[Check]:
    """The checks for one artifact with references already loaded (compare validates several against one)."""
    try:
        artifact = open_artifact(req.artifact)
    except CorruptGGUF as e:  # an unreadable artifact is a mismatch, not a usage error
        return [Check(f"artifact {req.artifact}", "structure", str(e), "readable", False)]
    validator = Validator(artifact, source, ref, dict(req.adapters), tols, req.probes, req.seed)
    try:
        checks = validator.run()
    except CorruptGGUF as e:  # found unreadable part way through: the checks so far, and this failure
        checks = validator.checks + [Check(f"artifact {req.artifact}", "structure", str(e), "readable", False)]
    if req.end_to_end:
        from .end_to_end import end_to_end

        checks += end_to_end(artifact, ref, req.base, tols, req.seed)
    return checks
