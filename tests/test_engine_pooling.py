"""Pooling against PyTorch: output lengths for every geometry and values on random inputs.

PyTorch is not a dependency: ``bench/make_pool_fixtures.py`` (run where
torch is installed) stored its results in ``tests/fixtures/pooling``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from convcli.engine import avg_pool, max_pool, pool_axes
from convcli.errors import ParameterError

FIXTURES = np.load(Path(__file__).parent / "fixtures" / "pooling" / "torch_pooling.npz")
CASES = json.loads(str(FIXTURES["cases"]))


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_output_lengths_are_pytorchs_for_every_geometry_and_ceil_mode(kind):
    """Every (n, window, stride, padding, dilation, ceil_mode) of the grid: PyTorch's length, or refused where it refuses."""
    table = FIXTURES[f"lengths_{kind}"]
    assert len(table) > 1000
    for n, k, s, p, d, ceil, expected in table.tolist():
        try:
            got = pool_axes((n,), k, stride=s, padding=p, dilation=d, ceil_mode=bool(ceil))[0].out
        except ParameterError:
            got = -1
        assert got == expected, f"n={n} k={k} s={s} p={p} d={d} ceil={ceil}: PyTorch {expected}, convcli {got}"


@pytest.mark.parametrize("index", range(len(CASES)))
def test_values_are_pytorchs(index):
    case = CASES[index]
    x, expected = FIXTURES[f"case{index}_x"], FIXTURES[f"case{index}_y"]
    common = dict(stride=case["stride"], padding=case["padding"], ceil_mode=case["ceil_mode"], channel_axis=1,
                  spatial_ndim=case["nd"])
    if case["kind"] == "max":
        got = max_pool(x, case["window"], dilation=case["dilation"], **common)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected.astype(np.float32))  # a maximum is one of the samples
    else:
        got = avg_pool(x, case["window"], count_include_pad=case["count_include_pad"], **common)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-6)


def test_the_fixtures_cover_the_rules():
    kinds = {(c["kind"], c["nd"], c["ceil_mode"], any(c["padding"])) for c in CASES}
    assert len(kinds) == 24  # max and avg, 1-3 D, ceil or floor, padded or not
    assert any(np.isnan(FIXTURES[f"case{i}_x"]).any() for i, c in enumerate(CASES) if c["kind"] == "max")
    assert any(max(c["dilation"]) > 1 for c in CASES)
    assert any(not c["count_include_pad"] and any(c["padding"]) for c in CASES if c["kind"] == "avg")


def test_max_keeps_the_type_and_average_is_float():
    x = np.arange(24, dtype=np.uint8).reshape(4, 6)
    np.testing.assert_array_equal(max_pool(x, 2), [[7, 9, 11], [19, 21, 23]])
    assert max_pool(x, 2).dtype == np.uint8
    assert max_pool(x > 11, 2).dtype == bool
    np.testing.assert_array_equal(avg_pool(x, 2), [[3.5, 5.5, 7.5], [15.5, 17.5, 19.5]])
    assert avg_pool(x, 2).dtype == np.float32
    assert avg_pool(x.astype(np.float64), 2).dtype == np.float64


def test_padding_never_wins_a_maximum_of_integers():
    x = np.full((3, 3), -120, dtype=np.int8)
    np.testing.assert_array_equal(max_pool(x, 2, padding=1), np.full((2, 2), -120))


@pytest.mark.parametrize("pool", [max_pool, avg_pool])
def test_channels_last_and_channels_first_agree(pool):
    rng = np.random.default_rng(0)
    chw = rng.standard_normal((3, 17, 12)).astype(np.float32)
    hwc = np.ascontiguousarray(np.moveaxis(chw, 0, -1))
    first = pool(chw, 3, stride=2, padding=1, ceil_mode=True, channel_axis=0)
    last = pool(hwc, 3, stride=2, padding=1, ceil_mode=True, channel_axis=-1)
    np.testing.assert_array_equal(np.moveaxis(first, 0, -1), last)


def test_a_view_of_the_input_is_pooled_as_the_array_it_shows():
    x = np.random.default_rng(1).standard_normal((40, 30, 3)).astype(np.float32)
    view = x[::-1, 1::2]
    np.testing.assert_array_equal(max_pool(view, 2, channel_axis=-1),
                                  max_pool(np.ascontiguousarray(view), 2, channel_axis=-1))


@pytest.mark.parametrize("call, subject", [
    (lambda x: max_pool(x, 3, padding=2), "padding"),
    (lambda x: avg_pool(x, 2, padding=(0, 2)), "padding"),
    (lambda x: max_pool(x, 9), "padding"),
    (lambda x: max_pool(x, 0), "window"),
    (lambda x: max_pool(x, 2, stride=0), "stride"),
])
def test_geometries_pytorch_refuses_are_refused_naming_the_parameter(call, subject):
    with pytest.raises(ParameterError) as caught:
        call(np.zeros((8, 8), np.float32))
    assert caught.value.subject == subject


def test_average_pooling_has_no_dilation():
    from convcli.engine import plan_pool

    with pytest.raises(ParameterError) as caught:
        plan_pool((8, 8), "avg", 2, dilation=2)
    assert caught.value.subject == "dilation"
