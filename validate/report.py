"""Reports: a terminal table (worst first), JSON (stable across runs with the same seed, timing aside), JUnit."""

from __future__ import annotations

import json
from xml.sax.saxutils import quoteattr

from lorapack.errors import clean

from .checks import Check


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v)


def ordered(checks: list[Check]) -> list[Check]:
    return sorted(checks, key=lambda c: (c.ok, -c.severity, c.kind, c.name))


def table(checks: list[Check], limit: int = 25) -> str:
    rows = ordered(checks)
    width = min(max((len(c.name) for c in rows[:limit]), default=10), 70)
    lines = [f"{'verdict':8} {'kind':10} {'check':{width}} {'value':>10} {'tolerance':>10}"]
    for c in rows[:limit]:
        lines.append(f"{'ok' if c.ok else 'FAIL':8} {c.kind:10} {clean(c.name)[:width]:{width}} {fmt(c.value):>10} "
                     f"{c.tolerance:>10}")
    if len(rows) > limit:
        lines.append(f"… {len(rows) - limit} more checks, all {'passing' if rows[limit].ok else 'listed above'}")
    return "\n".join(lines)


def summary(checks: list[Check]) -> str:
    failed = [c for c in checks if not c.ok]
    kinds = sorted({c.kind for c in checks})
    counts = ", ".join(f"{sum(c.kind == k for c in checks)} {k}" for k in kinds)
    return f"{'FAIL' if failed else 'PASS'}: {len(checks) - len(failed)}/{len(checks)} checks passed ({counts})"


def as_json(checks: list[Check], timing: dict) -> dict:
    return {
        "verdict": "fail" if any(not c.ok for c in checks) else "pass",
        "checks": [{"name": c.name, "kind": c.kind,
                    "value": float(f"{c.value:.6g}") if isinstance(c.value, float) else c.value,
                    "tolerance": c.tolerance, "verdict": "pass" if c.ok else "fail"}
                   for c in sorted(checks, key=lambda c: (c.kind, c.name))],
        "timing": timing,
    }


def report_text(checks: list[Check], timing: dict) -> str:
    return json.dumps(as_json(checks, timing), indent=2) + "\n"


def junit_text(checks: list[Check], seconds: float) -> str:
    failures = sum(not c.ok for c in checks)
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f'<testsuite name="lorapack.validate" tests="{len(checks)}" failures="{failures}" errors="0" '
           f'time="{seconds:.3f}">']
    for c in sorted(checks, key=lambda c: (c.kind, c.name)):
        head = f'  <testcase classname={quoteattr("lorapack." + c.kind)} name={quoteattr(c.name)}'
        if c.ok:
            out.append(head + "/>")
        else:
            msg = f"{fmt(c.value)} exceeds tolerance {c.tolerance}"
            out.append(head + f">\n    <failure message={quoteattr(msg)}/>\n  </testcase>")
    out.append("</testsuite>")
    return "\n".join(out) + "\n"
