"""The engine against the literal loop definition, for every geometry, border mode and method."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage

from convcli import convolve, correlate
from convcli.engine import AxisPlan, make_plan, plan_axes
from oracle import axis_geometry, correlate_loops

SHAPES = {1: (11,), 2: (7, 6), 3: (5, 4, 6)}
KERNELS = {1: (4,), 2: (3, 2), 3: (2, 3, 2)}
MODES = [("zeros", "zeros", 0.0), ("constant:2.5", "constant", 2.5), ("reflect", "reflect", 0.0),
         ("symmetric", "symmetric", 0.0), ("replicate", "replicate", 0.0), ("circular", "circular", 0.0)]
PADDINGS = ["same", "valid", "full", 1, "per-axis"]
GEOMETRIES = [(1, 1), (2, 1), (1, 2), (3, 2), ("per-axis", "per-axis")]


def _per_axis(value, nd, pattern):
    return tuple(pattern[a % len(pattern)] for a in range(nd)) if value == "per-axis" else (value,) * nd



@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("padding", PADDINGS, ids=str)
@pytest.mark.parametrize("mode", MODES, ids=lambda m: m[0])
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=str)
def test_every_method_matches_the_loop_definition(nd, padding, mode, geometry):
    spec, oracle_mode, cval = mode
    stride = _per_axis(geometry[0], nd, (2, 1, 3))
    dilation = _per_axis(geometry[1], nd, (1, 2, 1))
    pad = _per_axis(padding, nd, (0, 2, 1)) if padding == "per-axis" else padding
    rng = np.random.default_rng(nd * 1000 + PADDINGS.index(padding) * 100 + MODES.index(mode) * 10 + GEOMETRIES.index(geometry))
    x = rng.normal(size=SHAPES[nd])
    general = rng.normal(size=KERNELS[nd])
    rank1 = np.ones(())
    for k in KERNELS[nd]:
        rank1 = np.multiply.outer(rank1, rng.normal(size=k))
    oracle_pad = pad if isinstance(pad, str) else (pad if isinstance(pad, tuple) else (pad,) * nd)
    lengths = [axis_geometry(SHAPES[nd][a], KERNELS[nd][a], stride[a], dilation[a],
                             oracle_pad if isinstance(oracle_pad, str) else oracle_pad[a])[1] for a in range(nd)]
    if min(lengths) < 1:
        with pytest.raises(ValueError, match="no output samples"):
            correlate(x, general, stride=stride, dilation=dilation, padding=pad, pad_mode=spec)
        return
    for kernel, methods in ((general, ("direct", "fft")), (rank1, ("direct", "separable", "fft"))):
        expected = correlate_loops(x, kernel, stride, dilation, oracle_pad, oracle_mode, cval)
        for method in methods:
            got = correlate(x, kernel, stride=stride, dilation=dilation, padding=pad, pad_mode=spec, method=method)
            assert got.shape == expected.shape, method
            np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9, err_msg=method)


@pytest.mark.parametrize("mode", ["reflect", "symmetric", "replicate", "circular", "zeros"])
def test_padding_wider_than_the_input_repeats_the_rule(mode):
    x = np.array([1.0, 2.0, 3.0])
    kernel = np.arange(1.0, 10.0)  # span 9: pads 4 on each side of a 3-sample signal
    expected = correlate_loops(x, kernel, (1,), (1,), "full", mode)
    got = correlate(x, kernel, padding="full", pad_mode=mode, precision="float64")
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_a_single_sample_is_extended_by_itself_in_every_mirror_mode():
    for mode in ("reflect", "symmetric", "replicate", "circular"):
        got = correlate(np.array([5.0]), np.ones(5), padding="same", pad_mode=mode)
        assert got.tolist() == [25.0], mode


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_depthwise_kernels_give_each_channel_its_own_weights(nd):
    rng = np.random.default_rng(nd)
    x = rng.normal(size=SHAPES[nd] + (3,))
    kernels = rng.normal(size=(3,) + KERNELS[nd])
    got = correlate(x, kernels, channel_axis=-1, stride=2, padding="same", pad_mode="symmetric")
    for c in range(3):
        expected = correlate_loops(x[..., c], kernels[c], (2,) * nd, (1,) * nd, "same", "symmetric")
        np.testing.assert_allclose(got[..., c], expected, rtol=1e-9, atol=1e-12)


def test_shared_kernel_filters_every_channel_and_batch_axes_alike():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 3, 6, 5))  # batch, channel, rows, columns
    kernel = rng.normal(size=(3, 3))
    with pytest.raises(ValueError, match="pass spatial_ndim"):  # (3, 3) could also be 3 channels x 3 taps
        correlate(x, kernel, channel_axis=1)
    got = correlate(x, kernel, channel_axis=1, pad_mode="replicate", spatial_ndim=2)
    for b, c in itertools.product(range(2), range(3)):
        expected = correlate_loops(x[b, c], kernel, (1, 1), (1, 1), "same", "replicate")
        np.testing.assert_allclose(got[b, c], expected, rtol=1e-9, atol=1e-12)


def test_depthwise_with_batch_axes_needs_and_honours_spatial_ndim():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 6, 5, 4))  # N, H, W, C as a CNN holds it
    kernels = rng.normal(size=(4, 3, 3))
    got = correlate(x, kernels, channel_axis=-1, spatial_ndim=2, padding="same", pad_mode="zeros", stride=2)
    for n, c in itertools.product(range(2), range(4)):
        expected = correlate_loops(x[n, ..., c], kernels[c], (2, 2), (1, 1), "same", "zeros")
        np.testing.assert_allclose(got[n, ..., c], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize(
    "ours, scipys", [("zeros", "constant"), ("reflect", "mirror"), ("symmetric", "reflect"),
                     ("replicate", "nearest"), ("circular", "wrap")],
)
def test_agrees_with_scipy_ndimage_where_conventions_meet(nd, ours, scipys):
    rng = np.random.default_rng(11)
    x = rng.normal(size=(9, 8, 7)[:nd])
    kernel = rng.normal(size=(3, 5, 3)[:nd])  # odd sizes: scipy centres them as 'same' does
    expected = ndimage.correlate(x, kernel, mode=scipys)
    for method in ("direct", "fft"):
        np.testing.assert_allclose(correlate(x, kernel, pad_mode=ours, method=method), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(convolve(x, kernel, pad_mode=ours), ndimage.convolve(x, kernel, mode=scipys), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n", range(1, 13))
@pytest.mark.parametrize("k, s, d", [(1, 1, 1), (3, 1, 1), (4, 2, 1), (3, 2, 2), (5, 3, 1), (2, 4, 3)])
@pytest.mark.parametrize("padding", ["same", "valid", "full", 0, 2])
def test_output_length_follows_pytorch_and_tensorflow(n, k, s, d, padding):
    span = d * (k - 1) + 1
    if padding == "same":
        expected = -(-n // s)
    else:
        p = {"valid": 0, "full": span - 1}.get(padding, padding)
        expected = (n + 2 * p - span) // s + 1
    if expected < 1:
        with pytest.raises(ValueError, match="no output samples"):
            make_plan((n,), np.ones(k), stride=s, dilation=d, padding=padding)
        return
    plan = make_plan((n,), np.ones(k), stride=s, dilation=d, padding=padding)
    assert plan.output_shape == (expected,)
    assert axis_geometry(n, k, s, d, padding) == (plan.axes[0].before, expected)


def test_same_padding_splits_odd_totals_with_the_extra_sample_after():
    plan = make_plan((10,), np.ones(4), padding="same")  # total 3
    assert plan.padding() == ((1, 2),)
    plan = make_plan((7,), np.ones(3), padding="same", stride=2)  # out 4, total max(6+3-7,0)=2
    assert plan.padding() == ((1, 1),) and plan.output_shape == (4,)


def test_an_axis_plan_knows_its_padded_length_its_valid_form_and_the_whole_axis():
    p = make_plan((10,), np.ones(4), stride=2, dilation=2, padding="same").axes[0]
    assert p.padded == p.before + 10 + p.after
    # the valid correlation of the padded axis, with the same taps, stride, dilation and outputs
    assert p.valid() == plan_axes((p.padded,), (4,), stride=2, dilation=2, padding="valid")[0]
    assert p.valid().out == p.out and p.valid().padded == p.padded
    assert AxisPlan.whole(7) == plan_axes((7,), (1,), padding="valid")[0] == AxisPlan(7, 1, 1, 1, 0, 0, 7)


def test_integer_input_never_wraps_and_float64_is_kept():
    x = np.full((4, 4), 250, dtype=np.uint8)
    got = correlate(x, np.ones((3, 3)))
    assert got.dtype == np.float32 and np.all(got == 2250)
    assert correlate(np.ones(5), np.ones(3)).dtype == np.float64
    assert correlate(np.ones(5, np.float32), np.ones(3), precision="float64").dtype == np.float64
    assert correlate(np.ones(5), np.ones(3), precision="float32").dtype == np.float32
