"""Fetch llama.cpp's converters (the reference) from the pinned llama-cpp-python sdist on PyPI.

    python scripts/fetch_reference.py [DEST]     (default .cache/reference) → prints DEST/llama.cpp

Only vendor/llama.cpp's Python side is extracted: convert_*.py, conversion/, gguf-py/. Nothing of it is
imported by lorapack; tests and benchmarks run it as a separate process to compare against.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PIN = "llama-cpp-python==0.3.36"
WANTED = ("convert_hf_to_gguf.py", "convert_lora_to_gguf.py", "conversion/", "gguf-py/")


def fetch(dest: Path) -> Path:
    target = dest / "llama.cpp"
    if (target / "convert_lora_to_gguf.py").is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", PIN,
                        "-d", tmp, "-q"], check=True)
        sdist = next(Path(tmp).glob("*.tar.gz"))
        with tarfile.open(sdist) as tar:
            prefix = tar.getnames()[0].split("/")[0] + "/vendor/llama.cpp/"
            members = []
            for m in tar.getmembers():
                rel = m.name[len(prefix):] if m.name.startswith(prefix) else None
                if rel and rel.startswith(WANTED) and (m.isfile() or m.isdir()):
                    m.name = rel
                    members.append(m)
            target.mkdir(parents=True, exist_ok=True)
            tar.extractall(target, members=members, filter="data")
    return target


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / ".cache" / "reference"
    print(fetch(Path(sys.argv[1]) if len(sys.argv) > 1 else default))
