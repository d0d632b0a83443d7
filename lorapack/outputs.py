"""Output discipline for every path lorapack writes (build, unpack, validate --report/--junit, compare).

- Everything is written under a temporary sibling `.NAME.lorapack-tmp-PID-RAND` and placed only when complete.
- Without --force an existing path is never replaced, and placement itself refuses to replace (renameat2
  RENAME_NOREPLACE), so a file that appears at the output meanwhile — a concurrent build — is not overwritten.
- --force replaces only a regular file, or a folder lorapack wrote (it holds MARKER), in one atomic step
  (RENAME_EXCHANGE, checked after the exchange and undone if what came back is anything else).
- Temporary files are removed on every exit lorapack can catch (the CLI turns SIGTERM/SIGHUP into exceptions);
  those of a process that died (kill -9) are swept by the next run writing the same output.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import secrets
import shutil
import stat
from pathlib import Path
from typing import Iterator

from lorapack.errors import LorapackError

MARKER = ".lorapack-output"
_MARKER_TEXT = "written by lorapack: `--force` may replace this folder as a whole\n"
_NOREPLACE, _EXCHANGE = 1, 2  # linux/fs.h
_AT_FDCWD = -100


def _tmp_rx(name: str) -> re.Pattern:
    return re.compile(rf"\.{re.escape(name)}\.lorapack-tmp-(\d+)-[0-9a-f]+")


def output_path(out: Path) -> Path:
    """Absolute, without resolving a symlink at the output itself (replacing a link must not follow it)."""
    out = Path(os.path.abspath(out))
    if out.name in ("", ".", ".."):
        raise LorapackError(f"{out} cannot be an output path")
    return out


def check_output(out: Path, force: bool, kind: str = "file", inputs: tuple[Path, ...] = ()) -> Path:
    """Refuse early (before any work) what placement would refuse; returns the absolute output path."""
    out = output_path(out)
    if not out.parent.is_dir():
        raise LorapackError(f"output folder {out.parent} does not exist")
    exists = os.path.lexists(out)
    if exists and not force:
        raise LorapackError(f"{out} already exists", hint="pass --force to replace it")
    _spare_inputs(out, exists, inputs)
    if exists:
        _replaceable(out, kind)
    return out


def _spare_inputs(out: Path, exists: bool, inputs: tuple[Path, ...]) -> None:
    """Never the input itself, a folder holding it, or (with --force) an existing file inside an input folder;
    compared by real path, so a symlink cannot hide an input."""
    target = Path(os.path.realpath(out.parent)) / out.name  # what placement replaces (a link itself, if one)
    for p in inputs:
        real = Path(os.path.realpath(p))
        if real == target or target in real.parents or real == Path(os.path.realpath(out)):
            raise LorapackError(f"output {out} would replace the input {p}", hint="choose another output path")
        if exists and real in target.parents:
            raise LorapackError(f"output {out} would replace a file inside the input folder {p}",
                                hint="choose another output path")


def _replaceable(path: Path, kind: str) -> None:
    st = os.lstat(path)
    if kind == "file" and not stat.S_ISREG(st.st_mode):
        raise LorapackError(f"{path} exists and is not a regular file; --force replaces only files",
                            hint="remove it yourself, or choose another output path")
    if kind == "dir" and not (stat.S_ISDIR(st.st_mode) and os.path.isfile(path / MARKER)):
        raise LorapackError(f"{path} exists and is not a folder lorapack wrote; --force replaces only those",
                            hint="remove it yourself, or choose another output path")


def sweep(out: Path) -> None:
    """Remove temporaries left beside `out` by lorapack processes that no longer exist (kill -9, power loss)."""
    rx = _tmp_rx(out.name)
    try:
        entries = list(os.scandir(out.parent))
    except OSError:
        return
    for e in entries:
        m = rx.fullmatch(e.name)
        if m and not _alive(int(m.group(1))):
            _remove(Path(e.path))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def staged(out: Path, force: bool, kind: str = "file", inputs: tuple[Path, ...] = ()) -> Iterator[Path]:
    """Yield a temporary path beside `out` (a folder is created for kind 'dir'); on success it is placed at
    `out`, on any error or signal it is removed and `out` is left as it was."""
    out = check_output(out, force, kind, inputs)
    sweep(out)
    tmp = out.with_name(f".{out.name}.lorapack-tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        if kind == "dir":
            tmp.mkdir()
            (tmp / MARKER).write_text(_MARKER_TEXT)
        yield tmp
        place(tmp, out, force, kind)
    finally:
        _remove(tmp)


def place(tmp: Path, out: Path, force: bool, kind: str) -> None:
    if not os.path.lexists(out) or not force:
        if not _rename(tmp, out, _NOREPLACE):
            raise LorapackError(f"{out} appeared while lorapack was writing it; nothing was replaced",
                                hint="another process writes the same output? pass --force to replace it")
        return
    if _rename(tmp, out, _EXCHANGE):
        try:
            _replaceable(tmp, kind)  # tmp now holds what was at `out`
        except LorapackError:
            _rename(tmp, out, _EXCHANGE)  # put it back: it is not ours to replace
            raise
        return
    _replaceable(out, kind)
    _fallback_replace(tmp, out, kind)


def _rename(src: Path, dst: Path, flags: int) -> bool:
    """renameat2(src, dst, flags); False when dst exists (NOREPLACE). Falls back where renameat2 is missing."""
    fn = _renameat2()
    if fn is not None:
        if fn(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
            return True
        err = ctypes.get_errno()
        if err == errno.EEXIST:
            return False
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(dst))
    if flags == _EXCHANGE:
        return False
    return _fallback_noreplace(src, dst)


def _fallback_noreplace(src: Path, dst: Path) -> bool:
    """Without renameat2: a hard link fails if dst exists (files); a folder rename fails over a non-empty one."""
    try:
        if src.is_dir():
            if os.path.lexists(dst):
                return False
            os.rename(src, dst)
        else:
            os.link(src, dst)
            os.unlink(src)
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True


def _fallback_replace(tmp: Path, out: Path, kind: str) -> None:
    if kind == "file":
        os.replace(tmp, out)  # atomic for files
        return
    old = tmp.with_name(tmp.name + "-old")
    os.rename(out, old)
    os.rename(tmp, out)
    _remove(old)


_LIBC = None


def _renameat2():
    global _LIBC
    if _LIBC is None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            _LIBC = libc.renameat2
            _LIBC.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC or None


def _remove(p: Path) -> None:
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif os.path.lexists(p):
            p.unlink()
    except OSError:
        pass


def write_text(out: Path, text: str, force: bool) -> None:
    """A small file (report, JUnit) written atomically under the same rules."""
    with staged(out, force) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
