"""Rank filters (median, minimum, maximum, percentile, any rank) against their definition and scipy.ndimage.

The oracle is the definition itself: pad with numpy.pad by the border
rule, take every window of the dilated footprint, sort it with numpy and
keep sample r of every s-th window.  scipy.ndimage's rank filters are
held to the same results for every border mode (its names mapped as the
README's border table says).  OpenCV's paths are held to numpy's.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import assume, given, strategies as st
from numpy.lib.stride_tricks import sliding_window_view

from convcli.engine import plan_rank, rank_filter
from convcli.engine.selection import batcher_sort, network
from convcli.errors import ParameterError

NUMPY_MODES = {"reflect": "reflect", "symmetric": "symmetric", "replicate": "edge", "circular": "wrap",
               "zeros": "constant"}
SCIPY_MODES = {"reflect": "mirror", "symmetric": "reflect", "replicate": "nearest", "circular": "wrap",
               "zeros": "constant"}


def padding_pairs(shape, fshape, stride, padding, dilation):
    """Per axis (before, after): the README's geometry table, written out."""
    pairs = []
    for n, k, s, d in zip(shape, fshape, stride, dilation):
        span = d * (k - 1) + 1
        if padding == "same":
            out = -(-n // s)
            total = max((out - 1) * s + span - n, 0)
            pairs.append((total // 2, total - total // 2))
        elif padding == "valid":
            pairs.append((0, 0))
        elif padding == "full":
            pairs.append((span - 1, span - 1))
        else:
            pairs.append((padding, padding))
    return pairs


def literal_rank(x, footprint, rank, *, stride, padding, dilation, mode, value=0.0):
    """Sample ``rank`` of every window, sorted by numpy: the definition of a rank filter, NaN spreading."""
    nd = footprint.ndim
    pairs = padding_pairs(x.shape, footprint.shape, stride, padding, dilation)
    if mode == "zeros":
        padded = np.pad(x, pairs, mode="constant", constant_values=value)
    else:
        padded = np.pad(x, pairs, mode=NUMPY_MODES[mode])
    spans = [d * (k - 1) + 1 for k, d in zip(footprint.shape, dilation)]
    windows = sliding_window_view(padded, spans)
    windows = windows[(Ellipsis,) + tuple(slice(None, None, d) for d in dilation)]
    values = windows[(Ellipsis,) + (footprint,)] if nd else windows
    n = int(footprint.sum())
    order = rank + n if rank < 0 else rank
    ranked = np.sort(values, axis=-1)[..., order]
    if values.dtype.kind == "f":
        ranked = np.where(np.isnan(values).any(axis=-1), np.nan, ranked)
    return ranked[tuple(slice(None, None, s) for s in stride)].astype(x.dtype)


@st.composite
def rank_cases(draw):
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, {1: 14, 2: 9, 3: 6}[nd]), min_size=nd, max_size=nd)))
    fshape = tuple(draw(st.lists(st.integers(1, 4), min_size=nd, max_size=nd)))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    footprint = rng.random(fshape) < draw(st.sampled_from([1.0, 0.6]))
    footprint.flat[rng.integers(footprint.size)] = True
    n = int(footprint.sum())
    rank = draw(st.sampled_from([0, -1, n // 2, int(rng.integers(-n, n))]))
    dtype = draw(st.sampled_from(["float32", "float64", "uint8", "int16", "bool"]))
    x = rng.random(shape) < 0.5 if dtype == "bool" else (rng.standard_normal(shape) * 40).astype(dtype)
    geometry = dict(
        stride=tuple(draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd))),
        dilation=tuple(draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd))),
        padding=draw(st.sampled_from(["same", "valid", "full", 0, 1, 3])),
        mode=draw(st.sampled_from(sorted(NUMPY_MODES))),
    )
    return x, footprint, rank, geometry


@given(rank_cases(), st.sampled_from(["auto", "direct"]))
def test_rank_filter_is_its_definition_for_every_geometry(case, method):
    x, footprint, rank, g = case
    try:
        got = rank_filter(x, footprint, rank, stride=g["stride"], padding=g["padding"], pad_mode=g["mode"],
                          dilation=g["dilation"], method=method)
    except ParameterError as exc:
        assume(exc.subject != "padding")  # no output samples: the geometry is refused, as correlate does
        raise
    expected = literal_rank(x, footprint, rank, stride=g["stride"], padding=g["padding"], dilation=g["dilation"],
                            mode=g["mode"])
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, expected)


@given(rank_cases())
def test_rank_filter_equals_scipy_in_every_border_mode(case):
    x, footprint, rank, g = case
    if x.dtype == bool:
        x = x.astype(np.uint8)
    # scipy centres an even window one sample later than the "same" rule (TensorFlow's): origin -1 there.
    origin = [(k - 1) // 2 - k // 2 for k in footprint.shape]
    # scipy's fast 1-D path ignores the holes of a footprint (scipy 1.17): ask it for a 1xN image instead.
    expected = ndi.rank_filter(x[None], rank, footprint=footprint[None], mode=SCIPY_MODES[g["mode"]],
                               origin=[0] + origin)[0]
    np.testing.assert_array_equal(rank_filter(x, footprint, rank, pad_mode=g["mode"]), expected)


@pytest.mark.parametrize("mode", sorted(SCIPY_MODES))
def test_median_minimum_maximum_and_percentile_are_scipys(mode):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (23, 31)).astype(np.uint8)
    box = np.ones((5, 5), dtype=bool)
    scipy_mode = SCIPY_MODES[mode]
    np.testing.assert_array_equal(rank_filter(x, box, 12, pad_mode=mode), ndi.median_filter(x, 5, mode=scipy_mode))
    np.testing.assert_array_equal(rank_filter(x, box, 0, pad_mode=mode), ndi.minimum_filter(x, 5, mode=scipy_mode))
    np.testing.assert_array_equal(rank_filter(x, box, -1, pad_mode=mode), ndi.maximum_filter(x, 5, mode=scipy_mode))
    np.testing.assert_array_equal(rank_filter(x, box, int(25 * 90 / 100), pad_mode=mode),
                                  ndi.percentile_filter(x, 90, 5, mode=scipy_mode))


def test_a_constant_border_pads_with_its_value():
    x = np.array([[5.0, 6, 7], [8, 9, 10], [11, 12, 13]])
    got = rank_filter(x, np.ones((3, 3), bool), 0, pad_mode="constant:2.5")
    np.testing.assert_array_equal(got, ndi.minimum_filter(x, 3, mode="constant", cval=2.5))


def test_a_border_constant_outside_the_integer_type_is_ranked_as_it_is():
    """A constant of 0.5 around uint8 samples is 0.5, not a truncated 0: the result widens to float."""
    x = np.full((4, 4), 9, dtype=np.uint8)
    got = rank_filter(x, np.ones((3, 3), bool), 0, pad_mode="constant:0.5")
    assert got.dtype == np.float32
    assert got[0, 0] == 0.5 and got[1, 1] == 9


# --------------------------------------------------------------------------- the algorithms agree
IMAGE_TYPES = ["uint8", "uint16", "int16", "float32", "float64", "bool"]


def _image(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype.startswith("float"):
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, shape).astype(dtype)


@pytest.mark.parametrize("dtype", IMAGE_TYPES)
@pytest.mark.parametrize("channels", [None, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("size", [3, 5, 7])
def test_opencv_median_is_numpys(dtype, channels, size):
    shape = (37, 29) if channels is None else (37, 29, channels)
    x = _image(dtype, shape, seed=size)
    box = np.ones((size, size), bool)
    plan = plan_rank(x.shape, box, size * size // 2, channel_axis=None if channels is None else -1, x_dtype=x.dtype)
    small = dtype in ("uint8", "bool") or size <= 5 and dtype != "float64"
    assert (plan.algorithm == "medianBlur") == small
    for mode in ("symmetric", "replicate"):
        kwargs = dict(channel_axis=None if channels is None else -1, pad_mode=mode, stride=(2, 1))
        np.testing.assert_array_equal(rank_filter(x, box, size * size // 2, **kwargs),
                                      rank_filter(x, box, size * size // 2, method="direct", **kwargs))


@pytest.mark.parametrize("stride", [1, 3])
def test_medianblur_in_bands_on_a_large_image_is_numpys(stride):
    """Large enough to run in bands of rows on every core, each with its halo."""
    x = _image("uint8", (610, 900), seed=9)
    box = np.ones((7, 7), bool)
    np.testing.assert_array_equal(rank_filter(x, box, 24, pad_mode="replicate", stride=stride),
                                  rank_filter(x, box, 24, pad_mode="replicate", stride=stride, method="direct"))


@pytest.mark.parametrize("dtype", IMAGE_TYPES)
@pytest.mark.parametrize("shape", ["box", "disk", "holes"])
@pytest.mark.parametrize("mode", ["reflect", "circular", "constant:-3"])
def test_opencv_erode_and_dilate_are_numpys(dtype, shape, mode):
    x = _image(dtype, (41, 33, 3), seed=len(shape))
    footprint = {"box": np.ones((4, 5), bool), "disk": ndi.generate_binary_structure(2, 1),
                 "holes": np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 0, 1, 1]], bool)}[shape]
    for rank in (0, -1):
        plan = plan_rank(x.shape, footprint, rank, channel_axis=-1, pad_mode=mode, x_dtype=x.dtype)
        if plan.work_dtype == x.dtype:
            assert plan.method == "opencv"
        for geometry in (dict(), dict(stride=(3, 2), padding="full"), dict(padding=(1, 0))):
            np.testing.assert_array_equal(
                rank_filter(x, footprint, rank, channel_axis=-1, pad_mode=mode, **geometry),
                rank_filter(x, footprint, rank, channel_axis=-1, pad_mode=mode, method="direct", **geometry))


@pytest.mark.parametrize("rank", [0, -1])
@pytest.mark.parametrize("geometry", [dict(), dict(stride=2, padding="valid"), dict(dilation=(2, 1, 1))])
def test_a_volume_box_by_planes_is_numpys(rank, geometry):
    x = _image("float32", (19, 23, 17), seed=4)
    box = np.ones((3, 5, 4), bool)
    assert plan_rank(x.shape, box, rank, **geometry).algorithm == "planes"
    np.testing.assert_array_equal(rank_filter(x, box, rank, **geometry),
                                  rank_filter(x, box, rank, method="direct", **geometry))


def test_partial_sort_and_network_agree_on_a_large_window():
    x = _image("float32", (40, 3000), seed=5)
    footprint = np.ones((1, 301), bool)
    assert plan_rank(x.shape, footprint, 150, x_dtype=x.dtype).algorithm == "partition"
    np.testing.assert_array_equal(rank_filter(x, footprint, 150),
                                  ndi.median_filter(x, footprint=footprint, mode="mirror"))


@pytest.mark.parametrize("n", range(1, 12))
def test_networks_sort_and_select_every_zero_one_input(n):
    """The 0-1 principle: a comparator network that sorts every 0/1 input sorts every input."""
    patterns = (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1
    wires = [patterns[:, i].copy() for i in range(n)]
    for a, b in batcher_sort(n):
        wires[a], wires[b] = np.minimum(wires[a], wires[b]), np.maximum(wires[a], wires[b])
    assert np.all(np.diff(np.stack(wires, 1), axis=1) >= 0)
    for rank in range(n):
        selected = [patterns[:, i].copy() for i in range(n)]
        for a, b, low, high in network(n, rank):
            lo, hi = np.minimum(selected[a], selected[b]), np.maximum(selected[a], selected[b])
            selected[a], selected[b] = (lo if low else selected[a]), (hi if high else selected[b])
        np.testing.assert_array_equal(selected[rank], np.sort(patterns, axis=1)[:, rank])


# --------------------------------------------------------------------------- NaN, types, layout, errors
@pytest.mark.parametrize("method", ["auto", "direct"])
@pytest.mark.parametrize("rank", [0, 4, -1])
def test_nan_spreads_over_exactly_the_windows_that_hold_it(method, rank):
    x = _image("float32", (30, 40), seed=6)
    x[7, 9] = np.nan
    x[0, 39] = np.nan
    x[20, 20] = np.inf
    box = np.ones((3, 3), bool)
    got = rank_filter(x, box, rank, method=method)
    windows_with_nan = ndi.maximum_filter(np.isnan(x).astype(np.uint8), 3, mode="mirror").astype(bool)
    np.testing.assert_array_equal(np.isnan(got), windows_with_nan)
    clean = np.where(np.isnan(x), 0, x)
    np.testing.assert_array_equal(got[~windows_with_nan], rank_filter(clean, box, rank)[~windows_with_nan])


def test_channels_batches_and_channels_first_are_filtered_apart():
    x = _image("float32", (2, 3, 11, 13), seed=7)  # N, C, H, W
    box = np.ones((3, 3), bool)
    got = rank_filter(x, box, 4, channel_axis=1)
    for n in range(2):
        for c in range(3):
            np.testing.assert_array_equal(got[n, c], rank_filter(x[n, c], box, 4))


def test_precision_gives_a_float_result_of_the_same_values():
    x = _image("uint8", (9, 9), seed=8)
    got = rank_filter(x, np.ones((3, 3), bool), 4, precision="float64")
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, rank_filter(x, np.ones((3, 3), bool), 4))


@pytest.mark.parametrize("args, subject", [
    (dict(footprint=np.zeros((3, 3), bool), rank=0), "footprint"),
    (dict(footprint=np.ones((3, 3)) * 0.5, rank=0), "footprint"),
    (dict(footprint=np.ones((3, 3), bool), rank=9), "rank"),
    (dict(footprint=np.ones((3, 3), bool), rank=-10), "rank"),
    (dict(footprint=np.ones((3, 3), bool), rank=1.5), "rank"),
    (dict(footprint=np.ones((3, 3), bool), rank=0, method="fft"), "method"),
    (dict(footprint=np.ones((3, 3), bool), rank=2, method="opencv", dilation=2), "method"),
    (dict(footprint=np.ones((3, 3), bool), rank=0, pad_mode="mirror-ish"), "pad_mode"),
    (dict(footprint=np.ones((9, 9), bool), rank=0, padding="valid"), "padding"),
])
def test_bad_arguments_name_the_parameter(args, subject):
    with pytest.raises(ParameterError) as caught:
        rank_filter(np.zeros((5, 5), np.float32), **args)
    assert caught.value.subject == subject
