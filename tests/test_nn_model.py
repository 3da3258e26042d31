"""The network: layers against literal definitions, the block table, and PyTorch reference logits."""
from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, strategies as st

from convcli.engine import compiled, split_phases
from convcli.nn import weights
from convcli.nn.efficientnet import LITE0, Config, EfficientNetLite, StageRow, block_rows, conv_specs
from convcli.nn.layers import DenseConv, DepthwiseConv, PointwiseConv
from convcli.io.photo import decode_photo
from convcli.nn.preprocess import Photo, network_input
from nn_fixtures import literal_conv, literal_network, lt, run_bound

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "nn"
random_state = lt.random_state
TINY = Config(
    stages=(StageRow(1, 3, 1, 1, 8, 8), StageRow(2, 5, 2, 3, 8, 12), StageRow(1, 3, 2, 2, 12, 16)),
    stem_channels=8, head_channels=24, classes=10, image_size=19,
)


# --------------------------------------------------------------------------- layers
@given(
    size=st.tuples(st.integers(3, 13), st.integers(3, 13)),
    k=st.sampled_from([1, 3, 5]),
    stride=st.integers(1, 2),
    channels=st.integers(1, 5),
    channels_last=st.booleans(),
    opencv=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_depthwise_conv_is_the_grouped_definition(size, k, stride, channels, channels_last, opencv, seed):
    """Every engine strategy the layer may use: both layouts, a strided channels-last layer on the stride's
    phases (as a network binds it), with OpenCV and as on a machine without it."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, channels) + size).astype(np.float32)
    w = rng.standard_normal((channels, k, k)).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32)
    with mock.patch.object(compiled, "available", return_value=opencv and compiled.available()):
        layer = DepthwiseConv(w, b, stride, channels_last=channels_last, phased=channels_last and stride > 1)
        shape = (2,) + size + (channels,) if channels_last else x.shape
        images = x.transpose(0, 2, 3, 1) if channels_last else x
        given_input = split_phases(images, stride) if layer.phased else images
        plan = layer.plan(shape)
        assert plan.method == ("opencv" if opencv and compiled.available() else "shiftadd")
        (got,) = run_bound(lambda workspace, a, out: layer.bind(a, out, workspace, shape=shape), [given_input],
                           plan.out_shape)
    got = got.transpose(0, 3, 1, 2) if channels_last else got
    for n in range(2):
        expected = literal_conv(x[n].astype(np.float64), w[:, None].astype(np.float64), stride, groups=channels)
        np.testing.assert_allclose(got[n], expected + b[:, None, None], rtol=1e-5, atol=1e-5)


@given(
    size=st.tuples(st.integers(2, 12), st.integers(2, 12)),
    k=st.sampled_from([1, 2, 3, 5]),
    stride=st.integers(1, 3),
    cin=st.integers(1, 4),
    cout=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_dense_conv_is_the_definition(size, k, stride, cin, cout, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, cin) + size).astype(np.float32)
    w = rng.standard_normal((cout, cin, k, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    layer = DenseConv(w, b, stride)
    (got,) = run_bound(lambda workspace, a, out: layer.bind(a, out, workspace), [x], layer.output_shape(x.shape))
    for n in range(2):
        expected = literal_conv(x[n].astype(np.float64), w.astype(np.float64), stride)
        np.testing.assert_allclose(got[n], expected + b[:, None, None], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("outputs", [4, 9])  # narrowing; widening (bias as a weight column)
@pytest.mark.parametrize("activation", [False, True])
@pytest.mark.parametrize("threads", [1, 2])
def test_pointwise_conv_is_a_1x1_convolution(channels_last, outputs, activation, threads, monkeypatch):
    """Pass after pass (the first with the weights as a transposed view, later ones with a copy)."""
    from convcli.nn import layers

    monkeypatch.setattr(layers, "_SHARED_WORK", 0)  # threads share even this small layer
    rng = np.random.default_rng(4)
    images = [3 * rng.standard_normal((3, 6, 5, 7)).astype(np.float32) for _ in range(3)]
    w = rng.standard_normal((outputs, 6)).astype(np.float32)
    b = rng.standard_normal(outputs).astype(np.float32)
    layer = PointwiseConv(w, b, channels_last=channels_last, relu6=activation)
    inputs = [x.transpose(0, 2, 3, 1) for x in images] if channels_last else images
    shape = (3, 5, 7, outputs) if channels_last else (3, outputs, 5, 7)
    results = run_bound(lambda workspace, a, out: layer.bind(a, out, workspace, threads), inputs, shape)
    for x, got in zip(images, results):
        got = got.transpose(0, 3, 1, 2) if channels_last else got
        for n in range(3):
            expected = literal_conv(x[n].astype(np.float64), w[:, :, None, None].astype(np.float64), 1)
            expected += b[:, None, None]
            if activation:
                expected = np.clip(expected, 0, 6)
            np.testing.assert_allclose(got[n], expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- the table
def test_the_stage_table_is_the_reference_block_strings():
    strings = ["r1_k3_s11_e1_i32_o16", "r2_k3_s22_e6_i16_o24", "r2_k5_s22_e6_i24_o40", "r3_k3_s22_e6_i40_o80",
               "r3_k5_s11_e6_i80_o112", "r4_k5_s22_e6_i112_o192", "r1_k3_s11_e6_i192_o320"]
    parsed = []
    for text in strings:
        m = re.fullmatch(r"r(\d+)_k(\d+)_s(\d)\3_e(\d+)_i(\d+)_o(\d+)", text)
        r, k, s, e, i, o = map(int, m.groups())
        parsed.append(StageRow(r, k, s, e, i, o))
    assert tuple(parsed) == LITE0.stages


def test_lite0_has_sixteen_blocks_and_4_7_million_parameters():
    rows = block_rows(LITE0)
    assert len(rows) == 16
    assert [r.stride for r in rows].count(2) == 4
    assert sum(r.residual for r in rows) == 9
    params = sum(int(np.prod(s.shape)) + s.shape[0] for s in conv_specs(LITE0))
    assert 4.6e6 < params < 4.7e6  # 4 652 008 weights and folded biases


@pytest.mark.parametrize("switch, strided, layouts", [
    (10**9, False, [False, False, False, False]),  # all channels-first
    (10**9, True, [False, True, False, True]),  # strided blocks channels-last on phases, back and forth
    (4, False, [False, True, True, True]),  # channels-last from the first block downsampling 4x on
    (1, True, [True, True, True, True]),  # channels-last from the first block on
])
def test_a_tiny_network_matches_its_literal_definition(switch, strided, layouts):
    config = replace(TINY, channels_last_stride=switch, strided_channels_last=strided)
    state = random_state(config, seed=5)
    model = EfficientNetLite(weights.fold_batch_norm(state, config), config)
    # Block strides 1, 2, 1, 2; outputs downsampled 2, 4, 4, 8 times.
    assert [r.channels_last for r in block_rows(config)] == layouts
    assert [b.phased for b in model.blocks] == [last and s == 2 for last, s in zip(layouts, (1, 2, 1, 2))]
    for size in ((19, 17), (16, 16)):  # odd sides: phases of unequal sizes
        x = np.random.default_rng(6).standard_normal((2, 3) + size).astype(np.float32)
        got = model(x)
        assert model.features(x).shape == (2, 24, -(-size[0] // 8), -(-size[1] // 8))  # NCHW whatever the inside
        for n in range(2):
            np.testing.assert_allclose(got[n], literal_network(state, config, x[n].astype(np.float64)),
                                       rtol=1e-4, atol=1e-4)


def test_the_class_activation_map_averages_to_the_logit():
    state = random_state(TINY, seed=7)
    model = EfficientNetLite(weights.fold_batch_norm(state, TINY), TINY)
    x = np.random.default_rng(8).standard_normal((1, 3, 19, 19)).astype(np.float32)
    features = model.features(x)
    logits = model.classifier(features)[0]
    for index in (0, 3, 9):
        cam = model.class_activation_map(features[0], index)
        assert cam.shape == features.shape[2:]
        assert cam.mean() + state["_fc.bias"][index] == pytest.approx(logits[index], abs=1e-4)


# --------------------------------------------------------------------------- the pretrained network
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        mp.delenv("CONVCLI_WEIGHTS", raising=False)
        return weights.load_model()


REFERENCE = np.load(FIXTURES / "reference_logits.npz")


@pytest.mark.parametrize("name", sorted(REFERENCE.files))
def test_logits_match_pytorch(pretrained, name):
    """Same top-5 and every logit within 1e-3 of the PyTorch reference (bench/make_nn_fixtures.py)."""
    data = (ROOT / name).read_bytes()
    logits = pretrained(network_input(Photo.of(decode_photo(data, name)))[None])[0]
    expected = REFERENCE[name]
    assert logits.shape == (1000,)
    assert np.argsort(-logits)[:5].tolist() == np.argsort(-expected)[:5].tolist()
    assert np.abs(logits - expected).max() <= 1e-3


def test_the_sample_photos_are_what_they_show():
    from convcli.nn.predictions import class_labels

    labels = class_labels()
    top1 = {name: labels[int(np.argmax(REFERENCE[name]))] for name in REFERENCE.files}
    assert top1["examples/photo.jpg"] == "tiger cat"
    assert top1["examples/coffee.jpg"] == "espresso"
    assert top1["tests/fixtures/nn/coffee_alpha.png"] == "espresso"
    assert top1["tests/fixtures/nn/cat_exif6.jpg"] in ("tiger cat", "Egyptian cat", "tabby")


def test_a_batch_gives_the_same_logits_as_single_images(pretrained):
    images = [network_input(Photo.of(decode_photo((ROOT / n).read_bytes(), n))) for n in ("examples/photo.jpg", "examples/rocket.jpg")]
    batch = pretrained(np.stack(images))
    for i, image in enumerate(images):
        np.testing.assert_allclose(batch[i], pretrained(image[None])[0], atol=1e-5)


def test_a_batch_split_over_threads_gives_every_image_its_own_logits():
    """Threads take shares of a batch; each image's logits are what it gets alone."""
    state = random_state(TINY, seed=11)
    model = EfficientNetLite(weights.fold_batch_norm(state, TINY), TINY, threads=3)
    x = np.random.default_rng(12).standard_normal((5, 3, 19, 19)).astype(np.float32)
    together = model(x)
    model.threads = 1
    alone = np.concatenate([model(x[i:i + 1]) for i in range(5)])
    np.testing.assert_allclose(together, alone, rtol=1e-6, atol=1e-6)


def test_threads_sharing_each_layer_of_one_image_change_nothing(monkeypatch):
    from convcli.engine import depthwise
    from convcli.nn import layers

    monkeypatch.setattr(layers, "_SHARED_WORK", 0)  # share even the tiny network's layers
    monkeypatch.setattr(depthwise, "_SHARED_WORK", 0)
    for switch in (10**9, 1):
        config = replace(TINY, channels_last_stride=switch)
        model = EfficientNetLite(weights.fold_batch_norm(random_state(config, seed=13), config), config)
        x = np.random.default_rng(14).standard_normal((1, 3, 19, 19)).astype(np.float32)
        alone = model(x)
        model.layer_threads = 3
        np.testing.assert_allclose(model(x), alone, rtol=1e-6, atol=1e-6)


def test_batches_are_shared_out_only_when_blas_runs_single_threaded(monkeypatch):
    from convcli.nn.efficientnet import default_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert default_threads() == 1
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    assert default_threads() == 1
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    assert default_threads() >= 1
    if hasattr(os, "sched_getaffinity"):
        assert default_threads() == len(os.sched_getaffinity(0))
