"""JSON files from checkpoints (config.json, adapter_config.json, tokenizer configs): bounded, typed reads."""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from lorapack.errors import LorapackError

MAX_JSON = 64 << 20  # configs and tokenizer configs are kilobytes; chat templates a few hundred


def regular_file(path: Path, error: type[LorapackError] = LorapackError) -> os.stat_result:
    """stat() of a regular file; a folder, device, FIFO (which would block a read) or socket is refused."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path} does not exist") from None
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path} is not a regular file")
    return st


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k[:40]!r}")
        out[k] = v
    return out


def parse_json(text: bytes, path: Path, error: type[LorapackError], what: str = "") -> Any:
    label = f"{path.name}{' ' + what if what else ''}"
    try:
        return json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise error(f"{label} is not UTF-8 text") from None
    except RecursionError:
        raise error(f"{label} is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, and duplicate keys
        raise error(f"{label} is not valid JSON ({e})") from None


def read_json(path: Path, error: type[LorapackError] = LorapackError, what: str = "", object_only: bool = True,
              max_bytes: int = MAX_JSON) -> Any:
    """A JSON file, refused when it is not a regular file, larger than `max_bytes`, invalid or (by default) not
    an object."""
    path = Path(path)
    if regular_file(path, error).st_size > max_bytes:
        raise error(f"{path.name} is larger than {max_bytes >> 20} MiB")
    with open(path, "rb") as f:
        value = parse_json(f.read(max_bytes + 1), path, error, what)
    if object_only and not isinstance(value, dict):
        raise error(f"{path.name} is not a JSON object")
    return value


# --- typed fields -------------------------------------------------------------------------------------------------

def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def describe(v: Any) -> str:
    """A value for an error message: short, and never a raw control character."""
    return ascii(v)[:40]
