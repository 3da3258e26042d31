"""The 1-D overlap-save FFT held to numpy.correlate, on both transform backends, across block and group edges."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from convcli import correlate
from convcli.engine import bands, compiled, spectral
from convcli.engine.borders import parse_pad_mode
from convcli.engine.geometry import plan_axes
from test_engine_toeplitz import reference

BACKENDS = ["numpy"] + (["opencv"] if compiled.available() else [])


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """Each transform backend in turn, with blocks and groups small enough that every edge is crossed."""
    if request.param == "numpy":
        monkeypatch.setattr(spectral, "_transforms", spectral._NumPy)
    monkeypatch.setattr(spectral, "MIN_BLOCK", 64)
    monkeypatch.setattr(spectral, "GROUP_SAMPLES", 700)
    monkeypatch.setattr(bands, "PARALLEL_WORK", 0)
    return request.param


@pytest.mark.parametrize("taps", [1, 2, 17, 60, 301])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (3, 1), (2, 3)])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular", "constant:-2"])
def test_overlap_save_matches_numpy_correlate(taps, stride, dilation, mode, backend):
    rng = np.random.default_rng(taps + 10 * stride)
    x = rng.standard_normal((1200, 2))
    kernel = rng.standard_normal(taps)
    got = correlate(x, kernel, channel_axis=-1, method="fft", stride=stride, dilation=dilation, pad_mode=mode,
                    precision="float64")
    if mode.startswith("constant"):
        expected = _constant_reference(x, kernel, stride, dilation, -2.0)
    else:
        expected = reference(x, kernel, stride, dilation, "same", mode)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9 * np.abs(kernel).sum() * 3)


def _constant_reference(x, kernel, stride, dilation, cval):
    """Padding with a constant: numpy.pad with that constant, then the valid strided correlation."""
    n = x.shape[0]
    plan = plan_axes((n,), (len(kernel),), stride=stride, padding="same", dilation=dilation)[0]
    xp = np.pad(x, ((plan.before, plan.after), (0, 0)), constant_values=cval)
    dilated = np.zeros(plan.span)
    dilated[::dilation] = kernel
    cols = [np.correlate(xp[:, c], dilated, "valid")[::stride][:plan.out] for c in range(x.shape[1])]
    return np.stack(cols, -1)


def test_int16_audio_in_float32_with_a_long_response(backend):
    rng = np.random.default_rng(1)
    x = rng.integers(-32768, 32767, size=(5000, 2), dtype=np.int16)
    response = rng.standard_normal(700) * np.exp(-np.arange(700) / 150)
    got = correlate(x, response, channel_axis=-1, method="fft", pad_mode="symmetric")
    assert got.dtype == np.float32
    expected = reference(x, response, 1, 1, "same", "symmetric")
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5 * np.abs(expected).max())


def test_each_channel_keeps_its_own_response(backend):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 800, 3))
    kernels = rng.standard_normal((3, 90))
    got = correlate(x, kernels, channel_axis=-1, spatial_ndim=1, method="fft", precision="float64")
    for b in range(2):
        for c in range(3):
            np.testing.assert_allclose(got[b, :, c], reference(x[b, :, c], kernels[c], 1, 1, "same", "reflect"),
                                       rtol=1e-9, atol=1e-9)


@pytest.mark.skipif(not compiled.available(), reason="OpenCV not installed")
def test_the_backends_agree_and_opencv_keeps_its_threads():
    import cv2

    rng = np.random.default_rng(3)
    x = rng.standard_normal((30000, 2)).astype(np.float32)
    response = rng.standard_normal(3000).astype(np.float32)
    threads = cv2.getNumThreads()
    plan = plan_axes((30000,), (3000,))[0]
    border, value = parse_pad_mode("reflect")
    weights = response.reshape(-1, 1, 1)
    ours = spectral.correlate_1d(x[None], np.empty((1, plan.out, 2), np.float32), plan, weights, border, value)
    assert cv2.getNumThreads() == threads
    plain = spectral._NumPy
    original = spectral._transforms
    try:
        spectral._transforms = plain
        theirs = spectral.correlate_1d(x[None], np.empty((1, plan.out, 2), np.float32), plan, weights, border, value)
    finally:
        spectral._transforms = original
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())


@pytest.mark.parametrize("span,size", [(1, 4096), (101, 4096), (1638, 4096), (1639, 8192), (88200, 1 << 18)])
def test_blocks_are_powers_of_two_of_a_few_spans(span, size):
    assert spectral.block_size(span) == size


def test_next_fast_length_is_the_smallest_even_5_smooth_length():
    def smooth(n):
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    for n in [1, 2, 7, 97, 1000, 4097, 88200 * 3, 10 ** 6 + 1]:
        got = spectral.next_fast_length(n)
        assert got >= n and got % 2 == 0 and smooth(got)
        assert not any(m % 2 == 0 and smooth(m) for m in range(max(n, 2), got))


def test_a_signal_fft_never_imports_scipy():
    code = ("import sys, numpy as np; from convcli import correlate; "
            "correlate(np.random.default_rng(0).standard_normal((50000, 2)), np.hanning(3000), channel_axis=-1, "
            "method='fft'); print(sorted(m for m in sys.modules if m.split('.')[0] == 'scipy'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("mode", ["zeros", "constant:-2", "reflect", "symmetric", "replicate", "circular"])
@pytest.mark.parametrize("stride", [1, 2])
def test_the_border_rule_is_applied_while_gathering_blocks(mode, stride, backend, monkeypatch):
    """correlate_1d on the unpadded signal (as the engine's 1-D route calls it); scratch is never trusted."""
    real = spectral.scratch_array

    def garbage(store, name, shape, dtype):
        array = real(store, name, shape, dtype)
        array[...] = np.nan  # whatever an earlier group left, or fresh memory, holds
        return array

    monkeypatch.setattr(spectral, "scratch_array", garbage)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 900, 2))
    kernel = rng.standard_normal(45)
    plan = plan_axes((900,), (45,), stride=stride, padding="same")[0]
    border, value = parse_pad_mode(mode)
    out = spectral.correlate_1d(x, np.empty((1, plan.out, 2)), plan, kernel.reshape(-1, 1, 1), border, value)
    if mode.startswith("constant"):
        expected = _constant_reference(x[0], kernel, stride, 1, -2.0)
    else:
        expected = reference(x[0], kernel, stride, 1, "same", {"replicate": "replicate"}.get(mode, mode))
    np.testing.assert_allclose(out[0], expected, rtol=1e-9, atol=1e-9 * np.abs(kernel).sum() * 3)
