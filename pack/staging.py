"""Atomic outputs: everything is written under a temporary sibling and renamed into place only on success,
so a failed or interrupted build leaves nothing at the output path (and an existing output untouched)."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

from lorapack.errors import LorapackError


def check_output(out: Path, force: bool) -> None:
    if out.exists() and not force:
        raise LorapackError(f"{out} already exists", hint="pass --force to replace it")
    if not out.parent.exists():
        raise LorapackError(f"output folder {out.parent} does not exist")


@contextlib.contextmanager
def staged(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary path beside `out`; on success it replaces `out`, on any error it is removed."""
    check_output(out, force)
    tmp = out.with_name(f".{out.name}.lorapack-tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.lorapack-old-{os.getpid()}")
            out.rename(old)
            tmp.rename(out)
            _remove(old)
        else:
            tmp.rename(out)
    finally:
        _remove(tmp)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()
