"""The Toeplitz (BLAS) 1-D strategy held to numpy.correlate on a numpy.pad-ed signal, in bands and threads."""
from __future__ import annotations

import numpy as np
import pytest

from convcli import correlate
from convcli.engine import bands, toeplitz
from convcli.engine.geometry import AxisPlan
from oracle import axis_geometry, correlate_loops

NUMPY_PAD = {"zeros": "constant", "reflect": "reflect", "symmetric": "symmetric", "replicate": "edge",
             "circular": "wrap"}


def reference(x, taps, stride, dilation, padding, mode):
    """out[o] = sum_j taps[j] * xpad[o * stride + j * dilation], per channel, in float64 by numpy.correlate."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    before, out = axis_geometry(n, len(taps), stride, dilation, padding)
    span = dilation * (len(taps) - 1) + 1
    after = max(0, (out - 1) * stride + span - n - before)
    dilated = np.zeros(span)
    dilated[::dilation] = taps
    channels = x.reshape(n, -1)
    cols = [np.correlate(np.pad(c, (before, after), mode=NUMPY_PAD[mode]), dilated, "valid")[::stride][:out]
            for c in channels.T]
    return np.stack(cols, axis=-1).reshape((out,) + x.shape[1:])


@pytest.fixture
def small_bands(monkeypatch):
    """Bands of a few rows on threads even for tiny work: every band, edge and thread path runs."""
    monkeypatch.setattr(bands, "BAND_BYTES", 2048)
    monkeypatch.setattr(bands, "PARALLEL_WORK", 0)


@pytest.mark.parametrize("taps", [2, 5, 31, 33, 101, 257, 700])
@pytest.mark.parametrize("stride,dilation", [(1, 1), (3, 1), (1, 2), (2, 3)])
@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
def test_toeplitz_matches_numpy_correlate_across_row_and_band_edges(taps, stride, dilation, mode, small_bands):
    rng = np.random.default_rng(taps * 7 + stride)
    x = rng.standard_normal((1500, 2))
    kernel = rng.standard_normal(taps)
    got = correlate(x, kernel, channel_axis=-1, method="toeplitz", stride=stride, dilation=dilation,
                    pad_mode=mode, precision="float64")
    expected = reference(x, kernel, stride, dilation, "same", mode)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10 * np.abs(kernel).sum())


@pytest.mark.parametrize("padding", ["valid", "full", 7])
def test_toeplitz_reads_int16_audio_in_float32_as_the_loop_definition(padding, small_bands):
    rng = np.random.default_rng(3)
    x = rng.integers(-32768, 32767, size=(400, 2), dtype=np.int16)
    kernel = np.hanning(41) / np.hanning(41).sum()
    got = correlate(x, kernel, channel_axis=-1, method="toeplitz", padding=padding, pad_mode="symmetric")
    assert got.dtype == np.float32
    expected = np.stack([correlate_loops(x[:, c], kernel, (1,), (1,), padding, "symmetric") for c in range(2)], -1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=0.05)


def test_toeplitz_keeps_each_channels_own_kernel(small_bands):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 900, 2))  # batch of 3, channels last
    kernels = rng.standard_normal((2, 65))
    got = correlate(x, kernels, channel_axis=-1, spatial_ndim=1, method="toeplitz", precision="float64")
    for b in range(3):
        for c in range(2):
            np.testing.assert_allclose(got[b, :, c], reference(x[b, :, c], kernels[c], 1, 1, "same", "reflect"),
                                       rtol=1e-10, atol=1e-10)


def test_without_a_blas_thread_limit_the_bands_run_in_turn_and_agree(monkeypatch, small_bands):
    """No threadpoolctl (or a BLAS it cannot hold): one band after another, BLAS threading each product."""
    import contextlib

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2000, 2))
    kernel = rng.standard_normal(101)
    threaded = correlate(x, kernel, channel_axis=-1, method="toeplitz", precision="float64")

    @contextlib.contextmanager
    def unavailable():
        yield False

    monkeypatch.setattr(toeplitz, "blas_limited", unavailable)
    used = []
    real = bands.run_bands
    monkeypatch.setattr(bands, "PARALLEL_WORK", 1)
    monkeypatch.setattr(bands, "run_bands", lambda *a, **k: used.append(k["work"]) or real(*a, **k))
    alone = correlate(x, kernel, channel_axis=-1, method="toeplitz", precision="float64")
    assert used == [0.0]  # below PARALLEL_WORK: no band threads
    np.testing.assert_array_equal(alone, threaded)


def test_blas_threads_are_given_back_after_the_bands():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    x = np.random.default_rng(6).standard_normal((1 << 16, 2)).astype(np.float32)
    correlate(x, np.hanning(101), channel_axis=-1, method="toeplitz")
    after = [lib["num_threads"] for lib in threadpoolctl.threadpool_info() if lib["user_api"] == "blas"]
    assert after == before


@pytest.mark.parametrize("span,expected", [(1, 32), (11, 32), (101, 64), (301, 128), (3001, 256)])
def test_rows_are_about_half_a_span_wide_within_bounds(span, expected):
    plan = AxisPlan(length=10000, taps=span, stride=1, dilation=1, before=0, after=0, out=10000 - span + 1)
    assert toeplitz.row_outputs(plan) == expected
    assert toeplitz.row_width(plan, expected) == expected - 1 + span


def test_the_matrix_places_every_tap_at_its_stride_and_dilation():
    plan = AxisPlan(length=100, taps=3, stride=2, dilation=3, before=0, after=0, out=46)
    t = toeplitz.matrix(np.array([1.0, 2.0, 3.0]), plan, 4, np.float64)
    assert t.shape == (toeplitz.row_width(plan, 4), 4)
    for p in range(4):
        np.testing.assert_array_equal(np.flatnonzero(t[:, p]), [2 * p, 2 * p + 3, 2 * p + 6])
        np.testing.assert_array_equal(t[[2 * p, 2 * p + 3, 2 * p + 6], p], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("stride", [1, 2])
def test_scratch_left_by_earlier_bands_is_never_trusted(stride, small_bands, monkeypatch):
    """Every band thread reuses its scratch: filled with NaN before each use, the results must not change."""
    real = toeplitz.scratch_array

    def garbage(store, name, shape, dtype):
        array = real(store, name, shape, dtype)
        array[...] = np.nan
        return array

    monkeypatch.setattr(toeplitz, "scratch_array", garbage)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1003, 2))
    kernel = rng.standard_normal(77)
    got = correlate(x, kernel, channel_axis=-1, method="toeplitz", stride=stride, pad_mode="circular",
                    precision="float64")
    np.testing.assert_allclose(got, reference(x, kernel, stride, 1, "same", "circular"), rtol=1e-10, atol=1e-10)
