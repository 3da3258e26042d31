"""Kernel files and inline matrices: every format parses to the weights written, bad ones fail clearly."""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import scipy.ndimage as ndi

from convcli.errors import UsageError
from convcli.kernels import Kernel, resolve, resolve_all

SOBEL_X = np.array([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])


def test_npy_file(tmp_path):
    path = tmp_path / "k.npy"
    np.save(path, SOBEL_X.astype(np.int16))
    k = resolve(str(path), ndim=2)
    assert k.name == "file:k.npy"
    assert k.weights[0].dtype == np.float64
    np.testing.assert_array_equal(k.weights[0], SOBEL_X)


def test_text_file_with_comments_commas_and_tabs(tmp_path):
    path = tmp_path / "edge.txt"
    path.write_text("# a Sobel kernel\n-1, 0, 1   # first row\n-2\t0\t2\n\n-1 0 1\n".replace("\n\n", "\n"))
    np.testing.assert_array_equal(resolve(str(path), ndim=2).weights[0], SOBEL_X)


def test_text_file_blank_lines_separate_3d_slices(tmp_path):
    w = np.arange(18.0).reshape(2, 3, 3) - 8
    text = "\n\n".join("\n".join(" ".join(f"{v:g}" for v in row) for row in sl) for sl in w)
    path = tmp_path / "vol.txt"
    path.write_text(f"# two slices\n{text}\n")
    np.testing.assert_array_equal(resolve(str(path), ndim=3).weights[0], w)


def test_single_row_text_serves_1d_and_2d(tmp_path):
    path = tmp_path / "row.txt"
    path.write_text("1 2 1\n")
    assert resolve(str(path), ndim=1).weights[0].shape == (3,)
    assert resolve(str(path), ndim=2).weights[0].shape == (1, 3)


def test_inline_matrix():
    k = resolve("[[1,0,-1],[2,0,-2],[1,0,-1]]", ndim=2)
    assert k.name == "inline"
    np.testing.assert_array_equal(k.weights[0], -SOBEL_X)
    assert resolve("[1, 2.5, -1e-1]", ndim=1).weights[0].tolist() == [1, 2.5, -0.1]


def test_inline_never_evaluates_code():
    with pytest.raises(UsageError, match="not a matrix of numbers"):
        resolve("[__import__('os').getcwd()]", ndim=1)


@pytest.mark.parametrize("ndim", [1, 2, 3])
def test_identity(ndim):
    k = resolve("identity", ndim=ndim)
    assert k.weights[0].shape == (1,) * ndim and k.weights[0].sum() == 1


@pytest.mark.parametrize(
    "spec, ndim, message",
    [
        ("[[1,2,3],[4,5]]", 2, "row 2 has 2 values, but row 1 has 3"),
        ("[[1,2],[3,NaN]]", 2, "NaN is not a finite number"),
        ("[[1,2],[3,Infinity]]", 2, "Infinity is not a finite number"),
        ("[]", 1, "is empty"),
        ('[1, "a"]', 1, "not a number"),
        ("[1, true]", 1, "not a number"),
        ("[1,2,1]", 2, r"shape \(3,\) \(1D\) but the input is an image"),
        ("[[[1]],[[2]]]", 2, "3D"),
        ("   ", 1, "empty"),
    ],
)
def test_bad_inline(spec, ndim, message):
    with pytest.raises(UsageError, match=message) as info:
        resolve(spec, ndim=ndim)
    assert info.value.subject in (spec, repr(spec))


@pytest.mark.parametrize(
    "text, message",
    [
        ("1 2 3\n4 5\n", r"row 2 \(line 2\) has 2 numbers, but row 1 has 3"),
        ("1 2\n3 x\n", "line 2, column 2: 'x' is not a number"),
        ("1 nan\n", "not a finite number"),
        ("# only a comment\n\n", "empty"),
        ("1 2\n3 4\n\n1 2\n", "slice 2 has 1 rows, but slice 1 has 2"),
    ],
)
def test_bad_text_file(tmp_path, text, message):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as info:
        resolve(str(path), ndim=2)
    assert info.value.subject == str(path)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.npy"
    with pytest.raises(UsageError, match="no such kernel file") as info:
        resolve(str(path), ndim=2)
    assert info.value.subject == str(path)


def test_npy_with_wrong_contents(tmp_path):
    path = tmp_path / "obj.npy"
    np.save(path, np.array([1 + 2j, 3]))
    with pytest.raises(UsageError, match="real numbers"):
        resolve(str(path), ndim=1)
    path.write_bytes(b"not an npy file")
    with pytest.raises(UsageError, match="not a readable .npy"):
        resolve(str(path), ndim=1)
    np.save(path, np.array([[np.nan, 1.0]]))
    with pytest.raises(UsageError, match="finite"):
        resolve(str(path), ndim=2)


def test_kernel_is_immutable_and_float64():
    k = resolve("[[1, 2], [3, 4]]", ndim=2)
    with pytest.raises(ValueError):
        k.weights[0][0, 0] = 9
    assert isinstance(k, Kernel) and k.weights[0].dtype == np.float64


def test_resolve_all_keeps_order():
    ks = resolve_all(["identity", "[[1, 2, 1]]"], ndim=2)
    assert [k.name for k in ks] == ["identity", "inline"]


def test_normalize_divides_by_sum_and_refuses_zero_sum():
    k = resolve("[[1, 2, 1]]", ndim=2, normalize=True)
    np.testing.assert_allclose(k.weights[0], [[0.25, 0.5, 0.25]])
    with pytest.raises(UsageError, match="--range offset"):
        resolve("[[1, 0, -1]]", ndim=2, normalize=True)


@pytest.mark.parametrize("pad_mode, scipy_mode", [("symmetric", "reflect"), ("reflect", "mirror"),
                                                   ("replicate", "nearest"), ("circular", "wrap")])
def test_apply_matches_scipy_correlate(pad_mode, scipy_mode):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(9, 11))
    k = resolve("[[1,0,-1],[2,0,-3],[1,5,-1]]", ndim=2)
    got = k.apply(x, pad_mode=pad_mode)
    np.testing.assert_allclose(got, ndi.correlate(x, k.weights[0], mode=scipy_mode), atol=1e-12)
    flipped = k.apply(x, pad_mode=pad_mode, convolve=True)
    np.testing.assert_allclose(flipped, ndi.convolve(x, k.weights[0], mode=scipy_mode), atol=1e-12)


def test_json_file_list_and_object(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(SOBEL_X.tolist()))
    np.testing.assert_array_equal(resolve(str(tmp_path / "a.json"), ndim=2).weights[0], SOBEL_X)
    (tmp_path / "b.json").write_text(json.dumps({"weights": SOBEL_X.tolist(), "range": "offset"}))
    assert resolve(str(tmp_path / "b.json"), ndim=2).range_default == "offset"


# ---- the quick parser of plain numbers agrees with the careful one -------------------------
_PLAIN_TOKENS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False, width=64).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.text(alphabet="0123456789+-.eE", min_size=1, max_size=6),  # mostly not numbers
    st.sampled_from(["1e999", "-1e999", ".5", "5.", "+.5e-3", "1e", "--1", "1.2.3", "e5"]),
)


def _token_by_token(lines):
    """The careful parser's reading of one slice: the array, or None where it refuses the rows."""
    from convcli.kernels import files

    try:
        rows = [files._numbers(line, n, "k.txt") for n, line in lines]
    except UsageError:
        return None
    return np.array(rows, dtype=np.float64) if len({len(r) for r in rows}) == 1 else None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_PLAIN_TOKENS, min_size=1, max_size=3), min_size=1, max_size=5),
       st.sampled_from([" ", "\t", ", ", ";"]))
def test_plain_rows_are_read_as_the_token_parser_reads_them(rows, sep):
    from convcli.kernels import files

    lines = [(i + 1, sep.join(row)) for i, row in enumerate(rows)]
    quick, careful = files._plain_rows(lines), _token_by_token(lines)
    if careful is None:
        assert quick is None  # refused rows reach the careful parser, which names line and column
    elif quick is not None:
        np.testing.assert_array_equal(quick, careful)


def test_a_long_impulse_response_file_reads_exactly(tmp_path):
    taps = np.random.default_rng(4).standard_normal(5000)
    path = tmp_path / "ir.txt"
    path.write_text("# measured\n" + "\n".join(repr(float(v)) for v in taps) + "\n")
    np.testing.assert_array_equal(resolve(str(path), ndim=1).weights[0], taps)
    path.write_text("\n".join(repr(float(v)) for v in taps[:10]) + "\n0.5x\n")
    with pytest.raises(UsageError, match=r"line 11, column 1: '0.5x' is not a number"):
        resolve(str(path), ndim=1)
