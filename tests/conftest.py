"""Shared fixtures: the sample checkpoints, llama.cpp's converters (the reference), and running them."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
IN_CI = bool(os.environ.get("CI"))


# architecture → column → figure, filled by the tests as they run; tests/test_zz_coverage.py turns it into the
# README's coverage table (and fails when the README's differs)
COVERAGE: dict[str, dict[str, list[str]]] = {}


def record(arch: str, column: str, text: str) -> None:
    COVERAGE.setdefault(arch, {}).setdefault(column, []).append(text)


def need(condition: bool, why: str) -> None:
    """Skip outside CI; in CI a missing prerequisite is a failure, never a silent skip."""
    if not condition:
        if IN_CI:
            pytest.fail(f"required in CI: {why}")
        pytest.skip(why)


@pytest.fixture(scope="session")
def samples() -> Path:
    out = Path(os.environ.get("LORAPACK_SAMPLES", ROOT / "samples" / "out"))
    archs = ("llama", "phi3", "gemma2", "gemma3", "gemma3mm", "granite", "mistral3", "qwen2", "qwen3",
             "smollm3", "qwen3moe", "olmo2", "olmo3", "qwen35", "qwen35mm", "gemma4", "gemma4mm")
    # make_samples.py rebuilds what its stamp says is stale (a sample built by an older script)
    stamp = hashlib.sha256((ROOT / "samples" / "make_samples.py").read_bytes()).hexdigest()
    if not all((out / a / "done").exists() and (out / a / "done").read_text().strip() == stamp for a in archs):
        subprocess.run([sys.executable, str(ROOT / "samples" / "make_samples.py"), str(out)], check=True,
                       stdout=subprocess.DEVNULL)
    return out


@pytest.fixture(scope="session")
def reference() -> Path:
    """llama.cpp's converter scripts from the pinned sdist."""
    from fetch_reference import fetch

    try:
        return fetch(ROOT / ".cache" / "reference")
    except Exception as e:  # no registry reachable
        need(False, f"llama.cpp converters unavailable: {e}")


class RefRunner:
    """Runs llama.cpp's converters once per input and caches the output file."""

    def __init__(self, ref: Path, tmp: Path):
        self.ref, self.tmp, self.cache = ref, tmp, {}

    def base(self, base: Path, outtype: str) -> Path:
        return self._run("convert_hf_to_gguf.py", [str(base)], outtype, base)

    def lora(self, adapter: Path, base: Path, outtype: str) -> Path:
        return self._run("convert_lora_to_gguf.py", [str(adapter), "--base", str(base)], outtype, adapter)

    def _run(self, script: str, args: list[str], outtype: str, key: Path) -> Path:
        k = (script, str(key), outtype)
        if k not in self.cache:
            out = self.tmp / f"{len(self.cache)}-{key.parent.parent.name}-{key.name}-{outtype}.gguf"
            proc = subprocess.run([sys.executable, str(self.ref / script), *args, "--outtype", outtype,
                                   "--outfile", str(out)], capture_output=True, text=True)
            assert proc.returncode == 0, f"reference {script} failed:\n{proc.stderr[-3000:]}"
            self.cache[k] = out
        return self.cache[k]


@pytest.fixture(scope="session")
def ref_run(reference, tmp_path_factory) -> RefRunner:
    return RefRunner(reference, tmp_path_factory.mktemp("reference"))


def lorapack(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a fresh process."""
    proc = subprocess.run([sys.executable, "-m", "lorapack", *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"lorapack {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc
