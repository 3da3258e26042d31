"""Properties every correlation must have, checked by hypothesis on small random inputs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from convcli import convolve, correlate
from convcli.engine import choose_method, make_plan
from convcli.engine.strategies import rank1_factors
from oracle import axis_geometry

finite = st.floats(-100, 100, allow_nan=False, width=64)
MODES = ["zeros", "reflect", "symmetric", "replicate", "circular", "constant:1.5"]


@st.composite
def problems(draw, max_side=7, valid=True):
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(nd))
    kshape = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    x = draw(arrays(np.float64, shape, elements=finite))
    kernel = draw(arrays(np.float64, kshape, elements=finite))
    geometry = {
        "stride": tuple(draw(st.integers(1, 3)) for _ in range(nd)),
        "dilation": tuple(draw(st.integers(1, 2)) for _ in range(nd)),
        "padding": draw(st.sampled_from(["same", "full", 1, 2])),
        "pad_mode": draw(st.sampled_from(MODES)),
    }
    if valid:
        lengths = [axis_geometry(n, k, s, d, geometry["padding"])[1]
                   for n, k, s, d in zip(shape, kshape, geometry["stride"], geometry["dilation"])]
        assume(min(lengths) >= 1)
    return x, kernel, geometry


def _close(a, b, scale):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * max(scale, 1.0))


@given(problems(), st.floats(-3, 3), st.floats(-3, 3))
def test_linearity(problem, a, b):
    x, kernel, geometry = problem
    y = np.roll(x[::-1], 1) if x.ndim == 1 else np.flip(x)
    geometry["pad_mode"] = geometry["pad_mode"].replace("constant:1.5", "zeros")  # constants are affine, not linear
    left = correlate(a * x + b * y, kernel, **geometry)
    right = a * correlate(x, kernel, **geometry) + b * correlate(y, kernel, **geometry)
    _close(left, right, np.abs(x).max() * np.abs(kernel).sum() * 6)


@given(problems(), st.integers(-5, 5))
def test_shift_equivariance_with_circular_borders(problem, shift):
    x, kernel, geometry = problem
    geometry.update(stride=1, pad_mode="circular", padding="same")
    axes = tuple(range(x.ndim))
    shifts = (shift,) * x.ndim
    _close(correlate(np.roll(x, shifts, axes), kernel, **geometry), np.roll(correlate(x, kernel, **geometry), shifts, axes),
           np.abs(x).max() * np.abs(kernel).sum())


@given(problems())
def test_identity_kernel_returns_the_input(problem):
    x, _, geometry = problem
    kernel = np.zeros((3,) * x.ndim)
    kernel[(1,) * x.ndim] = 1.0
    for method in ("direct", "separable", "fft"):
        _close(correlate(x, kernel, pad_mode=geometry["pad_mode"], method=method), x, np.abs(x).max())


@given(problems(), st.data())
def test_separable_equals_direct_for_rank_one_kernels(problem, data):
    x, _, geometry = problem
    factors = [data.draw(arrays(np.float64, data.draw(st.integers(1, 4)), elements=finite)) for _ in range(x.ndim)]
    kernel = factors[0]
    for f in factors[1:]:
        kernel = np.multiply.outer(kernel, f)
    assume(min(axis_geometry(n, k, s, d, geometry["padding"])[1]
               for n, k, s, d in zip(x.shape, kernel.shape, geometry["stride"], geometry["dilation"])) >= 1)
    if x.ndim > 1 and np.abs(kernel).max() > 0:
        assert rank1_factors(kernel) is not None
    method = "separable" if rank1_factors(kernel) is not None or x.ndim == 1 else "direct"
    _close(correlate(x, kernel, method=method, **geometry), correlate(x, kernel, method="direct", **geometry),
           np.abs(x).max() * np.abs(kernel).sum())


@given(problems())
def test_fft_equals_direct(problem):
    x, kernel, geometry = problem
    expected = correlate(x, kernel, method="direct", **geometry)
    _close(correlate(x, kernel, method="fft", **geometry), expected, np.abs(x).max() * np.abs(kernel).sum() * 10)


@given(problems())
def test_convolve_is_correlate_with_the_flipped_kernel(problem):
    x, kernel, geometry = problem
    expected = correlate(x, np.flip(kernel), **geometry)
    _close(convolve(x, kernel, **geometry), expected, 1.0)


@given(problems(valid=False))
def test_output_shape_is_the_formula_for_every_geometry(problem):
    x, kernel, geometry = problem
    lengths = [axis_geometry(n, k, s, d, geometry["padding"])[1]
               for n, k, s, d in zip(x.shape, kernel.shape, geometry["stride"], geometry["dilation"])]
    if min(lengths) < 1:
        with pytest.raises(ValueError):
            correlate(x, kernel, **geometry)
    else:
        assert correlate(x, kernel, **geometry).shape == tuple(lengths)


@given(problems())
def test_stride_and_dilation_decompose(problem):
    # correlate(x, k, s, d) == correlate(x, k dilated with zeros)[::s] on the same padded grid.
    x, kernel, geometry = problem
    geometry["padding"] = "full"
    stride, dilation = geometry.pop("stride"), geometry.pop("dilation")
    dilated = np.zeros([d * (k - 1) + 1 for k, d in zip(kernel.shape, dilation)])
    dilated[tuple(slice(None, None, d) for d in dilation)] = kernel
    full = correlate(x, dilated, **geometry)
    _close(correlate(x, kernel, stride=stride, dilation=dilation, **geometry),
           full[tuple(slice(None, None, s) for s in stride)], np.abs(x).max() * np.abs(kernel).sum())


def test_auto_never_picks_fft_for_non_finite_input_and_keeps_nan_local():
    x = np.zeros((64, 64))
    x[10, 10] = np.nan
    kernel = np.random.default_rng(3).uniform(0.5, 1.5, (15, 15))  # not separable: FFT is cheapest once loaded
    loaded = frozenset({"scipy.fft"})
    assert choose_method(1, kernel[None], make_plan(x.shape, kernel).axes, imported=loaded).method == "fft"
    got = correlate(x, kernel, pad_mode="zeros")
    assert np.isnan(got).sum() == 15 * 15 and np.isnan(got[3:18, 3:18]).all()


def test_choice_is_separable_for_large_rank_one_kernels_and_direct_for_tiny_ones():
    g = np.exp(-np.linspace(-3, 3, 13) ** 2)
    big = np.outer(g, g)
    choice = choose_method(1, big[None], make_plan((200, 200), big).axes, opencv=False)
    assert choice.separable and choice.method == "separable"
    laplacian = np.array([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])
    assert choose_method(1, laplacian[None], make_plan((200, 200), laplacian).axes, opencv=False).method == "direct"


def test_forced_separable_on_a_non_separable_kernel_is_refused():
    with pytest.raises(ValueError, match="not separable"):
        correlate(np.ones((5, 5)), np.eye(3), method="separable")
