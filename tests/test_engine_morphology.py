"""Greyscale morphology: scipy.ndimage's operations exactly, and the identities morphology rests on."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, strategies as st

from convcli.engine import OPERATIONS, morphology_filter, rank_filter

SCIPY = {"erode": ndi.grey_erosion, "dilate": ndi.grey_dilation, "open": ndi.grey_opening,
         "close": ndi.grey_closing, "tophat": ndi.white_tophat, "blackhat": ndi.black_tophat,
         "gradient": ndi.morphological_gradient}
SCIPY_MODES = {"reflect": "mirror", "symmetric": "reflect", "replicate": "nearest", "circular": "wrap",
               "zeros": "constant"}


@st.composite
def images(draw, odd=True):
    nd = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(2, {1: 16, 2: 10, 3: 6}[nd]), min_size=nd, max_size=nd)))
    sizes = [1, 3, 5] if odd else [1, 2, 3, 4]
    fshape = tuple(draw(st.lists(st.sampled_from(sizes), min_size=nd, max_size=nd)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    footprint = rng.random(fshape) < 0.7
    footprint.flat[rng.integers(footprint.size)] = True
    dtype = draw(st.sampled_from(["float32", "float64", "uint8", "int16"]))
    x = (rng.random(shape) * 100).astype(dtype)
    return x, footprint


@given(images(odd=False), st.sampled_from(OPERATIONS), st.sampled_from(sorted(SCIPY_MODES)))
def test_every_operation_equals_scipys_in_every_mode(case, operation, mode):
    x, footprint = case
    # scipy's differences wrap in the input's type; ours are float: scipy runs in float64 here
    wide = x.astype(np.float64)
    # scipy centres an even window half a sample before where the "same" rule does: origin -1 there
    origin = [(k - 1) // 2 - k // 2 for k in footprint.shape]
    if x.ndim == 1:  # scipy's fast 1-D rank path ignores footprint holes: ask for a 1xN image
        expected = SCIPY[operation](wide[None], footprint=footprint[None], mode=SCIPY_MODES[mode],
                                    origin=[0] + origin)[0]
    else:
        expected = SCIPY[operation](wide, footprint=footprint, mode=SCIPY_MODES[mode], origin=origin)
    got = morphology_filter(x, operation, footprint, pad_mode=mode)
    np.testing.assert_array_equal(got, expected.astype(got.dtype))  # a float32 difference, correctly rounded
    if operation in ("erode", "dilate", "open", "close"):
        assert got.dtype == x.dtype
    else:
        assert got.dtype == (np.float64 if x.dtype == np.float64 else np.float32)


@given(images(odd=False), st.sampled_from(["replicate", "reflect", "symmetric", "circular", "zeros"]))
def test_opening_is_anti_extensive_and_idempotent_closing_extensive_and_idempotent(case, mode):
    x, footprint = case
    opened = morphology_filter(x, "open", footprint, pad_mode=mode)
    closed = morphology_filter(x, "close", footprint, pad_mode=mode)
    # Both hold wherever the second step reads no sample of the first that a border rule made up:
    # everywhere for a circular signal (a period of an endless one), elsewhere away from the ends.
    inner = tuple(slice(k - 1, n - k + 1) if mode != "circular" else slice(None)
                  for n, k in zip(x.shape, footprint.shape))
    assert np.all(opened[inner] <= x[inner])
    assert np.all(closed[inner] >= x[inner])
    if mode == "circular":
        np.testing.assert_array_equal(morphology_filter(opened, "open", footprint, pad_mode=mode), opened)
        np.testing.assert_array_equal(morphology_filter(closed, "close", footprint, pad_mode=mode), closed)


@given(images(odd=False), st.sampled_from(sorted(SCIPY_MODES)))
def test_erosion_by_a_flat_element_is_the_minimum_filter_and_dual_to_dilation(case, mode):
    x, footprint = case
    # duality reflects the footprint about the output sample: a box of odd length has one in its middle
    footprint = np.pad(footprint, [(0, 1 - k % 2) for k in footprint.shape])
    x = x.astype(np.float64) - 50  # negation must stay in the type
    eroded = morphology_filter(x, "erode", footprint, pad_mode=mode)
    np.testing.assert_array_equal(eroded, rank_filter(x, footprint, 0, pad_mode=mode))
    reflected = footprint[(slice(None, None, -1),) * footprint.ndim]
    np.testing.assert_array_equal(eroded, -morphology_filter(-x, "dilate", reflected, pad_mode=mode))


@given(images(odd=False))
def test_the_differences_are_their_definitions(case):
    x, footprint = case
    op = lambda name: morphology_filter(x, name, footprint)  # noqa: E731
    work = op("tophat").dtype  # float32, or float64 for float64 samples
    np.testing.assert_array_equal(op("tophat"), np.subtract(x, op("open"), dtype=work))
    np.testing.assert_array_equal(op("blackhat"), np.subtract(op("close"), x, dtype=work))
    np.testing.assert_array_equal(op("gradient"), np.subtract(op("dilate"), op("erode"), dtype=work))


@pytest.mark.parametrize("operation", OPERATIONS)
def test_a_binary_image_stays_binary(operation):
    rng = np.random.default_rng(1)
    x = ndi.binary_dilation(rng.random((40, 50)) < 0.05, iterations=2)
    disk = np.array([[0, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]], bool)
    got = morphology_filter(x, operation, disk, pad_mode="zeros")
    assert got.dtype == bool
    # a 4x4 disk: origin -1 as above; scipy's gradient subtracts, which bool refuses: 0 and 1 as uint8
    expected = SCIPY[operation](x.astype(np.uint8), footprint=disk, mode="constant", origin=-1)
    np.testing.assert_array_equal(got, expected != 0)


def test_open_removes_a_bright_peak_narrower_than_the_element_and_keeps_wider_ones():
    x = np.zeros((20, 20), np.uint8)
    x[5, 5] = 200  # salt
    x[10:15, 10:15] = 90  # a 5x5 plateau
    opened = morphology_filter(x, "open", np.ones((3, 3), bool))
    assert opened[5, 5] == 0
    np.testing.assert_array_equal(opened[10:15, 10:15], 90)
    np.testing.assert_array_equal(morphology_filter(x, "tophat", np.ones((3, 3), bool))[5, 5], 200)


@pytest.mark.parametrize("operation", OPERATIONS)
def test_stride_and_padding_take_the_outputs_of_the_whole_result(operation):
    """A two-step operation's second step takes the geometry; its grid is a single window's."""
    x = (np.random.default_rng(2).random((31, 26)) * 255).astype(np.uint8)
    box = np.ones((3, 5), bool)
    whole = morphology_filter(x, operation, box, pad_mode="replicate")
    strided = morphology_filter(x, operation, box, pad_mode="replicate", stride=(3, 2), padding=(1, 2))
    np.testing.assert_array_equal(strided, whole[::3, ::2])
    valid = morphology_filter(x, operation, box, pad_mode="replicate", padding="valid")
    np.testing.assert_array_equal(valid, whole[1:-1, 2:-2])


def test_nan_spreads_through_both_steps_of_an_opening():
    x = np.zeros((15, 15), np.float32)
    x[7, 7] = np.nan
    got = morphology_filter(x, "open", np.ones((3, 3), bool))
    assert np.isnan(got[5:10, 5:10]).all()  # erosion spreads it 1 each way, dilation 1 more
    assert not np.isnan(got[:4]).any() and not np.isnan(got[11:]).any()
