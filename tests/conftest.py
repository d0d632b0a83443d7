"""Shared fixtures: the sample checkpoints, llama.cpp's converters (the reference), and running them."""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
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


# llama.cpp's outputs persist here between runs, keyed by everything that determines them (the converter's
# sources, torch/transformers versions, the input files' bytes, the arguments): a rerun on unchanged samples
# reads them instead of converting again. LORAPACK_REF_CACHE=0 turns it off; the oldest go past 6 GiB.
REF_CACHE = Path(os.environ.get("LORAPACK_REF_CACHE_DIR", Path.home() / ".cache" / "lorapack" / "reference-outputs"))
REF_CACHE_BYTES = 6 << 30


@functools.cache  # per session: a base folder is an input of every adapter conversion against it
def _digest(root: Path, pattern: str = "*") -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts):
        h.update(f"{path.relative_to(root)}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest()


def _tree_digest(*roots: Path, pattern: str = "*") -> str:
    return hashlib.sha256(" ".join(_digest(r, pattern) for r in roots).encode()).hexdigest()


class RefRunner:
    """Runs llama.cpp's converters once per input (cached across runs by input hash, see REF_CACHE)."""

    def __init__(self, ref: Path, tmp: Path):
        from importlib.metadata import version

        self.ref, self.tmp, self.cache = ref, tmp, {}
        self.use_disk = os.environ.get("LORAPACK_REF_CACHE", "1") != "0"
        libs = [version(p) for p in ("torch", "transformers", "numpy", "tokenizers", "sentencepiece", "safetensors")]
        self.tool = hashlib.sha256(f"{_tree_digest(ref, pattern='*.py')} {libs} {sys.version}".encode()).hexdigest()

    def base(self, base: Path, outtype: str) -> Path:
        return self._run("convert_hf_to_gguf.py", [str(base)], outtype, [base])

    def lora(self, adapter: Path, base: Path, outtype: str) -> Path:
        return self._run("convert_lora_to_gguf.py", [str(adapter), "--base", str(base)], outtype, [adapter, base])

    def _run(self, script: str, args: list[str], outtype: str, inputs: list[Path]) -> Path:
        k = (script, *map(str, inputs), outtype)
        if k in self.cache:
            return self.cache[k]
        digest = hashlib.sha256(f"{self.tool} {script} {outtype} {_tree_digest(*inputs)}".encode()).hexdigest()
        cached = REF_CACHE / f"{digest}.gguf"
        if self.use_disk and cached.is_file():
            os.utime(cached)  # recently used: kept when the cache is trimmed
            self.cache[k] = cached
            return cached
        out = self.tmp / f"{len(self.cache)}-{inputs[0].parent.parent.name}-{inputs[0].name}-{outtype}.gguf"
        proc = subprocess.run([sys.executable, str(self.ref / script), *args, "--outtype", outtype,
                               "--outfile", str(out)], capture_output=True, text=True)
        assert proc.returncode == 0, f"reference {script} failed:\n{proc.stderr[-3000:]}"
        self.cache[k] = out
        if self.use_disk:
            self._store(out, cached)
        return out

    @staticmethod
    def _store(out: Path, cached: Path) -> None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        part = cached.with_suffix(f".part{os.getpid()}")
        shutil.copyfile(out, part)
        os.replace(part, cached)  # never a half-written entry
        entries = sorted(REF_CACHE.glob("*.gguf"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for entry in entries:
            total += entry.stat().st_size
            if total > REF_CACHE_BYTES:
                entry.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def ref_run(reference, tmp_path_factory) -> RefRunner:
    return RefRunner(reference, tmp_path_factory.mktemp("reference"))


def lorapack(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a fresh process."""
    proc = subprocess.run([sys.executable, "-m", "lorapack", *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"lorapack {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc
