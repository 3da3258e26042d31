"""Numbers that cannot go wrong silently: hypothesis properties of issue 8.

- full-mode sum rule: with zero padding every sample meets every tap once,
  so sum(correlate(x, k, padding="full")) == sum(x) * sum(k);
- NaN confinement: a NaN changes only the outputs whose window covers it
  (through the border rule too), for ``direct`` (non-zero taps only) and
  ``auto`` (the window's bounding box), and every such output is NaN;
- constant response: a constant input gives constant * sum(k) everywhere
  under every border mode that extends the signal by its own values;
- integer outputs: rounded half to even and clipped, never wrapped, with the
  clipped samples counted;
- tiling invariance: the engine's band executor gives bit-identical direct
  results whatever the band height and thread count (separable: to float
  rounding).

The window of an output is taken from the literal definition (tests/oracle.py):
padded position ``o * stride + j * dilation`` reads input sample
``source_index(position - before)``.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from convcli import correlate
from convcli.io.samples import sample_range, to_samples
from oracle import axis_geometry, source_index

MIRRORS = ["reflect", "symmetric", "replicate", "circular"]
finite = st.floats(-10, 10, allow_nan=False, width=64)


@st.composite
def geometries(draw, *, padding=None, max_side=6, max_taps=4):
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.integers(1, max_side)) for _ in range(nd))
    kshape = tuple(draw(st.integers(1, max_taps)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    pad = padding if padding is not None else draw(st.sampled_from(["same", "valid", "full", 1, 2]))
    outs = [axis_geometry(n, k, s, d, pad)[1] for n, k, s, d in zip(shape, kshape, stride, dilation)]
    assume(min(outs) >= 1)
    return shape, kshape, {"stride": stride, "dilation": dilation, "padding": pad}


def reach(shape, kshape, geometry, mode, taps=None):
    """For every output, the set of input samples its window reads (the literal definition)."""
    nd = len(shape)
    geo = [axis_geometry(n, k, s, d, geometry["padding"]) for n, k, s, d in
           zip(shape, kshape, geometry["stride"], geometry["dilation"])]
    taps = list(itertools.product(*[range(k) for k in kshape])) if taps is None else taps
    reads = {}
    for o in itertools.product(*[range(out) for _, out in geo]):
        seen = set()
        for j in taps:
            src = tuple(source_index(o[a] * geometry["stride"][a] + j[a] * geometry["dilation"][a] - geo[a][0],
                                     shape[a], mode) for a in range(nd))
            if None not in src:
                seen.add(src)
        reads[o] = seen
    return reads


# ---------------------------------------------------------------- sum rule
@given(geometries(padding="full"), st.data(), st.sampled_from(["auto", "direct", "fft"]))
def test_full_mode_sum_rule(problem, data, method):
    shape, kshape, geometry = problem
    geometry = dict(geometry, stride=(1,) * len(shape))  # every output kept: each product appears once
    x = data.draw(arrays(np.float64, shape, elements=finite))
    k = data.draw(arrays(np.float64, kshape, elements=finite))
    got = correlate(x, k, pad_mode="zeros", method=method, **geometry).sum()
    scale = np.abs(x).sum() * np.abs(k).sum()
    assert got == pytest.approx(x.sum() * k.sum(), rel=1e-9, abs=1e-9 * max(scale, 1.0))


# ---------------------------------------------------------------- NaN confinement
@given(geometries(), st.data(), st.sampled_from(MIRRORS + ["zeros", "constant:2"]),
       st.sampled_from(["direct", "auto"]))
def test_nan_stays_in_its_receptive_field(problem, data, mode, method):
    shape, kshape, geometry = problem
    x = data.draw(arrays(np.float64, shape, elements=finite))
    k = data.draw(arrays(np.float64, kshape, elements=st.sampled_from([0.0, 0.5, -1.0, 2.0])))
    assume(np.any(k))
    spot = tuple(data.draw(st.integers(0, n - 1)) for n in shape)
    clean = correlate(x, k, pad_mode=mode, method=method, **geometry)
    dirty = x.copy()
    dirty[spot] = np.nan
    got = correlate(dirty, k, pad_mode=mode, method=method, **geometry)
    nonzero = [tuple(j) for j in np.argwhere(k != 0)]
    # direct skips zero taps, so only non-zero taps carry the NaN; any method
    # must keep it inside the window's bounding box.
    allowed = reach(shape, kshape, geometry, mode.split(":")[0], None if method == "auto" else nonzero)
    hit = reach(shape, kshape, geometry, mode.split(":")[0], nonzero)
    for o in np.ndindex(*got.shape):
        if spot in hit[o]:
            assert np.isnan(got[o]), (o, got)
        elif spot not in allowed[o]:
            assert np.isfinite(got[o]), (o, got)
            if method == "direct":
                assert got[o] == clean[o]  # the same arithmetic, bit for bit
            else:
                assert got[o] == pytest.approx(clean[o], rel=1e-9, abs=1e-9 * (np.abs(x).max() * np.abs(k).sum() + 1))


def test_fft_is_never_chosen_for_a_nan_input_even_when_it_is_cheapest():
    x = np.zeros((96, 96))
    x[40, 50] = np.nan
    k = np.random.default_rng(5).uniform(0.5, 1.5, (21, 21))  # not separable: FFT territory
    got = correlate(x, k, pad_mode="zeros")
    assert np.isnan(got).sum() == 21 * 21 and np.isnan(got[30:51, 40:61]).all()


# ---------------------------------------------------------------- constant response
@given(geometries(), st.data(), st.sampled_from(MIRRORS), st.sampled_from(["auto", "direct", "fft"]))
def test_constant_input_gives_constant_times_the_kernel_sum(problem, data, mode, method):
    shape, kshape, geometry = problem
    c = data.draw(st.floats(-5, 5, allow_nan=False))
    k = data.draw(arrays(np.float64, kshape, elements=finite))
    got = correlate(np.full(shape, c), k, pad_mode=mode, method=method, **geometry)
    np.testing.assert_allclose(got, c * k.sum(), rtol=1e-9, atol=1e-9 * (abs(c) * np.abs(k).sum() + 1))


def test_constant_border_of_the_same_value_is_a_constant_response_too():
    got = correlate(np.full((5, 7), 3.0), np.arange(12.0).reshape(3, 4), pad_mode="constant:3", padding="full")
    np.testing.assert_allclose(got, 3.0 * 66.0)


# ---------------------------------------------------------------- integer outputs
INTEGER_TYPES = ["uint8", "int8", "uint16", "int16", "int32", "uint32"]


def oracle_samples(values, dtype, bits=None):
    lo, hi = sample_range(dtype, bits)
    rounded = [round(float(v)) for v in values]  # Python rounds half to even, exactly
    return [min(max(r, lo), hi) for r in rounded], sum(r < lo or r > hi for r in rounded)


@given(st.lists(st.floats(-1e10, 1e10, allow_nan=False) | st.integers(-300, 300).map(lambda n: n + 0.5),
                min_size=1, max_size=40),
       st.sampled_from(INTEGER_TYPES), st.sampled_from([np.float32, np.float64]))
def test_integer_outputs_round_half_to_even_and_clip_never_wrap(values, dtype, work):
    values = np.array(values, dtype=work)
    samples, clipped = to_samples(values, dtype, "clip")
    expected, expected_clipped = oracle_samples(values, dtype)
    assert samples.dtype == np.dtype(dtype)
    assert samples.tolist() == expected and clipped == expected_clipped
    order = np.argsort(values, kind="stable")
    assert np.all(np.diff(samples[order].astype(np.int64)) >= 0)  # monotone: nothing wrapped around


@given(st.lists(st.floats(-3e7, 3e7, allow_nan=False), min_size=1, max_size=30))
def test_24_bit_samples_clip_to_24_bits(values):
    samples, clipped = to_samples(np.array(values), np.int32, "clip", bits=24)
    expected, expected_clipped = oracle_samples(values, np.int32, bits=24)
    assert samples.tolist() == expected and clipped == expected_clipped


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=20), st.sampled_from(INTEGER_TYPES),
       st.sampled_from([np.nan, np.inf, -np.inf]))
def test_non_finite_values_never_reach_an_integer_output(values, dtype, bad):
    from convcli.errors import DataError

    values = np.array(values + [bad, bad])
    for mode in ("clip", "abs", "offset", "rescale"):
        with pytest.raises(DataError, match="2 non-finite samples"):
            to_samples(values, dtype, mode)


# ---------------------------------------------------------------- tiling invariance
bands = pytest.importorskip("convcli.engine.bands", reason="the engine has no band (tiling) executor")


@pytest.mark.skipif(not hasattr(bands, "BAND_BYTES"), reason="the engine's band size is not adjustable")
@given(geometries(max_side=9), st.data(), st.sampled_from(MIRRORS + ["zeros"]), st.sampled_from(["direct", "separable"]))
def test_band_height_and_threads_do_not_change_the_result(problem, data, mode, method):
    shape, kshape, geometry = problem
    x = data.draw(arrays(np.float32, shape, elements=st.floats(-10, 10, width=32)))
    k = data.draw(arrays(np.float64, kshape, elements=finite))
    if method == "separable":
        factors = [data.draw(arrays(np.float64, (n,), elements=finite)) for n in kshape]
        k = factors[0]
        for f in factors[1:]:
            k = np.multiply.outer(k, f)
        assume(len(shape) > 1 and np.any(k))
    whole = correlate(x, k, pad_mode=mode, method=method, **geometry)
    saved = bands.BAND_BYTES, bands.PARALLEL_WORK
    try:
        bands.BAND_BYTES, bands.PARALLEL_WORK = 1, 0  # one output row per band, on the thread pool
        banded = correlate(x, k, pad_mode=mode, method=method, **geometry)
    finally:
        bands.BAND_BYTES, bands.PARALLEL_WORK = saved
    if method == "direct":
        np.testing.assert_array_equal(banded, whole)  # the same products summed in the same order
    else:  # two passes whose intermediate rows may be computed in other groupings
        np.testing.assert_allclose(banded, whole, rtol=1e-5, atol=1e-5 * (np.abs(x).max() * np.abs(k).sum() + 1e-30))
