"""The fast block quantizer (ggml's ggml_quantize_chunk through ctypes) writes exactly gguf-py's bytes for Q8_0,
Q4_0 and Q5_0, on values chosen to hit rounding ties, zero blocks, signed extremes and subnormal scales."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import need
from gguf import GGMLQuantizationType as QT
from gguf import quants

from lorapack.spec import ggml_quant


def _cases(rng) -> np.ndarray:
    x = rng.standard_normal((512, 256)).astype(np.float32)
    x[0] = 0  # all-zero blocks
    x[1, :32] = np.linspace(-1, 1, 32)  # extremes at both ends
    x[2, :32] = 127.5 / 127 * np.arange(32) / 31  # values on .5 of the step
    x[3] *= 1e-30  # scales that round to subnormal / zero f16
    x[4] *= 6e4  # near f16's max
    x[5, :32] = -3.0  # a block of one negative value
    x[6, :32], x[6, 32:64] = -0.0, 0.0  # zero blocks starting with -0.0 and +0.0 (the scale's sign differs)
    x[6, 33] = x[6, 2] = -0.0
    scaled = np.clip(x * 7.3, -6e4, 6e4)  # finite in f16: the writer refuses what is not
    return np.concatenate([x, scaled.astype(np.float16).astype(np.float32)])


@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q4_0, QT.Q5_0])
def test_ggml_quantizer_equals_gguf_py(qtype):
    need(ggml_quant.available(), "llama-cpp-python's libggml-base.so is not installed")
    x = _cases(np.random.default_rng(int(qtype)))
    ours, theirs = ggml_quant.quantize(x, qtype), quants.quantize(x, qtype)
    differ = int(np.sum(np.any(ours != theirs, axis=-1)))
    print(f"{qtype.name}: {x.shape[0]} rows of {x.shape[1]}, {differ} rows differ from gguf-py")
    assert ours.shape == theirs.shape and differ == 0
    # float16 input (what an F16 checkpoint hands the encoder) goes through float32 on both sides
    h = x.astype(np.float16)
    assert np.array_equal(ggml_quant.quantize(h, qtype), quants.quantize(h, qtype))
    assert ggml_quant.quantize(x[:, :30], qtype) is None  # rows that do not split into blocks: not this path


def test_bf16_to_f16_fast_path_equals_the_float_path():
    """Every one of the 65536 bf16 bit patterns, in a block large enough for the torch path: the stored f16 bits
    equal bf16 → f32 → f16 through numpy (what gguf-py writes) wherever the result is finite; where it is not
    (NaN, infinity, overflow past 65504) both are non-finite, which the writer refuses by name."""
    from lorapack.spec.types import direct_encoder

    bits = np.tile(np.arange(65536, dtype=np.uint16), 32)  # 2M values: past the 1M threshold of the fast path
    got = direct_encoder("BF16", QT.F16)(bits).view(np.uint16)[:65536]
    with np.errstate(over="ignore", invalid="ignore"):
        want = (bits[:65536].astype(np.uint32) << 16).view(np.float32).astype(np.float16).view(np.uint16)
    finite = (want & 0x7C00) != 0x7C00
    mismatched = int((got[finite] != want[finite]).sum())
    print(f"{int(finite.sum())} finite results, {mismatched} differ; {int((~finite).sum())} non-finite")
    assert mismatched == 0
    assert ((got[~finite] & 0x7C00) == 0x7C00).all()
