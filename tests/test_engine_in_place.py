"""``overwrite_x=True``: a volume filtered in its own memory gives the result of the ordinary call.

Where the engine can (a separable kernel on a volume, stride and dilation 1,
a border OpenCV pads itself), the result is returned in the input's memory
and no second volume is allocated; everywhere else the flag changes nothing.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from convcli import correlate, convolve
from convcli.engine import compiled

pytestmark = pytest.mark.skipif(not compiled.available(), reason="OpenCV not installed")


def _gaussian(taps: int, sigma: float) -> np.ndarray:
    g = np.exp(-0.5 * ((np.arange(taps) - (taps - 1) / 2) / sigma) ** 2)
    g /= g.sum()
    return g[:, None, None] * g[None, :, None] * g[None, None, :]


def _anisotropic() -> np.ndarray:
    a, b, c = np.array([1.0, 3, 5, 2, 1]), np.array([0.5, 1, 2, 1, 0.5, 0.25]), np.array([2.0, 1, 1, 1, 1, 3, 1])
    return a[:, None, None] * b[None, :, None] * c[None, None, :]


def _volume(shape, dtype=np.float32, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("pad_mode", ["reflect", "symmetric", "replicate", "zeros"])
@pytest.mark.parametrize("shape, channel_axis", [((21, 17, 19), None), ((12, 15, 13, 3), -1), ((9, 30, 8, 1), -1)])
@pytest.mark.parametrize("kernel", ["gaussian", "anisotropic"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_in_place_equals_the_ordinary_call_and_reuses_the_input(pad_mode, shape, channel_axis, kernel, dtype):
    weights = _gaussian(7, 1.5) if kernel == "gaussian" else _anisotropic()
    x = _volume(shape, dtype)
    opts = dict(pad_mode=pad_mode, channel_axis=channel_axis, method="opencv")
    expected = correlate(x, weights, **opts)
    reference = correlate(x.astype(np.float64), weights, pad_mode=pad_mode, channel_axis=channel_axis,
                          method="direct")
    work = x.copy()
    got = correlate(work, weights, overwrite_x=True, **opts)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.shares_memory(got, work)  # filtered where the input was
    scale = float(np.abs(weights).sum() * np.abs(x).max())
    tol = 1e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got, expected, rtol=0, atol=tol * scale)
    np.testing.assert_allclose(got, reference, rtol=0, atol=tol * scale)


def test_convolve_in_place_flips_the_kernel():
    weights = _anisotropic()
    x = _volume((14, 16, 18))
    work = x.copy()
    got = convolve(work, weights, overwrite_x=True, method="opencv")
    assert np.shares_memory(got, work)
    expected = correlate(x.astype(np.float64), weights[::-1, ::-1, ::-1], method="direct")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * float(np.abs(weights).sum() * np.abs(x).max()))


@pytest.mark.parametrize("case", ["circular", "constant", "stride", "dilation", "valid", "laplacian", "image",
                                  "int16", "read-only", "direct", "batch"])
def test_where_the_engine_cannot_the_flag_changes_nothing(case):
    weights = _gaussian(5, 1.0)
    x = _volume((10, 12, 14))
    opts = dict(method="opencv")
    if case == "circular":
        opts["pad_mode"] = "circular"
    elif case == "constant":
        opts["pad_mode"] = "constant:2"
    elif case == "stride":
        opts["stride"] = 2
    elif case == "dilation":
        opts["dilation"] = (1, 2, 1)
    elif case == "valid":
        opts["padding"] = "valid"
    elif case == "laplacian":
        weights = np.zeros((3, 3, 3))
        weights[1, 1, :] = weights[1, :, 1] = weights[:, 1, 1] = 1.0
        weights[1, 1, 1] = -6.0
    elif case == "image":
        x, weights = x[0], weights[2]
    elif case == "int16":
        x = (x * 1000).astype(np.int16)
    elif case == "read-only":
        x.setflags(write=False)
    elif case == "direct":
        opts["method"] = "direct"
    elif case == "batch":
        x = np.stack([x, x[::-1]])
        opts["spatial_ndim"] = 3
    if case in ("circular", "constant", "stride", "dilation", "valid"):
        opts["method"] = "auto"
    copy = x.copy()
    expected = correlate(copy, weights, **opts)
    got = correlate(x, weights, overwrite_x=True, **opts)
    if case == "batch":  # several volumes: each one in place
        assert np.shares_memory(got, x)
    else:
        assert not np.shares_memory(got, x)
        np.testing.assert_array_equal(x, copy)  # left as it was
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * float(np.abs(copy).max()))


def test_in_place_allocates_no_second_volume():
    weights = _gaussian(9, 2.0)
    x = _volume((48, 64, 64))
    correlate(x.copy(), weights, method="opencv")  # OpenCV loaded and the pool started
    tracemalloc.start()
    try:
        correlate(x.copy(), weights, method="opencv")
        _, ordinary = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        work = x.copy()
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        correlate(work, weights, method="opencv", overwrite_x=True)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ordinary >= x.nbytes  # the ordinary call makes an output volume
    assert peak - base < x.nbytes / 4, (peak - base, x.nbytes)


def test_the_z_pass_in_many_blocks_of_columns_on_every_core(monkeypatch):
    monkeypatch.setattr(compiled, "Z_IN_PLACE_COLUMNS", 37)  # blocks that end mid-row and mid-pixel
    weights = _anisotropic()
    x = _volume((11, 13, 9, 3))
    work = x.copy()
    got = correlate(work, weights, channel_axis=-1, method="opencv", pad_mode="symmetric", overwrite_x=True)
    assert np.shares_memory(got, work)
    expected = correlate(x.astype(np.float64), weights, channel_axis=-1, pad_mode="symmetric", method="direct")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6 * float(np.abs(weights).sum() * np.abs(x).max()))
