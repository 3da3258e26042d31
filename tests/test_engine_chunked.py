"""A Dask array correlated chunk by chunk gives the in-memory result: halos from neighbours, borders only at the edges.

The oracle is the in-memory ``correlate`` of the whole array (itself held to
the loop definition and scipy elsewhere).  Chunkings are drawn freely: not
multiples of the stride, thinner than the kernel's reach, one sample wide.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")

from convcli import convolve, correlate  # noqa: E402
from convcli.engine import BORDER_MODES  # noqa: E402

MODES = [m.name for m in BORDER_MODES] + ["constant:-1.5"]


def _close(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype
    scale = max(float(np.abs(want).max()), 1e-30)
    assert float(np.abs(got - want).max()) <= 1e-5 * scale


@st.composite
def cases(draw):
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 11), min_size=nd, max_size=nd)))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)
    taps = tuple(draw(st.lists(st.integers(1, 4), min_size=nd, max_size=nd)))
    stride = draw(st.integers(1, 3))
    dilation = draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["same", "valid", "full", 0, 2, 5]))
    mode = draw(st.sampled_from(MODES))
    seed = draw(st.integers(0, 2**16))
    return shape, chunks, taps, stride, dilation, padding, mode, seed


@given(cases())
def test_chunked_correlation_is_the_in_memory_one(case):
    shape, chunks, taps, stride, dilation, padding, mode, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    kernel = rng.standard_normal(taps)
    args = dict(stride=stride, dilation=dilation, padding=padding, pad_mode=mode)
    try:
        want = correlate(x, kernel, **args)
    except ValueError:  # a geometry with no output samples is refused the same way lazily
        with pytest.raises(ValueError):
            correlate(da.from_array(x, chunks=chunks), kernel, **args)
        return
    got = correlate(da.from_array(x, chunks=chunks), kernel, **args)
    assert isinstance(got, da.Array)
    _close(got.compute(scheduler="sync"), want)


@pytest.mark.parametrize("mode", MODES)
def test_chunks_thinner_than_the_reach_and_wide_padding(mode):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 10)).astype(np.float32)
    kernel = rng.standard_normal((5, 4))
    args = dict(stride=(2, 3), dilation=(3, 1), padding=((12, 3), (0, 9)), pad_mode=mode)
    got = correlate(da.from_array(x, chunks=(1, 3)), kernel, **args).compute()
    _close(got, correlate(x, kernel, **args))


def test_channels_batch_axes_and_convolve():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 255, (2, 12, 13, 3)).astype(np.uint8)  # frames, rows, columns, channels
    depthwise = rng.standard_normal((3, 3, 5))
    got = convolve(da.from_array(x, chunks=(1, 5, 4, 1)), depthwise, channel_axis=-1, stride=2).compute()
    _close(got, convolve(x, depthwise, channel_axis=-1, stride=2))
    shared = rng.standard_normal((4, 4))
    got = correlate(da.from_array(x, chunks=(2, 3, 7, 2)), shared, channel_axis=-1, pad_mode="circular").compute()
    _close(got, correlate(x, shared, channel_axis=-1, pad_mode="circular"))


def test_output_chunks_follow_the_input_chunks_divided_by_the_stride():
    x = da.zeros((100, 60), chunks=(30, 20), dtype=np.float32)
    y = correlate(x, np.ones((3, 3)), stride=(3, 2))
    assert y.chunks == ((10, 10, 10, 4), (10, 10, 10))


def test_every_chunk_runs_the_same_method_whatever_the_threads():
    # A box kernel cut differently by 1 or 2 threads would sum in another order.
    rng = np.random.default_rng(11)
    x = rng.standard_normal((64, 70, 30)).astype(np.float32)
    kernel = np.ones((7, 7, 7))
    lazy = correlate(da.from_array(x, chunks=(20, 33, 30)), kernel)
    one = lazy.compute(scheduler="threads", num_workers=1)
    two = lazy.compute(scheduler="threads", num_workers=2)
    assert np.array_equal(one, two)
    _close(one, correlate(x, kernel))


def test_nan_stays_within_its_footprint():
    x = np.zeros((40, 40), np.float32)
    x[5, 5] = np.nan
    got = correlate(da.from_array(x, chunks=(13, 13)), np.ones((3, 3))).compute()
    assert np.isnan(got[4:7, 4:7]).all() and np.isnan(got).sum() == 9


def test_a_dask_array_takes_no_out():
    x = da.zeros((8, 8), chunks=4)
    with pytest.raises(ValueError, match="lazily"):
        correlate(x, np.ones((3, 3)), out=np.zeros((8, 8), np.float32))


# ---------------------------------------------------------------- rank filters, morphology and pooling
from convcli.engine import (  # noqa: E402
    execute_morphology,
    execute_pool,
    execute_rank,
    plan_morphology,
    plan_pool,
    plan_rank,
)
from convcli.engine.chunked import lazy_operator  # noqa: E402
from convcli.engine.morphology import OPERATIONS  # noqa: E402

RANK_MODES = [m for m in MODES if m != "circular"] + ["circular"]


@st.composite
def operator_cases(draw):
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 10), min_size=nd, max_size=nd)))
    chunks = tuple(draw(st.integers(1, n)) for n in shape)  # often thinner than the reach
    footprint = np.array(draw(st.lists(st.booleans(), min_size=1, max_size=27)), dtype=bool)
    taps = tuple(draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd)))
    footprint = np.resize(footprint, taps)
    footprint.flat[draw(st.integers(0, footprint.size - 1))] = True
    return dict(shape=shape, chunks=chunks, footprint=footprint, stride=draw(st.integers(1, 3)),
                dilation=draw(st.integers(1, 2)), padding=draw(st.sampled_from(["same", "valid", 1, 3])),
                mode=draw(st.sampled_from(RANK_MODES)), seed=draw(st.integers(0, 2**16)),
                dtype=draw(st.sampled_from([np.float32, np.uint8, np.int16])),
                operation=draw(st.sampled_from(("rank",) + OPERATIONS)), nan=draw(st.booleans()))


def _samples(shape, dtype, seed, nan):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        x = rng.standard_normal(shape).astype(dtype)
        if nan and x.size > 2:
            x.flat[rng.integers(0, x.size)] = np.nan
        return x
    return rng.integers(0, 60, shape).astype(dtype)  # ties: a selection must still pick the same sample


@given(operator_cases())
def test_chunked_rank_and_morphology_are_the_in_memory_ones_exactly(case):
    x = _samples(case["shape"], case["dtype"], case["seed"], case["nan"])
    geometry = dict(stride=case["stride"], dilation=case["dilation"], padding=case["padding"], pad_mode=case["mode"],
                    x_dtype=x.dtype)
    try:
        if case["operation"] == "rank":
            taps = int(case["footprint"].sum())
            plan = plan_rank(x.shape, case["footprint"], case["seed"] % taps, **geometry)
            want = execute_rank(plan, x)
        else:
            plan = plan_morphology(x.shape, case["operation"], case["footprint"], **geometry)
            want = execute_morphology(plan, x)
    except ValueError:  # no output samples: refused by the plan, before anything is lazy
        return
    got = lazy_operator(da.from_array(x, chunks=case["chunks"]), plan).compute(scheduler="sync")
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)  # selections are exact: NaN where in memory, nowhere else


@st.composite
def pool_cases(draw):
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(2, 11), min_size=nd, max_size=nd)))
    window = tuple(draw(st.lists(st.integers(1, 4), min_size=nd, max_size=nd)))
    return dict(shape=shape, chunks=tuple(draw(st.integers(1, n)) for n in shape), window=window,
                stride=tuple(draw(st.lists(st.integers(1, 3), min_size=nd, max_size=nd))),
                padding=tuple(draw(st.integers(0, k // 2)) for k in window), ceil=draw(st.booleans()),
                count_pad=draw(st.booleans()), kind=draw(st.sampled_from(["max", "avg"])),
                dtype=draw(st.sampled_from([np.float32, np.uint8, np.float64])), seed=draw(st.integers(0, 2**16)))


@given(pool_cases())
def test_chunked_pooling_is_the_in_memory_one_exactly(case):
    # Chunks that are not multiples of the stride; ceil_mode's last windows past the padding;
    # a mean divided by the count of its place in the whole array, in the same order.
    x = _samples(case["shape"], case["dtype"], case["seed"], False)
    try:
        plan = plan_pool(x.shape, case["kind"], case["window"], stride=case["stride"], padding=case["padding"],
                         ceil_mode=case["ceil"], count_include_pad=case["count_pad"], x_dtype=x.dtype)
    except ValueError:
        return
    want = execute_pool(plan, x)
    got = lazy_operator(da.from_array(x, chunks=case["chunks"]), plan).compute(scheduler="sync")
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_an_operator_reads_its_windows_from_a_stored_array():
    # The chunked CLI's first step: each task slices its own window from the store (here a memory array).
    rng = np.random.default_rng(5)
    x = rng.integers(0, 255, (30, 26, 3)).astype(np.uint8)
    plan = plan_morphology(x.shape, "tophat", np.ones((5, 3), bool), channel_axis=-1, pad_mode="symmetric",
                           x_dtype=x.dtype)
    got = lazy_operator(x, plan, read_chunks=((7, 7, 7, 7, 2), (9, 9, 8), (1, 1, 1))).compute(scheduler="threads")
    np.testing.assert_array_equal(got, execute_morphology(plan, x))
