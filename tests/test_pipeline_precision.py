"""Exact integers: every integer sample type is filtered to within half a step of the exact result.

The oracle is integer arithmetic: a kernel of small integers over a divisor,
summed in Python integers and rounded half to even with Fractions, so no
floating point stands between the samples and the expected output.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from conftest import convcli
from convcli.io import Signal
from convcli.pipeline.chain import compute_precision
from convcli.pipeline.options import FilterOptions


def run(*args):
    return convcli("filter", *map(str, args))


def exact_1d(x: np.ndarray, taps: list[int], divisor: int, lo: int, hi: int) -> np.ndarray:
    """Correlation with taps/divisor, reflect border, rounded half to even and clipped: in integers."""
    r = len(taps) // 2
    n = len(x)
    values = [int(v) for v in x]
    out = []
    for i in range(n):
        total = 0
        for j, t in enumerate(taps):
            k = i + j - r
            k = -k if k < 0 else (2 * (n - 1) - k if k >= n else k)
            total += t * values[k]
        out.append(min(max(round(Fraction(total, divisor)), lo), hi))  # round() on a Fraction: half to even
    return np.array(out, dtype=np.int64)


@pytest.mark.parametrize("subtype,bits", [("PCM_32", 32), ("PCM_24", 24), ("PCM_16", 16)])
def test_integer_pcm_is_filtered_exactly(tmp_path, subtype, bits):
    # PCM_32 through float32 was off by up to 174 steps: its 24-bit significand cannot hold the samples.
    rng = np.random.default_rng(bits)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    x = rng.integers(lo, hi, 3000, endpoint=True)
    x[:4] = (hi, hi, hi, lo)  # the extremes, and a sum that rounds at the edge of the range
    container = np.int32 if bits > 16 else np.int16
    sf.write(tmp_path / "in.wav", (x << (np.iinfo(container).bits - bits)).astype(container), 48000, subtype=subtype)
    for spec, taps, divisor in (("box:3", [1, 1, 1], 3), ("[1,2,1]", [1, 2, 1], 4), ("[3,-1,5,1]", [3, -1, 5, 1], 8)):
        args = ["-k", spec] + (["--normalize"] if spec.startswith("[") else [])
        result = run(tmp_path / "in.wav", *args, "-o", tmp_path / "out.wav")
        assert result.exit_code == 0, result.output
        y, _ = sf.read(tmp_path / "out.wav", dtype="int32" if bits > 16 else "int16")
        y = y.astype(np.int64) >> (np.iinfo(container).bits - bits)
        if len(taps) % 2 == 0:  # an even kernel: "same" pads one less before than after
            taps = [0] + taps
        np.testing.assert_array_equal(y, exact_1d(x, taps, divisor, lo, hi), err_msg=spec)


def test_int32_images_are_filtered_exactly(tmp_path):
    # TIFF mode I: 32-bit signed samples, kept as such.
    rng = np.random.default_rng(3)
    image = rng.integers(-(1 << 31), (1 << 31) - 1, (7, 9), endpoint=True).astype(np.int32)
    Image.fromarray(image).save(tmp_path / "in.tif")
    result = run(tmp_path / "in.tif", "-k", "[[1,1,1]]", "--normalize", "-o", tmp_path / "out.tif")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp_path / "out.tif"))
    assert out.dtype == np.int32
    expected = np.stack([exact_1d(row, [1, 1, 1], 3, -(1 << 31), (1 << 31) - 1) for row in image])
    np.testing.assert_array_equal(out, expected)


def test_int32_arrays_give_float64_results_that_hold_them(tmp_path):
    rng = np.random.default_rng(4)
    volume = rng.integers(-(1 << 31), (1 << 31) - 1, (5, 6, 7), endpoint=True).astype(np.int32)
    np.save(tmp_path / "v.npy", volume)
    assert run(tmp_path / "v.npy", "-k", "box:3", "-o", tmp_path / "o.npy").exit_code == 0
    out = np.load(tmp_path / "o.npy")
    assert out.dtype == np.float64
    # The exact mean over each reflected 3x3x3 window, in integers.
    padded = np.pad(volume.astype(object), 1, mode="reflect")
    sums = sum(padded[i:i + 5, j:j + 6, k:k + 7] for i in range(3) for j in range(3) for k in range(3))
    exact = np.vectorize(lambda s: Fraction(int(s), 27))(sums)
    error = np.vectorize(lambda e, o: abs(float(e - Fraction(o))))(exact, out)
    assert error.max() < 0.5 * 2.0 ** -20  # far inside half a step: float64's own rounding


@pytest.mark.parametrize("dtype,meta,expected", [
    ("uint8", {}, "float32"), ("uint16", {}, "float32"), ("int16", {"bits": 16}, "float32"),
    ("float32", {}, "float32"), ("float64", {}, "float64"),
    ("int32", {"bits": 24}, "float64"), ("int32", {"bits": 32}, "float64"), ("int32", {}, "float64"),
    ("uint32", {}, "float64"), ("int64", {}, "float64"),
])
def test_one_rule_decides_the_precision(dtype, meta, expected):
    signal = Signal(np.zeros(4, dtype), meta=dict(meta, dtype=dtype))
    assert compute_precision(signal, FilterOptions(kernels=("box:3",))) == expected
    assert compute_precision(signal, FilterOptions(kernels=("box:3",), precision="float32")) == "float32"


def test_explain_shows_the_precision(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(100, np.int32), 8000, subtype="PCM_32")
    sf.write(tmp_path / "b.wav", np.zeros(100, np.int16), 8000, subtype="PCM_16")
    assert "precision: float64" in run(tmp_path / "a.wav", "-k", "box:3", "--explain").stdout
    assert "precision: float32" in run(tmp_path / "b.wav", "-k", "box:3", "--explain").stdout
