"""Zero stays zero and non-negative stays non-negative, whatever the strategy.

scipy's own test of ``gaussian_filter(..., truncate=)`` counts the non-zero
outputs around an impulse: exactly the kernel's support.  An FFT spreads
its round-off (+-1e-18) over every output, and a non-negative signal under a
non-negative kernel came out slightly negative.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from conftest import convcli
from convcli import correlate
from convcli.io import Signal
from convcli.kernels import resolve
from convcli.pipeline.chain import filter_signal
from convcli.pipeline.options import FilterOptions

METHODS = ["auto", "direct", "separable", "lowrank", "fft", "opencv"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("truncate,radius", [(2, 10), (5, 25)])
def test_gaussian_truncate_zeros_as_scipy(method, dtype, truncate, radius):
    impulse = np.zeros((100, 100), dtype)
    impulse[50, 50] = 1
    weights = resolve(f"gaussian:sigma=5,truncate={truncate}", ndim=2).weights[0]
    ours = correlate(impulse, weights, method=method)
    theirs = ndimage.gaussian_filter(impulse.astype(np.float64), 5, truncate=truncate)
    assert ours.min() >= 0
    assert not np.any(ours[theirs == 0])  # nothing beyond the support
    if dtype == np.float64 or method not in ("auto", "fft"):
        assert (ours > 0).sum() == (2 * radius + 1) ** 2  # scipy's test_gaussian_truncate
    else:  # a float32 transform resolves what is above its round-off (~1e-9 here): the corners are 1e-13
        assert np.all(ours[theirs > 1e-7] > 0)


def test_the_cli_keeps_the_zeros_outside_the_support(tmp_path):
    impulse = np.zeros((100, 100))
    impulse[50, 50] = 1
    np.save(tmp_path / "i.npy", impulse)
    result = convcli("filter", tmp_path / "i.npy", "-k", "gaussian:sigma=5,truncate=2", "-o", tmp_path / "o.npy")
    assert result.exit_code == 0, result.output
    out = np.load(tmp_path / "o.npy")
    assert (out != 0).sum() == 21 ** 2 and out.min() >= 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_digital_silence_stays_silent_through_a_long_response(dtype):
    rng = np.random.default_rng(0)
    x = np.zeros(60000, dtype)
    x[20000:30000] = rng.standard_normal(10000)
    response = rng.standard_normal(2001) * np.exp(-np.arange(2001) / 400.0)  # signed, like a room's
    out = correlate(x, response, method="fft")
    exact = correlate(x, response, method="direct")
    silent = exact == 0  # every window wholly in the silence
    assert silent.sum() > 30000 and np.all(out[silent] == 0)
    scale = float(np.abs(exact).max())
    np.testing.assert_allclose(out, exact, rtol=0, atol=scale * (1e-5 if dtype == np.float32 else 1e-12))


def kernel_for(method: str, rng) -> np.ndarray:
    if method == "box":
        return np.full((3, 4), 0.7)
    if method in ("separable", "opencv"):
        return np.outer(rng.random(3), rng.random(5))
    return rng.random((4, 3))


@settings(max_examples=25)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["auto", "direct", "separable", "lowrank", "box", "fft", "opencv"]),
       st.sampled_from([np.float32, np.float64]), st.sampled_from(["reflect", "zeros", "replicate"]))
def test_non_negative_in_non_negative_out(seed, method, dtype, pad):
    rng = np.random.default_rng(seed)
    image = rng.random((40, 50)) * 10.0 ** rng.integers(-3, 4)
    image[rng.random((40, 50)) < 0.5] = 0
    image[10:30, 5:40] = 0  # a wide region of exact zeros beside large values
    weights = kernel_for(method, rng)
    spec = "[" + ",".join("[" + ",".join(repr(float(v)) for v in row) + "]" for row in weights) + "]"
    signal = Signal(image.astype(dtype), kind="signal")
    out = filter_signal(signal, FilterOptions(kernels=(spec,), method=method, geometry=_pad(pad))).signal.data
    assert out.min() >= 0
    exact = correlate(image, weights, method="direct", pad_mode=pad)
    np.testing.assert_allclose(out, exact, rtol=1e-5, atol=1e-5 * float(np.abs(image).max()) * weights.sum())


def _pad(mode):
    from convcli.pipeline.options import Geometry

    return Geometry(pad_mode=mode)
