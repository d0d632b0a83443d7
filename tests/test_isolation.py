"""The validator's independence, by construction: its core never imports the converter, whose transforms it
must check rather than reuse."""

from __future__ import annotations

import subprocess
import sys


def test_validator_core_does_not_load_convert():
    code = ("import sys; import lorapack.validate.run, lorapack.validate.checks, lorapack.validate.artifact, "
            "lorapack.validate.reference, lorapack.validate.report; "
            "print(sorted(m for m in sys.modules if m.startswith(('lorapack.convert', 'lorapack.pack', "
            "'lorapack.build'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    print("modules of convert/pack loaded by the validator core:", out)
    assert out == "[]"
