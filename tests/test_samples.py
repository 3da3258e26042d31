"""to_samples: the one place floats become output samples (round half to even, clip, never wrap)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from convcli.errors import DataError, ParameterError
from convcli.io.samples import sample_range, to_samples

INT_TYPES = [np.uint8, np.uint16, np.int16, np.int32, np.uint32, np.int8]


def test_clip_rounds_half_to_even_and_counts():
    values = np.array([-3.0, -0.5, 0.5, 1.5, 2.5, 254.5, 255.5, 300.0])
    out, clipped = to_samples(values, np.uint8, "clip")
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 0, 2, 2, 254, 255, 255]
    # -3 and 300 are out of range; -0.5 rounds to -0.0 and 255.5 rounds to 256 (clipped).
    assert clipped == 3


def test_saturated_white_never_wraps():
    # An un-normalised 3x3 box on an all-255 image gives 2295: must be 255, never 2295 % 256 = 247.
    out, clipped = to_samples(np.full((4, 4), 2295.0, np.float32), np.uint8, "clip")
    assert (out == 255).all() and clipped == 16
    out, clipped = to_samples(np.full(3, 9 * 65535.0), np.uint16, "clip")
    assert (out == 65535).all() and clipped == 3


def test_abs_and_offset():
    v = np.array([-10.0, 10.0, -200.0])
    assert to_samples(v, np.uint8, "abs")[0].tolist() == [10, 10, 200]
    out, clipped = to_samples(v, np.uint8, "offset")
    assert out.tolist() == [118, 138, 0] and clipped == 1
    assert to_samples(np.array([-1.0, 1.0]), np.uint16, "offset")[0].tolist() == [32767, 32769]
    # Signed types have their middle at zero: offset changes nothing.
    assert to_samples(np.array([-5.0, 5.0]), np.int16, "offset")[0].tolist() == [-5, 5]


@pytest.mark.parametrize("dtype", INT_TYPES)
def test_rescale_spans_the_full_range(dtype):
    v = np.linspace(-7.0, 3.0, 11)
    out, clipped = to_samples(v, dtype, "rescale")
    lo, hi = sample_range(dtype)
    assert out.min() == lo and out.max() == hi and clipped == 0
    assert np.all(np.diff(out.astype(np.int64)) >= 0)  # monotone


def test_rescale_of_a_constant_keeps_the_value():
    out, clipped = to_samples(np.full(5, 7.0), np.uint8, "rescale")
    assert out.tolist() == [7] * 5 and clipped == 0


def test_float_types_pass_values_through():
    v = np.array([np.nan, -1e30, 0.25, np.inf], dtype=np.float64)
    for mode in ("clip", "abs", "offset", "rescale"):
        out, clipped = to_samples(v, np.float64, mode)
        np.testing.assert_array_equal(out, v)
        assert clipped == 0
    out, _ = to_samples(v, np.float32, "clip")
    assert out.dtype == np.float32


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_never_reaches_integers(bad):
    with pytest.raises(DataError, match="1 non-finite sample"):
        to_samples(np.array([1.0, bad, 2.0]), np.uint8, "clip")
    with pytest.raises(DataError, match="non-finite"):
        to_samples(np.array([1.0, bad]), np.int16, "rescale")


def test_unknown_mode_names_the_option():
    with pytest.raises(ParameterError) as err:
        to_samples(np.zeros(2), np.uint8, "wrap")
    assert err.value.subject == "--range"


def test_bits_narrow_the_range():
    # 24-bit PCM kept in int32: the range is that of 24 bits.
    assert sample_range(np.int32, 24) == (-(2**23), 2**23 - 1)
    assert sample_range(np.uint16, 12) == (0, 4095)
    out, clipped = to_samples(np.array([2.0**23, -(2.0**23) - 5, 12.5]), np.int32, "clip", bits=24)
    assert out.tolist() == [2**23 - 1, -(2**23), 12] and clipped == 2


def test_wide_integer_types_round_exactly():
    v = np.array([2.0**31 - 1.5, -(2.0**31) + 0.5, 1e12])
    out, clipped = to_samples(v, np.int32, "clip")
    assert out.tolist() == [2**31 - 2, -(2**31) + 0, 2**31 - 1] and clipped == 1
    out, clipped = to_samples(np.array([1e30, -1e30]), np.int64, "clip")
    assert out[0] > 0 and out[1] == np.iinfo(np.int64).min and clipped == 2


@given(
    hnp.arrays(np.float64, st.integers(1, 40), elements=st.floats(-1e6, 1e6, allow_nan=False)),
    st.sampled_from(INT_TYPES),
    st.sampled_from(["clip", "abs", "offset"]),
)
def test_matches_the_definition(values, dtype, mode):
    """Clip/abs/offset == rint of the shifted value, clipped, with the out-of-range count."""
    lo, hi = sample_range(dtype)
    shifted = {"clip": values, "abs": np.abs(values), "offset": values + (lo + hi + 1) / 2}[mode]
    rounded = np.rint(shifted)
    out, clipped = to_samples(values, dtype, mode)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out.astype(np.float64), np.clip(rounded, lo, hi))
    assert clipped == int(np.sum((rounded < lo) | (rounded > hi)))


@pytest.mark.parametrize("dtype", INT_TYPES)
@pytest.mark.parametrize("mode", ["clip", "offset"])
def test_samples_already_of_the_output_type_are_kept_as_they_are(dtype, mode):
    """A median's result is the input's samples: clip keeps every one; offset still shifts them."""
    info = np.iinfo(dtype)
    values = np.array([info.min, 0, info.max], dtype=dtype)
    out, clipped = to_samples(values, dtype, mode)
    expected = np.clip(np.rint(values.astype(np.float64) + (0 if mode == "clip" else (info.min + info.max + 1) / 2)),
                       info.min, info.max)
    np.testing.assert_array_equal(out.astype(np.float64), expected)
    assert out.dtype == np.dtype(dtype) and clipped == int(mode == "offset" and info.min == 0)


@given(hnp.arrays(np.float32, st.integers(2, 40), elements=st.floats(-1e4, 1e4, width=32)),
       st.integers(1, 39), st.sampled_from(["uint8", "uint16", "int16"]), st.sampled_from([None, "8", "16"]))
def test_rescale_in_parts_with_the_whole_bounds_is_the_whole_rescaled(values, cut, dtype, depth):
    # A chunked run stretches each chunk by the whole result's min and max: the parts join into the whole.
    from convcli.io.samples import to_depth

    cut = min(cut, values.size - 1)
    bounds = (float(values.min()), float(values.max()))
    if depth is None:
        whole = to_samples(values, dtype, "rescale")
        parts = [to_samples(p, dtype, "rescale", bounds=bounds) for p in (values[:cut], values[cut:])]
    else:
        whole = to_depth(values, dtype, depth, "rescale")
        parts = [to_depth(p, dtype, depth, "rescale", bounds=bounds) for p in (values[:cut], values[cut:])]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole[0])
    assert sum(p[1] for p in parts) == whole[1]
