"""Golden validation reports: what `lorapack validate` concludes about clean artifacts of the samples.

    python scripts/golden_reports.py --write [CASE...]   store the reports in tests/golden/ (review the diff)
    python scripts/golden_reports.py [CASE...]           rebuild, revalidate, compare with the stored reports

A change to how the validator computes (e.g. streaming one module at a time instead of loading the whole PEFT
model) must leave every verdict, check name, tolerance and figure as it was: figures are compared to a relative
1e-3 (the report keeps 6 significant digits), timings are ignored. tests/test_golden.py runs a few cases in the
suite; this script runs them all. Exit 0: all equal; 1: a report differs; 2: bad arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
SAMPLES = ROOT / "samples" / "out"
RTOL = 1e-3

PLAIN = ["llama", "phi3", "gemma2", "gemma3", "gemma3mm", "granite", "mistral3", "qwen2", "qwen3", "smollm3",
         "qwen3moe", "olmo2", "olmo3", "qwen35", "qwen35mm", "gemma4", "gemma4mm"]
# case name → (sample, layout, adapters, extra build options)
CASES: dict[str, tuple[str, str, list[str], list[str]]] = {
    **{f"{s}-separate": (s, "separate", ["plain"], []) for s in PLAIN},
    "llama-combined": ("llama", "combined", ["plain", "embed", "dora", "rslora", "patterns", "trainer", "alora"],
                       []),
    "llama-save-head": ("llama", "combined", ["save_head"], []),  # PEFT cannot load it beside a LoRA lm_head
    "llama-merged-q8_0": ("llama", "merged", ["dora"], ["--outtype", "q8_0"]),
    "llama-merged-two": ("llama", "merged", ["plain", "patterns"], []),
    "qwen3moe-experts": ("qwen3moe", "separate", ["experts", "experts_patterns"], []),
}


def lorapack(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lorapack", *map(str, args)], capture_output=True, text=True)


def report(case: str, work: Path) -> dict:
    """Build the case's artifact and validate it; the report without timings."""
    sample, layout, adapters, extra = CASES[case]
    base = SAMPLES / sample / "base"
    specs = [f"{a}={SAMPLES / sample / 'adapters' / a}" for a in adapters]
    out = work / (f"{case}.gguf" if layout != "separate" else case)
    proc = lorapack("build", base, *specs, "-o", out, "--layout", layout, *extra)
    if proc.returncode:
        raise RuntimeError(f"{case}: build failed: {proc.stderr.strip()}")
    path = work / f"{case}.json"
    proc = lorapack("validate", out, "--base", base, *specs, "--report", path, "--quiet")
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{case}: validate exited {proc.returncode}: {proc.stderr.strip()}")
    got = json.loads(path.read_text())
    got.pop("timing", None)
    return got


def differences(golden: dict, got: dict) -> list[str]:
    """What differs between two reports: the verdict, a check's presence, kind, tolerance or verdict, or a
    figure beyond RTOL."""
    out = [] if golden["verdict"] == got["verdict"] else [f"verdict {got['verdict']} (golden {golden['verdict']})"]
    want, have = ({c["name"]: c for c in r["checks"]} for r in (golden, got))
    out += [f"missing check {n}" for n in want if n not in have]
    out += [f"new check {n}" for n in have if n not in want]
    for name in want.keys() & have.keys():
        a, b = want[name], have[name]
        for key in ("kind", "tolerance", "verdict"):
            if a[key] != b[key]:
                out.append(f"{name}: {key} {b[key]!r} (golden {a[key]!r})")
        if not _close(a["value"], b["value"]):
            out.append(f"{name}: value {b['value']!r} (golden {a['value']!r})")
    return sorted(out)


def _close(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=RTOL, abs_tol=1e-12)
    return a == b


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help=f"cases to run (default: all): {', '.join(CASES)}")
    parser.add_argument("--write", action="store_true", help="store the reports as the golden ones")
    args = parser.parse_args()
    if unknown := [c for c in args.cases if c not in CASES]:
        print(f"error: unknown cases {unknown}", file=sys.stderr)
        return 2
    failed = 0
    with tempfile.TemporaryDirectory(prefix="lorapack-golden-") as tmp:
        for case in args.cases or CASES:
            got = report(case, Path(tmp))
            if args.write:
                GOLDEN.mkdir(parents=True, exist_ok=True)
                (GOLDEN / f"{case}.json").write_text(json.dumps(got, indent=1) + "\n")
                print(f"{case}: {got['verdict']}, {len(got['checks'])} checks written")
                continue
            problems = differences(json.loads((GOLDEN / f"{case}.json").read_text()), got)
            failed += bool(problems)
            print(f"{case}: {'equal' if not problems else f'{len(problems)} differences'}")
            for p in problems[:20]:
                print(f"  {p}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
