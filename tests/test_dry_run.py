"""Know before writing: --dry-run prints every file and tensor it would write and writes nothing; the disk check
refuses up front when the outputs cannot fit."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest
from conftest import lorapack

from lorapack.errors import LorapackError


def test_dry_run_lists_the_plan_and_writes_nothing(samples, tmp_path):
    base, ad = samples / "llama" / "base", samples / "llama" / "adapters" / "plain"
    out = tmp_path / "sep"
    proc = lorapack("build", base, ad, "-o", out, "--layout", "separate", "--outtype", "q8_0", "--dry-run")
    lines = proc.stdout.splitlines()
    print("\n".join(lines[:3] + lines[-1:]))
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert any(line.startswith(f"{out / 'base.gguf'}: separate layout") for line in lines)
    assert any(line.startswith(f"{out / 'adapters' / 'plain.gguf'}:") for line in lines)
    assert any("blk.0.attn_q.weight" in line and "Q8_0" in line for line in lines)
    assert lines[-1].startswith("dry run: 2 file(s)") and "nothing was written" in lines[-1]
    # the sizes it announces bound what it writes, closely
    lorapack("build", base, ad, "-o", out, "--layout", "separate", "--outtype", "q8_0")
    from gguf import GGMLQuantizationType as QT

    from lorapack.build import BuildRequest, _plans, file_bytes
    from lorapack.convert.base import resolve
    from lorapack.convert.checkpoint import load_checkpoint
    from lorapack.convert.peft import load_adapter

    model = resolve(load_checkpoint(base))
    req = BuildRequest(base, [str(ad)], out, layout="separate", outtype="q8_0")
    for path, plan in _plans(req, model, [load_adapter("plain", ad, model)], QT.Q8_0, QT.F16).items():
        est, real = file_bytes(plan), path.stat().st_size
        print(f"{path.name}: estimated {est} bytes, wrote {real}")
        assert real <= est <= real * 1.05 + 8192

def test_disk_check_refuses_before_writing(samples, tmp_path, monkeypatch):
    from lorapack.build import BuildRequest, run_build

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 20, 10 << 20, 4096))
    req = BuildRequest(samples / "llama" / "base", [str(samples / "llama" / "adapters" / "plain")],
                       tmp_path / "out.gguf")
    with pytest.raises(LorapackError) as e:
        run_build(req, lambda total: None)
    print(e.value)
    assert "the output needs about" in str(e.value) and "4.0 KiB free" in str(e.value)
    assert list(tmp_path.iterdir()) == []
