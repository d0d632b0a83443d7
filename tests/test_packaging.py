"""The wheel built from the repository works on its own: installed (not editable) into a fresh venv, run from
outside the repository, `lorapack build` converts a sample. Catches package data missing from the wheel
(convert/bpe_pre_hashes.json, read at import) and anything that only works from the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _source_copy(dest: Path) -> Path:
    """The repository's files (tracked and untracked, not ignored) copied out, so that the build neither writes
    build/ and *.egg-info into the checkout nor packs stale files a previous build left in build/lib."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True)
    if listed.returncode == 0:
        for rel in filter(None, listed.stdout.decode().split("\0")):
            src = ROOT / rel
            if src.is_file():  # listed but deleted in the working tree: skip
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)
    else:  # not a git checkout
        shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "*.egg-info", "__pycache__", ".cache", "out", "reports"), dirs_exist_ok=True)
    return dest


def test_wheel_installs_and_builds_outside_the_repository(samples, tmp_path):
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    work = tmp_path / "work"  # every command runs here, never in the repository
    work.mkdir()

    # 1. the wheel, built from the repository's files without network (setuptools from this venv)
    src = _source_copy(tmp_path / "src")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path / "whl",
          src], work, env)
    (wheel,) = (tmp_path / "whl").glob("lorapack-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for data in ("lorapack/convert/bpe_pre_hashes.json", "lorapack/spec/llama_cpp_names.json"):
        assert data in names, f"package data {data} missing from {wheel.name}"
    assert any(n.startswith("lorapack/archs/llama") for n in names), "architecture specs missing from the wheel"
    t_wheel = time.perf_counter() - t0

    # 2. a fresh venv that sees this venv's dependencies through a plain path .pth line: site does not process
    # the .pth files of a directory added that way, so the editable lorapack's finder stays invisible
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], work, env)
    py = venv / "bin" / "python"
    site_new = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], work, env)
                    .stdout.strip())
    (site_new / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    hidden = subprocess.run([py, "-c", "import lorapack"], cwd=work, env=env, capture_output=True, text=True)
    assert hidden.returncode != 0 and "No module named 'lorapack'" in hidden.stderr, \
        f"the editable lorapack is visible in the fresh venv before the wheel is installed:\n{hidden.stderr}"

    # 3. the wheel alone (pip from the dependencies; -I: the editable lorapack's metadata is on the path)
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", wheel], work, env)
    where = _run([py, "-c", "import lorapack, lorapack.convert; print(lorapack.__file__); "
                            "print(lorapack.convert.__file__)"], work, env).stdout.split()
    assert all(Path(w).resolve().is_relative_to(venv.resolve()) for w in where), where
    t_install = time.perf_counter() - t0 - t_wheel

    # 4. the installed command converts a sample, from outside the repository
    out = work / "llama.gguf"
    t = time.perf_counter()
    _run([venv / "bin" / "lorapack", "build", samples / "llama" / "base", samples / "llama" / "adapters" / "plain",
          "-o", out], work, env)
    t_build = time.perf_counter() - t
    assert out.is_file() and out.stat().st_size > 0
    print(f"\npackaging: wheel {wheel.name} ({len(names)} files, {wheel.stat().st_size / 1024:.0f} KiB) in "
          f"{t_wheel:.1f}s; venv + install {t_install:.1f}s; lorapack at {where[0]}; "
          f"build -> {out.stat().st_size / 1024:.0f} KiB in {t_build:.1f}s; total {time.perf_counter() - t0:.1f}s")
