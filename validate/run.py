"""`lorapack validate`: open the artifact and the references, run the checks, report."""

from __future__ import annotations

import math
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
    if req.end_to_end:
        check_memory(end_to_end_bytes(source), "--end-to-end")
    # loads while the base checks run; without --end-to-end, with no base weights (one layer's at a time)
    ref = PeftReference(req.base, dict(req.adapters), background=True,
                        weights=None if req.end_to_end else source)
    t1 = time.perf_counter()
    checks = check_artifact(req, source, ref, tols)
    t2 = time.perf_counter()
    # load_s: until the checks could start; checks_s includes whatever of the model load they waited for
    return Result(checks, {"load_s": round(t1 - t0, 3), "checks_s": round(t2 - t1, 3)})


def end_to_end_bytes(source: Source) -> int:
    """Memory --end-to-end needs: the PEFT model in its stored precision, lifted to float32 to run, and the model
    rebuilt from the artifact in float32 with its state dict beside it."""
    stored = sum(source.nbytes(n) for n in source.names())
    params = sum(math.prod(source.shape(n)) for n in source.names())
    return stored + 3 * 4 * params


def check_memory(need: int, what: str) -> None:
    """Refuse up front, not by an out-of-memory kill part way through."""
    have = available_memory()
    if have is not None and need > have:
        raise LorapackError(f"{what} needs about {need / 2**30:.1f} GiB of memory; {have / 2**30:.1f} GiB is "
                            "available", hint="validate without --end-to-end: every adapted layer and base tensor "
                            "is still checked, one at a time, in little memory")


def available_memory() -> int | None:
    """MemAvailable, or less where a cgroup (a container, a CI job) caps this process."""
    have = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                have = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            used = int(Path("/sys/fs/cgroup/memory.current").read_text())
            have = min(have or 1 << 62, int(limit) - used)
    except (OSError, ValueError):
        pass
    return have


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
