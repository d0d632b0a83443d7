"""Split GGUF (--split-max-size): the shards equal what convert_hf_to_gguf.py --split-max-size writes, every
reader (validate, inspect, unpack, llama.cpp) takes them, and damaged splits are refused by name."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from conftest import lorapack
from gguf_compare import diff
from test_llama_cpp import llama_cpp_logits

# 60 kB: the llama sample's 64 KiB output and embedding matrices exceed it (each gets a shard of its own), the
# blocks fill the rest a few tensors per shard
LIMIT = "60K"


@pytest.mark.parametrize("outtype", ["f16", "q8_0"])
def test_split_base_matches_llama_cpp(samples, reference, tmp_path, outtype):
    base = samples / "llama" / "base"
    (tmp_path / "ref").mkdir()
    proc = subprocess.run([sys.executable, str(reference / "convert_hf_to_gguf.py"), str(base), "--outtype", outtype,
                           "--outfile", str(tmp_path / "ref" / "base.gguf"), "--split-max-size", LIMIT],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lorapack("build", base, samples / "llama" / "adapters" / "plain", "-o", tmp_path / "s", "--layout", "separate",
             "--outtype", outtype, "--split-max-size", LIMIT)
    theirs = sorted(p.name for p in (tmp_path / "ref").glob("*.gguf"))
    ours = sorted(p.name for p in (tmp_path / "s").glob("base*.gguf"))
    print(f"{outtype}: llama.cpp wrote {theirs}")
    assert len(theirs) > 3 and ours == theirs
    for name in theirs:  # every key (split.* included, provenance aside), every tensor's place and bytes
        assert diff(str(tmp_path / "s" / name), str(tmp_path / "ref" / name)) == [], name
    for name in theirs[1:]:  # the other shards hold no provenance keys: byte for byte the same files
        assert (tmp_path / "s" / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name


def test_split_artifacts_are_read_everywhere(samples, tmp_path):
    base, ad = samples / "llama" / "base", samples / "llama" / "adapters" / "plain"
    lorapack("build", base, ad, "-o", tmp_path / "c.gguf", "--split-max-size", LIMIT)
    shards = sorted(tmp_path.glob("c-*-of-*.gguf"))
    assert len(shards) > 3 and not (tmp_path / "c.gguf").exists()
    # validate and inspect take any shard, or the name it was built as
    lorapack("validate", shards[2], "--base", base, ad, "--report", tmp_path / "r.json", "--quiet")
    assert json.loads((tmp_path / "r.json").read_text())["verdict"] == "pass"
    for name in (tmp_path / "c.gguf", shards[-1]):
        info = json.loads(lorapack("inspect", name, "--json").stdout)
        assert info["layout"] == "combined" and info["split"] == [str(p) for p in shards]
    # unpack joins it: the same bytes as an unsplit separate build
    lorapack("unpack", shards[0], "-o", tmp_path / "u")
    lorapack("build", base, ad, "-o", tmp_path / "s", "--layout", "separate")
    for rel in ("base.gguf", "adapters/plain.gguf"):
        assert (tmp_path / "u" / rel).read_bytes() == (tmp_path / "s" / rel).read_bytes(), rel


def test_llama_cpp_runs_split_outputs(samples, tmp_path):
    """llama.cpp opens our split base (with the adapter) and split merged model from their first shards, and
    computes what it computes from the unsplit files (max |Δlogit| = 0: the same bytes)."""
    base, ad = samples / "llama" / "base", samples / "llama" / "adapters" / "plain"
    lorapack("build", base, ad, "-o", tmp_path / "one", "--layout", "separate")
    lorapack("build", base, ad, "-o", tmp_path / "split", "--layout", "separate", "--split-max-size", LIMIT)
    first = sorted((tmp_path / "split").glob("base-*.gguf"))[0]
    want = llama_cpp_logits(str(tmp_path / "one" / "base.gguf"), str(tmp_path / "one" / "adapters" / "plain.gguf"))
    got = llama_cpp_logits(str(first), str(tmp_path / "split" / "adapters" / "plain.gguf"))
    print(f"separate: max|Δlogit| split vs one file {np.abs(got - want).max():.1e}")
    assert np.array_equal(got, want)
    lorapack("build", base, ad, "-o", tmp_path / "m.gguf", "--layout", "merged", "--split-max-size", LIMIT)
    lorapack("build", base, ad, "-o", tmp_path / "m1.gguf", "--layout", "merged")
    got = llama_cpp_logits(str(sorted(tmp_path.glob("m-*.gguf"))[0]))
    assert np.array_equal(got, llama_cpp_logits(str(tmp_path / "m1.gguf")))


def _split_model(tmp_path):
    from lorapack.pack.gguf_io import write_files
    from lorapack.pack.split import split_files
    from lorapack.spec.plan import Plan, PlannedTensor, string

    plan = Plan()
    plan.add(string("general.architecture", "llama"))
    plan.tensors = [PlannedTensor(f"t{i}", (4, 8), _f32(), lambda i=i: np.full((4, 8), i, np.float32))
                    for i in range(3)]
    files = split_files(tmp_path / "m.gguf", plan, 128)  # 128 bytes: one tensor per shard
    write_files(files)
    return list(files)


def _f32():
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType.F32


def test_split_reader_reads_every_shard(tmp_path):
    from lorapack.formats.gguf import read_model

    paths = _split_model(tmp_path)
    assert [p.name for p in paths] == [f"m-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    for name in (paths[0], paths[2], tmp_path / "m.gguf"):
        f = read_model(name)
        assert f.shards == paths and [t.file for t in f.tensors] == paths
        assert [f.read(t)[0, 0] for t in f.tensors] == [0, 1, 2]


def test_damaged_splits_are_refused_by_name(tmp_path):
    from lorapack.formats.gguf import CorruptGGUF, read_model
    from lorapack.pack.gguf_io import write_files
    from lorapack.pack.split import shards

    paths = _split_model(tmp_path)
    paths[1].rename(tmp_path / "gone")
    with pytest.raises(CorruptGGUF, match="shard 2 of 3, m-00002-of-00003.gguf, is missing"):
        read_model(paths[0])
    # a shard from another split in its place: its split.no says where it belongs
    (tmp_path / "o").mkdir()
    _split_model(tmp_path / "o")[2].rename(paths[1])
    with pytest.raises(CorruptGGUF, match="split.no/split.count are 2/3, expected 1/3"):
        read_model(paths[0])
    # a first shard renamed: the name no longer says how many files there are
    (tmp_path / "gone").rename(paths[1])
    paths[0].rename(tmp_path / "lone.gguf")
    with pytest.raises(CorruptGGUF, match="split.count is 3 but the file is not named"):
        read_model(tmp_path / "lone.gguf")
    # the first shard promises more tensors than the shards hold
    first, *rest = shards(_plan_with(3), 128)
    first.kv["split.tensors.count"] = replace(first.kv["split.tensors.count"], value=9)
    d = tmp_path / "p"
    d.mkdir()
    write_files({d / f"x-0000{i + 1}-of-00003.gguf": p for i, p in enumerate([first, *rest])})
    with pytest.raises(CorruptGGUF, match="split.tensors.count is 9 but the shards hold 3 tensors"):
        read_model(d / "x-00001-of-00003.gguf")


def _plan_with(n):
    from lorapack.spec.plan import Plan, PlannedTensor

    plan = Plan()
    plan.tensors = [PlannedTensor(f"t{i}", (4, 8), _f32(), lambda: np.zeros((4, 8), np.float32)) for i in range(n)]
    return plan


def test_split_sizes_and_refusals(samples, tmp_path):
    from lorapack.errors import LorapackError
    from lorapack.pack.split import parse_size, shards

    assert [parse_size(s) for s in ("0", "123", "60K", "5M", "2G")] == [0, 123, 60_000, 5_000_000, 2_000_000_000]
    for bad in ("1.5G", "4GB", "-1", "", "G"):
        with pytest.raises(LorapackError, match="is not a size"):
            parse_size(bad)
    assert len(shards(_plan_with(3), 0)) == 1 and len(shards(_plan_with(3), 10**9)) == 1  # fits: one file
    assert "split.count" not in shards(_plan_with(3), 10**9)[0].kv
    base, ad = samples / "llama" / "base", samples / "llama" / "adapters" / "plain"
    proc = lorapack("build", base, ad, "-o", tmp_path / "x.gguf", "--split-max-size", "lots", check=False)
    assert proc.returncode == 2 and "error: --split-max-size 'lots' is not a size" in proc.stderr
    proc = lorapack("build", base, ad, "-o", tmp_path / "d", "--layout", "separate", "--adapters-only",
                    "--split-max-size", "1M", check=False)
    assert proc.returncode == 2 and "--adapters-only writes adapter files only" in proc.stderr
    # a shard name that exists is not replaced without --force, and nothing is written
    lorapack("build", base, ad, "-o", tmp_path / "c.gguf", "--split-max-size", LIMIT)
    before = {p: p.read_bytes() for p in tmp_path.glob("c-*.gguf")}
    proc = lorapack("build", base, ad, "-o", tmp_path / "c.gguf", "--split-max-size", LIMIT, check=False)
    assert proc.returncode == 2 and "already exists" in proc.stderr
    assert {p: p.read_bytes() for p in tmp_path.glob("c-*.gguf")} == before
    assert not list(tmp_path.glob(".*lorapack-tmp*"))
    lorapack("build", base, ad, "-o", tmp_path / "c.gguf", "--split-max-size", LIMIT, "--force")
    dry = lorapack("build", base, ad, "-o", tmp_path / "dry.gguf", "--split-max-size", LIMIT, "--dry-run").stdout
    assert "dry-00001-of-" in dry and not list(tmp_path.glob("dry*"))
