"""The network's depthwise machinery: stride phases, plans bound to buffers, and the compiled forward pass."""
from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from convcli.engine import compiled, correlate
from convcli.engine import depthwise
from convcli.engine.depthwise import plan_depthwise, same_patches, split_phases
from convcli.errors import ParameterError
from convcli.nn import weights
from convcli.nn.efficientnet import Config, EfficientNetLite, StageRow
from convcli.nn.layers import DepthwiseConv, PointwiseConv, bind_sized
from nn_fixtures import literal_network, lt, run_bound

METHODS = ["shiftadd"] + (["opencv"] if compiled.available() else [])
TINY = Config(
    stages=(StageRow(1, 3, 1, 1, 8, 8), StageRow(2, 5, 2, 3, 8, 12), StageRow(1, 3, 2, 2, 12, 16)),
    stem_channels=8, head_channels=24, classes=10, image_size=19,
)


def reference(x, weight, stride, bias):
    """correlate's per-channel zero-border "same" result plus the bias, NHWC in and out, float64."""
    y = correlate(x.astype(np.float64), weight.astype(np.float64), stride=stride, padding="same", pad_mode="zeros",
                  channel_axis=-1, spatial_ndim=2, method="direct")
    return y + bias


# --------------------------------------------------------------------------- phases
@given(
    size=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    stride=st.sampled_from([1, 2, 3, (2, 1), (1, 3)]),
    channels=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_phases_are_the_strided_views_one_after_another(size, stride, channels, seed):
    x = np.random.default_rng(seed).standard_normal((2,) + size + (channels,)).astype(np.float32)
    sy, sx = (stride, stride) if isinstance(stride, int) else stride
    got = split_phases(x, stride)
    assert got.shape == (2, size[0] * size[1], channels)
    expected = np.concatenate([x[:, a::sy, b::sx].reshape(2, -1, channels) for a in range(sy) for b in range(sx)], 1)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(split_phases(x.transpose(0, 3, 1, 2), stride, channels_last=False), expected)


def test_phases_can_be_written_beside_a_channel_of_ones():
    x = np.arange(2 * 4 * 6 * 3, dtype=np.float32).reshape(2, 4, 6, 3)
    buffer = np.ones((2, 24, 4), np.float32)
    split_phases(x, 2, out=buffer[..., :3])
    np.testing.assert_array_equal(buffer[..., :3], split_phases(x, 2))
    assert (buffer[..., 3] == 1).all()
    with pytest.raises(ParameterError, match="shape"):
        split_phases(x, 2, out=np.empty((2, 24, 4), np.float32))


@settings(max_examples=40)
@given(
    size=st.tuples(st.integers(1, 11), st.integers(1, 11)),
    k=st.tuples(st.sampled_from([1, 2, 3, 5]), st.sampled_from([1, 3, 4, 5])),
    stride=st.sampled_from([2, 3, (2, 1), (1, 2)]),
    channels=st.integers(1, 5),
    batch=st.integers(1, 2),
    method=st.sampled_from(METHODS),
    seed=st.integers(0, 2**16),
)
def test_a_phased_plan_is_the_strided_correlation(size, k, stride, channels, batch, method, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + size + (channels,)).astype(np.float32)
    w = rng.standard_normal((channels,) + k).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32)
    plan = plan_depthwise(x.shape, w, stride=stride, bias=b, channels_last=True, method=method, phased=True)
    assert plan.in_shape == (batch, size[0] * size[1], channels)
    got = plan(split_phases(x, stride))
    np.testing.assert_allclose(got, reference(x, w, stride, b), rtol=1e-5, atol=1e-4)
    with pytest.raises(ParameterError, match="this plan is for"):
        plan(x)


def test_phases_are_channels_last():
    with pytest.raises(ParameterError, match="channels_last=True"):
        plan_depthwise((1, 3, 8, 8), np.zeros((3, 3, 3)), stride=2, phased=True)


# --------------------------------------------------------------------------- plans bound to buffers
CASES = [  # (channels_last, stride, phased)
    (False, 1, False), (False, 2, False), (True, 1, False), (True, 2, True), (True, (1, 2), True),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("channels_last, stride, phased", CASES)
@pytest.mark.parametrize("threads", [1, 3])
def test_a_bound_plan_computes_what_its_buffers_hold_at_each_run(method, channels_last, stride, phased, threads,
                                                                 monkeypatch):
    monkeypatch.setattr(depthwise, "_SHARED_WORK", 0)  # share even this small layer
    rng = np.random.default_rng(7)
    shape = (2, 9, 10, 6) if channels_last else (2, 6, 9, 10)
    w = rng.standard_normal((6, 3, 5)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    plan = plan_depthwise(shape, w, stride=stride, bias=b, channels_last=channels_last, method=method,
                          threads=threads, phased=phased)
    x = np.empty(plan.in_shape, np.float32)
    out = np.full(plan.out_shape, np.nan, np.float32)
    parts = plan.bind(x, out)
    assert len(parts) == (threads if method == "opencv" else 1)
    for seed in (1, 2):  # new contents, same buffers
        image = rng.standard_normal(shape).astype(np.float32)
        np.copyto(x, split_phases(image, stride) if phased else image)
        for part in reversed(parts):  # any order
            part()
        expected = reference(image if channels_last else image.transpose(0, 2, 3, 1), w, stride, b)
        got = out if channels_last else out.transpose(0, 2, 3, 1)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_binding_checks_its_buffers():
    plan = plan_depthwise((1, 8, 8, 4), np.ones((4, 3, 3)), channels_last=True)
    out = np.empty(plan.out_shape, np.float32)
    with pytest.raises(ParameterError, match="C-contiguous float32 array of shape"):
        plan.bind(np.empty((1, 8, 8, 4), np.float64), out)
    with pytest.raises(ParameterError, match="C-contiguous float32 array of shape"):
        plan.bind(np.empty((1, 8, 8, 4), np.float32), np.empty((1, 8, 4, 8), np.float32).transpose(0, 1, 3, 2))
    strided = plan_depthwise((1, 8, 8, 4), np.ones((4, 3, 3)), stride=2, channels_last=True)
    with pytest.raises(ParameterError, match="phased=True"):
        strided.bind(np.empty((1, 8, 8, 4), np.float32), np.empty(strided.out_shape, np.float32))


def test_patches_can_be_gathered_into_a_buffer():
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 6)).astype(np.float32)
    expected = same_patches(x, (3, 3), stride=2)
    out = np.full(expected.shape, np.nan, np.float32)
    assert same_patches(x, (3, 3), stride=2, out=out) is out
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ParameterError, match="shape"):
        same_patches(x, (3, 3), out=out)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("outputs", [4, 9])  # narrowing; widening (bias as a weight column)
@pytest.mark.parametrize("with_ones", [False, True])
def test_a_bound_1x1_layer_takes_a_channel_of_ones_from_its_caller(channels_last, outputs, with_ones):
    """A widening layer copies its input beside a channel of ones, unless the input brings one."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((outputs, 6)).astype(np.float32)
    b = rng.standard_normal(outputs).astype(np.float32)
    layer = PointwiseConv(w, b, channels_last=channels_last, relu6=True)
    x = 3 * rng.standard_normal((2, 5, 7, 6) if channels_last else (2, 6, 5, 7)).astype(np.float32)
    # A 1x1 convolution by its definition: every pixel's channel vector times the weights, plus the bias.
    if channels_last:
        expected = np.einsum("oc,nyxc->nyxo", w.astype(np.float64), x) + b
    else:
        expected = np.einsum("oc,ncyx->noyx", w.astype(np.float64), x) + b[:, None, None]
    expected = np.clip(expected, 0, 6)
    if with_ones and layer.augmented:  # the caller keeps a last channel of ones: no copy
        axis = -1 if channels_last else 1
        x = np.concatenate([x, np.ones_like(x[..., :1] if channels_last else x[:, :1])], axis=axis)
    out = np.empty(expected.shape, np.float32)
    steps = bind_sized(lambda workspace: layer.bind(x, out, workspace))
    assert len(steps) == (2 if layer.augmented and not with_ones else 1)
    for parts in steps:
        for part in parts:
            part()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- the compiled forward pass
@pytest.mark.parametrize("switch, strided", [(10**9, False), (10**9, True), (4, True), (1, False)])
def test_the_compiled_pass_is_the_network_by_its_definition(switch, strided):
    """Every pass, the first one included, of one image and of a batch, with new pixels each time."""
    config = replace(TINY, channels_last_stride=switch, strided_channels_last=strided)
    state = _state(config, 31)
    model = EfficientNetLite(weights.fold_batch_norm(state, config), config, threads=1)
    rng = np.random.default_rng(32)
    for n, size in [(1, (19, 17)), (1, (19, 17)), (2, (16, 16)), (2, (16, 16))]:
        x = rng.standard_normal((n, 3) + size).astype(np.float32)
        first = model.features(x)
        logits = model.classifier(first)
        for i in range(n):
            np.testing.assert_allclose(logits[i], literal_network(state, config, x[i].astype(np.float64)),
                                       rtol=1e-4, atol=1e-4)
        kept = first.copy()
        model.features(-x)
        np.testing.assert_array_equal(first, kept)  # a result is the caller's, not a buffer reused later
    assert {key: len(idle) for key, idle in model._passes.items()} == {  # bound once per shape, then kept
        ((1, 3, 19, 17), 1): 1, ((2, 3, 16, 16), 1): 1}
    alone = model.features(x)
    model.threads = 2  # a share of the batch per thread, each with a compiled pass of its own
    for _ in range(2):
        np.testing.assert_allclose(model.features(x), alone, rtol=1e-6, atol=1e-6)
    assert 1 <= len(model._passes[((1, 3, 16, 16), 1)]) <= 2


def test_the_same_shape_in_two_threads_at_once_gets_its_own_arrays():
    model = EfficientNetLite(weights.fold_batch_norm(_state(TINY, 33), TINY), TINY, threads=1)
    images = [np.random.default_rng(i).standard_normal((1, 3, 19, 19)).astype(np.float32) for i in range(2)]
    expected = [model.features(x) for x in images]
    results, start = [None, None], threading.Barrier(2)

    def run(i):
        start.wait()
        for _ in range(20):
            results[i] = model.features(images[i])
            np.testing.assert_allclose(results[i], expected[i], rtol=1e-6, atol=1e-6)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in results)
    assert len(model._passes[((1, 3, 19, 19), 1)]) <= 2  # a pass of its own for a thread finding one busy, kept


def _state(config, seed):
    return lt.random_state(config, seed=seed)


@pytest.mark.skipif(not compiled.available(), reason="OpenCV is not installed")
def test_a_layer_shares_its_tiles_between_batch_sizes():
    rng = np.random.default_rng(9)
    layer = DepthwiseConv(rng.standard_normal((5, 3, 3)).astype(np.float32), np.zeros(5, np.float32),
                          channels_last=True)
    three = rng.standard_normal((3, 6, 7, 5)).astype(np.float32)
    (many,) = run_bound(lambda workspace, x, out: layer.bind(x, out, workspace), [three], three.shape)
    (one,) = run_bound(lambda workspace, x, out: layer.bind(x, out, workspace), [three[:1]], (1, 6, 7, 5))
    np.testing.assert_allclose(many[:1], one, rtol=1e-6, atol=1e-6)
    (a, b) = layer._plans.values()
    assert a.tiles is b.tiles


def test_threads_sharing_the_compiled_steps_change_nothing(monkeypatch):
    from convcli.nn import layers

    monkeypatch.setattr(layers, "_SHARED_WORK", 0)  # share even the tiny network's layers
    monkeypatch.setattr(depthwise, "_SHARED_WORK", 0)
    for switch in (10**9, 1):
        config = replace(TINY, channels_last_stride=switch)
        model = EfficientNetLite(weights.fold_batch_norm(_state(config, 35), config), config, threads=1)
        x = np.random.default_rng(36).standard_normal((1, 3, 19, 19)).astype(np.float32)
        alone = model.features(x)
        model.layer_threads = 2
        for _ in range(3):
            np.testing.assert_allclose(model.features(x), alone, rtol=1e-6, atol=1e-6)
        (shared,) = model._passes[(x.shape, 2)]
        assert max(len(parts) for parts in shared.steps) == 2


def test_a_failing_part_of_a_shared_step_is_raised_in_the_caller():
    from convcli.parallel import share

    ran = []

    def fails():
        raise RuntimeError("part 2 failed")
    with pytest.raises(RuntimeError, match="part 2 failed"):
        share([lambda: ran.append(1), fails, lambda: ran.append(3)])  # run by the helper or the caller
    assert sorted(ran) == [1, 3]  # the other parts still ran: nothing is left half-done behind the caller
