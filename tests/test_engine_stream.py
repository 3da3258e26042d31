"""A signal filtered in blocks (engine.stream.Stream) gives correlate()'s numbers on the whole signal, bit for bit.

Also the engine's ``causal`` padding against its literal definition, in 1-D and 2-D.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from convcli.engine import correlate, convolve
from convcli.engine.stream import Stream
from convcli.errors import DataError, ParameterError


def _pushed(stream: Stream, x: np.ndarray, sizes) -> np.ndarray:
    """``x`` pushed in blocks of the given sizes (cycled), then finished."""
    outs, i, k = [], 0, 0
    while i < len(x):
        step = sizes[k % len(sizes)]
        outs.append(stream.push(x[i:i + step]))
        i, k = i + step, k + 1
    outs.append(stream.finish())
    return np.concatenate(outs)


@given(method=st.sampled_from(["direct", "toeplitz", "fft"]),
       taps=st.sampled_from([1, 2, 5, 31, 300]),
       n=st.integers(1, 6000),
       stride=st.sampled_from([1, 2, 3]),
       padding=st.sampled_from(["same", "causal", "full", "valid", (7, 0), (0, 9)]),
       pad_mode=st.sampled_from(["reflect", "symmetric", "replicate", "zeros", "constant:0.5"]),
       channels=st.sampled_from([None, 1, 2]),
       per_channel=st.booleans(),
       sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=4),
       seed=st.integers(0, 2 ** 16))
def test_blocks_give_the_whole_signals_numbers(method, taps, n, stride, padding, pad_mode, channels, per_channel,
                                              sizes, seed):
    rng = np.random.default_rng(seed)
    shape = (n,) if channels is None else (n, channels)
    x = rng.integers(-30000, 30000, shape).astype(np.int16)
    w = rng.standard_normal((channels, taps) if per_channel and channels else taps)
    axis = None if channels is None else -1
    if isinstance(padding, tuple):
        padding = (padding,)
    try:
        whole = correlate(x, w, stride=stride, padding=padding, pad_mode=pad_mode, method=method,
                          channel_axis=axis, spatial_ndim=1)
    except ParameterError:
        return  # a geometry with no output samples: the stream refuses it the same way
    stream = Stream(w, n, channels=channels, stride=stride, padding=padding, pad_mode=pad_mode, method=method,
                    x_dtype=x.dtype, chunk=512)
    got = _pushed(stream, x, sizes)
    assert got.dtype == whole.dtype and got.shape == whole.shape
    np.testing.assert_array_equal(got, whole)


@pytest.mark.parametrize("taps, method", [(101, "toeplitz"), (4097, "fft"), (30001, "fft")])
def test_long_signals_in_many_chunks_match_bit_for_bit(taps, method):
    rng = np.random.default_rng(taps)
    x = (rng.standard_normal((1_000_000, 2)) * 0.3).astype(np.float32)
    w = rng.standard_normal(taps) * np.exp(-np.arange(taps) / (taps / 4))
    whole = correlate(x, w[::-1], padding="causal", channel_axis=-1, method=method)
    stream = Stream(w[::-1], len(x), channels=2, padding="causal", method=method, x_dtype=x.dtype, chunk=1 << 14)
    assert len(stream.bounds) > 3  # three chunks or more, each its own engine call
    np.testing.assert_array_equal(_pushed(stream, x, [65536, 1, 99999]), whole)


def test_auto_takes_a_method_that_streams():
    x = np.zeros((300_000, 2), np.float32)
    long = Stream(np.ones(20000), len(x), channels=2, x_dtype=x.dtype)
    short = Stream(np.ones(64), len(x), channels=2, x_dtype=x.dtype)  # a box: running sums would not stream
    assert long.method == "fft" and short.method in ("toeplitz", "direct")


def test_causal_padding_is_the_literal_filter_in_time():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(40), rng.standard_normal(5)
    for d, s in [(1, 1), (2, 1), (1, 3), (3, 2)]:
        got = correlate(x, w, padding="causal", pad_mode="zeros", dilation=d, stride=s)
        span = d * (len(w) - 1)
        want = [sum(w[j] * (x[i - span + d * j] if i - span + d * j >= 0 else 0.0) for j in range(len(w)))
                for i in range(0, len(x), s)]
        np.testing.assert_allclose(got, want, atol=1e-12)
    # As a convolution, causal padding is numpy's own: out[i] = sum_k h[k] x[i - k].
    np.testing.assert_allclose(convolve(x, w, padding="causal", pad_mode="zeros"), np.convolve(x, w)[:len(x)],
                               atol=1e-12)


def test_causal_padding_on_an_image_reads_nothing_below_or_right():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((9, 11)), rng.standard_normal((3, 4))
    got = correlate(x, w, padding="causal", pad_mode="zeros")
    padded = np.pad(x, ((2, 0), (3, 0)))
    want = np.array([[np.sum(w * padded[i:i + 3, j:j + 4]) for j in range(11)] for i in range(9)])
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_refusals():
    with pytest.raises(ParameterError, match="circular border"):
        Stream(np.ones(3), 100, pad_mode="circular")
    with pytest.raises(ParameterError, match="method"):
        Stream(np.ones(3), 100, method="opencv")
    s = Stream(np.ones(3), 10)
    with pytest.raises(ParameterError, match="more than the 10 samples"):
        s.push(np.zeros(11))


def test_a_signal_that_ends_early_is_finished_where_it_ends():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(50_000).astype(np.float32)
    w = rng.standard_normal(9)
    stream = Stream(w, 80_000, x_dtype=x.dtype, chunk=1024)  # 80000 announced, 50000 arrive
    got = _pushed(stream, x, [7000])
    np.testing.assert_allclose(got, correlate(x, w), rtol=1e-5, atol=1e-5)


def test_nan_in_a_streamed_signal():
    x = np.ones(300_000, np.float32)
    x[150_000] = np.nan
    w = np.ones(20000) / 20000
    with pytest.raises(DataError, match="NaN or infinity"):
        _pushed(Stream(w, len(x), finite=None, x_dtype=x.dtype), x, [1 << 16])
    local = _pushed(Stream(np.ones(5) / 5, len(x), finite=False, x_dtype=x.dtype), x, [1 << 16])
    assert np.flatnonzero(np.isnan(local)).tolist() == list(range(149_998, 150_003))  # the NaN stays in its window
