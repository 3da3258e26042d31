"""The depthwise "same" entry point against the engine's general ``correlate``."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from convcli.engine import compiled, correlate, plan_depthwise, same_patches
from convcli.errors import ParameterError

METHODS = ["auto", "shiftadd"] + (["opencv"] if compiled.available() else [])


def depthwise_same(x, weight, out=None, **options):
    """The layer planned for ``x``'s shape and run on ``x``, as a network runs it."""
    return plan_depthwise(np.shape(x), weight, **options)(x, out=out)


def reference(x, weight, stride, bias):
    """correlate's per-channel zero-border "same" result plus the bias, NCHW."""
    y = correlate(x.astype(np.float64), weight.astype(np.float64), stride=stride, padding="same", pad_mode="zeros",
                  channel_axis=1, spatial_ndim=2, method="direct")
    return y + bias[None, :, None, None]


@given(
    size=st.tuples(st.integers(1, 14), st.integers(1, 14)),
    k=st.tuples(st.sampled_from([1, 2, 3, 5]), st.sampled_from([1, 3, 4, 5])),
    stride=st.sampled_from([1, 2, 3, (2, 1)]),
    channels=st.integers(1, 6),
    batch=st.integers(1, 3),
    channels_last=st.booleans(),
    method=st.sampled_from(METHODS),
    seed=st.integers(0, 2**16),
)
def test_depthwise_same_is_correlate_per_channel(size, k, stride, channels, batch, channels_last, method, seed):
    if method == "opencv" and channels_last and stride != 1:
        return  # refused: see test_opencv_refuses_strided_channels_last
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, channels) + size).astype(np.float32)
    w = rng.standard_normal((channels,) + k).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32)
    expected = reference(x, w, stride, b)
    if channels_last:
        got = depthwise_same(x.transpose(0, 2, 3, 1), w, stride=stride, bias=b, channels_last=True, method=method)
        got = got.transpose(0, 3, 1, 2)
    else:
        got = depthwise_same(x, w, stride=stride, bias=b, method=method)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_writes_into_out_and_defaults_to_no_bias(method, channels_last):
    stride = 2 if method != "opencv" or not channels_last else 1
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3)).astype(np.float32)
    expected = reference(x, w, stride, np.zeros(4))
    if channels_last:
        x, expected = x.transpose(0, 2, 3, 1), expected.transpose(0, 2, 3, 1)
    out = np.full(expected.shape, np.nan, dtype=np.float32)
    got = depthwise_same(x, w, stride=stride, channels_last=channels_last, method=method, out=out)
    assert got is out
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_refuses_what_it_cannot_compute():
    x = np.zeros((1, 3, 5, 5), np.float32)
    with pytest.raises(ParameterError, match="kh, kw"):
        depthwise_same(x, np.zeros((2, 3, 3)))
    with pytest.raises(ParameterError, match="4 axes"):
        depthwise_same(x[0], np.zeros((3, 3, 3)))
    with pytest.raises(ParameterError, match="auto, opencv, shiftadd"):
        depthwise_same(x, np.zeros((3, 3, 3)), method="fft")
    with pytest.raises(ParameterError, match="C-contiguous float32 array of shape"):
        depthwise_same(x, np.zeros((3, 3, 3)), out=np.zeros((1, 3, 4, 4), np.float32))


@pytest.mark.skipif(not compiled.available(), reason="OpenCV is not installed")
def test_opencv_refuses_strided_channels_last():
    with pytest.raises(ParameterError, match="stride 1 only"):
        depthwise_same(np.zeros((1, 5, 5, 3), np.float32), np.zeros((3, 3, 3)), stride=2, channels_last=True,
                       method="opencv")


@given(
    size=st.tuples(st.integers(1, 11), st.integers(1, 11)),
    k=st.tuples(st.sampled_from([1, 2, 3]), st.sampled_from([1, 3, 4])),
    stride=st.sampled_from([1, 2, (1, 3)]),
    channels=st.integers(1, 4),
    outputs=st.integers(1, 3),
    seed=st.integers(0, 2**16),
)
def test_patches_times_weights_is_a_dense_correlation(size, k, stride, channels, outputs, seed):
    """Patch rows times (out, kh, kw, C) weights = the sum over input channels of correlate's results."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, channels) + size).astype(np.float32)
    w = rng.standard_normal((outputs, channels) + k).astype(np.float32)
    patches = same_patches(x, k, stride=stride)
    n, rows, oh, ow = patches.shape
    assert rows == k[0] * k[1] * channels
    got = np.matmul(w.transpose(0, 2, 3, 1).reshape(outputs, rows), patches.reshape(n, rows, oh * ow))
    expected = np.stack([
        sum(correlate(x[:, c].astype(np.float64), w[o, c].astype(np.float64), stride=stride, padding="same",
                      pad_mode="zeros", method="direct") for c in range(channels))
        for o in range(outputs)], axis=1)
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(not compiled.available(), reason="OpenCV is not installed")
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("stride", [1, 2])
def test_threads_share_a_layer_without_changing_it(monkeypatch, channels_last, stride):
    from convcli.engine import depthwise

    monkeypatch.setattr(depthwise, "_SHARED_WORK", 0)  # share even this small layer
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 7, 11, 10)).astype(np.float32)
    w = rng.standard_normal((7, 5, 5)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float32)
    expected = reference(x, w, stride, b)
    if channels_last:
        if stride != 1:
            return  # shift-and-add: not shared
        x, expected = x.transpose(0, 2, 3, 1), expected.transpose(0, 2, 3, 1)
    plan = plan_depthwise(x.shape, w, stride=stride, bias=b, channels_last=channels_last, threads=3)
    assert plan.threads == 3 and plan.method == "opencv"
    np.testing.assert_allclose(plan(x), expected, rtol=1e-5, atol=1e-4)
