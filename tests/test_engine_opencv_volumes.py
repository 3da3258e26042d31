"""OpenCV's plane-by-plane volume path held to the literal loop definition and to direct.

Every way a z slice of the kernel reaches an output plane is exercised: an
OpenCV call written straight into the plane, a later OpenCV call added from
scratch, a centred single tap added in place (weight 1, -1, or any other,
which OpenCV scales and adds in one pass), an off-centre single tap (a
shifted copy), z taps that land outside the volume (zeros border), and
planes handed out to the cores in small tasks.
"""
from __future__ import annotations

import numpy as np
import pytest

from convcli import correlate
from convcli import parallel
from convcli.engine import compiled, make_plan
from oracle import correlate_loops

pytestmark = pytest.mark.skipif(not compiled.available(), reason="OpenCV not installed")

MODES = [("reflect", "reflect"), ("symmetric", "symmetric"), ("replicate", "replicate"), ("zeros", "zeros")]


def _laplacian() -> np.ndarray:
    lap = np.zeros((3, 3, 3))
    lap[1, 1, :] = lap[1, :, 1] = lap[:, 1, 1] = 1.0
    lap[1, 1, 1] = -6.0
    return lap


def _kernels() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(21)
    lap = _laplacian()
    scaled = lap.copy()
    scaled[0, 1, 1], scaled[2, 1, 1] = 0.5, -1.0  # centred z taps: scaled add and subtraction
    shifted = np.zeros((3, 3, 3))
    shifted[0, 0, 2] = 2.0  # a single off-centre tap: a shifted copy
    shifted[1] = rng.normal(size=(3, 3))
    shifted[2, 1, 1] = -1.5
    singles = np.zeros((3, 1, 1))
    singles[:, 0, 0] = (1.0, -2.0, 1.0)  # no OpenCV call at all: the first slice is a copy
    scaled_first = np.zeros((2, 3, 3))
    scaled_first[0, 1, 1] = 3.0  # the first slice writes the plane as a scaled copy
    scaled_first[1, 2, 0] = -0.25
    return {"laplacian": lap, "scaled": scaled, "shifted": shifted, "singles": singles,
            "scaled-first": scaled_first, "dense": rng.normal(size=(3, 2, 3)),
            "gapped": np.stack([rng.normal(size=(3, 3)), np.zeros((3, 3)), rng.normal(size=(3, 3))])}


@pytest.fixture
def small_tasks(monkeypatch):
    """Tasks of two planes on two threads even on a one-core machine, so every hand-off runs."""
    monkeypatch.setattr(compiled, "PLANE_CHUNK", 2)
    monkeypatch.setattr(parallel, "thread_count", lambda: 2)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m[0])
@pytest.mark.parametrize("name", list(_kernels()))
def test_every_slice_kind_matches_the_loop_definition(name, mode, small_tasks):
    spec, oracle_mode = mode
    kernel = _kernels()[name]
    x = np.random.default_rng(3).normal(size=(11, 7, 9))
    for stride, dilation in (((1, 1, 1), (1, 1, 1)), ((2, 1, 1), (1, 1, 1)), ((1, 1, 1), (3, 1, 1)),
                             ((3, 1, 1), (2, 1, 1))):
        got = correlate(x, kernel, pad_mode=spec, stride=stride, dilation=dilation, method="opencv")
        expected = correlate_loops(x, kernel, stride, dilation, "same", oracle_mode, 0.0)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10, err_msg=f"{stride} {dilation}")
    if spec == "zeros" and kernel.shape[1] % 2 and kernel.shape[2] % 2:
        # z padding wider than the kernel: the first and last output planes see no sample
        pad = (5, kernel.shape[1] // 2, kernel.shape[2] // 2)
        got = correlate(x, kernel, pad_mode=spec, padding=pad, method="opencv")
        expected = correlate_loops(x, kernel, (1, 1, 1), (1, 1, 1), pad, oracle_mode, 0.0)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
        assert not got[0].any()


@pytest.mark.parametrize("name", list(_kernels()))
def test_an_out_array_that_is_not_contiguous_is_filled_through_scratch(name, small_tasks):
    kernel = _kernels()[name]
    x = np.random.default_rng(5).normal(size=(10, 7, 9))
    room = np.full((10, 7, 18), np.nan)
    out = room[:, :, ::2]  # every other column: OpenCV cannot write it in place
    assert correlate(x, kernel, pad_mode="reflect", method="opencv", out=out) is out
    expected = correlate_loops(x, kernel, (1, 1, 1), (1, 1, 1), "same", "reflect", 0.0)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
    assert np.isnan(room[:, :, 1::2]).all()


@pytest.mark.parametrize("name", ["laplacian", "scaled", "shifted", "dense"])
def test_float32_volumes_with_channels_and_batches_agree_with_direct(name, small_tasks):
    kernel = _kernels()[name]
    rng = np.random.default_rng(8)
    volumes = [(rng.random((9, 8, 10, 3), dtype=np.float32), -1), (rng.random((2, 9, 8, 10), dtype=np.float32), None)]
    for x, axis in volumes:
        opts = dict(channel_axis=axis, spatial_ndim=3, pad_mode="symmetric")
        got = correlate(x, kernel, method="opencv", **opts)
        assert got.dtype == np.float32 and got.shape == x.shape
        expected = correlate(x.astype(np.float64), kernel, method="direct", **opts)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(kernel).sum())


def test_a_non_finite_sample_stays_in_the_laplacians_footprint(small_tasks):
    x = np.zeros((10, 9, 8), dtype=np.float32)
    x[4, 4, 4] = np.nan
    got = correlate(x, _laplacian(), method="opencv", pad_mode="zeros")
    expected = correlate(x, _laplacian(), method="direct", pad_mode="zeros")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(got).sum() == 7


def test_auto_runs_the_3d_laplacian_plane_by_plane_on_a_large_volume():
    plan = make_plan((256, 256, 256), _laplacian(), x_dtype=np.float32)
    assert plan.method == "opencv"
    # the model's estimate stays within 2x of what the path measures (about 25-30 ms on the benchmark machine)
    assert 12.5e6 < plan.choice.costs["opencv"] < 60e6


@pytest.mark.parametrize("shape,axis", [((6, 1, 5), None), ((6, 5, 1), None), ((6, 1, 5, 3), -1), ((6, 5, 1, 3), -1),
                                        ((6, 1, 1, 3), -1)])
def test_planes_one_sample_high_or_wide_agree_with_direct(shape, axis, small_tasks):
    rng = np.random.default_rng(len(shape) * 10 + shape[1])
    x = rng.normal(size=shape)
    kernels = [rng.normal(size=(3, 1, 1)), np.array([1.0, -1.0]).reshape(2, 1, 1)]
    kernels += [rng.normal(size=(3, 1, 3))] if shape[2] > 1 else []
    kernels += [rng.normal(size=(3, 3, 1))] if shape[1] > 1 else []
    for kernel in kernels:
        opts = dict(channel_axis=axis, spatial_ndim=3, pad_mode="replicate")
        got = correlate(x, kernel, method="opencv", **opts)
        np.testing.assert_allclose(got, correlate(x, kernel, method="direct", **opts), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("planes", [20, 31, 90])
def test_a_separable_chunk_with_its_z_halo_agrees_with_direct(planes, monkeypatch):
    # A chunk of a larger volume: valid on z (its halo read), padded on y and x.  Its last planes
    # (within the kernel's span of the end) take the z pass's scratch band, not numpy's taps.
    monkeypatch.setattr(compiled, "Z_COLUMNS", 64)  # several calls per band, the last one narrower
    rng = np.random.default_rng(planes)
    x = rng.standard_normal((planes, 9, 11)).astype(np.float64)
    g = np.exp(-0.5 * (np.arange(-3, 4) / 1.5) ** 2)
    kernel = g[:, None, None] * g[None, :, None] * g[None, None, :]
    args = dict(padding=((0, 0), (3, 3), (3, 3)), pad_mode="reflect")
    got = correlate(x, kernel, method="opencv", **args)
    assert make_plan(x.shape, kernel, method="opencv", **args).method == "opencv"
    want = correlate(x, kernel, method="direct", **args)
    assert got.shape == want.shape == (planes - 6, 9, 11)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12 * np.abs(want).max())
