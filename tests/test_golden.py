"""The validator's conclusions on clean sample artifacts equal the committed golden reports (tests/golden/,
scripts/golden_reports.py): verdicts, check names, tolerances, and figures to a relative 1e-3. A rework of how
the validator computes must keep them; scripts/golden_reports.py checks every case, this test a few."""

from __future__ import annotations

import json

import pytest
from golden_reports import CASES, GOLDEN, differences, report

SUITE = ["llama-combined", "qwen3moe-experts", "qwen35-separate"]


@pytest.mark.parametrize("case", SUITE)
def test_report_equals_golden(samples, tmp_path, case):
    got = report(case, tmp_path)
    problems = differences(json.loads((GOLDEN / f"{case}.json").read_text()), got)
    print(f"{case}: {len(got['checks'])} checks, verdict {got['verdict']}; {len(problems)} differences from the "
          "golden report")
    assert got["verdict"] == "pass" and problems == [], problems[:10]


def test_comparison_can_fail():
    golden = json.loads((GOLDEN / "llama-combined.json").read_text())
    changed = json.loads(json.dumps(golden))
    changed["checks"][0]["value"] *= 1.01
    del changed["checks"][1]
    assert len(differences(golden, changed)) == 2 and set(SUITE) <= set(CASES)
