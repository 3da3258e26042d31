"""Integer images read by OpenCV as they are (no float copy) give the float path's result.

For the filters and sample types where :func:`convcli.engine.compiled.reads_integers`
says so, OpenCV gets the uint8 / uint16 / int16 image itself with a float
output type; the result must equal, to float rounding, the same filter on a
float copy of the image, and the float64 direct reference.
"""
from __future__ import annotations

import numpy as np
import pytest

from convcli import correlate
from convcli.engine import compiled, make_plan, strategies

pytestmark = pytest.mark.skipif(not compiled.available(), reason="OpenCV not installed")

DTYPES = ["uint8", "uint16", "int16"]
MODES = ["reflect", "symmetric", "replicate", "zeros"]


def _image(dtype: str, shape=(37, 45, 3)) -> np.ndarray:
    info = np.iinfo(dtype)
    rng = np.random.default_rng(DTYPES.index(dtype))
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def _kernels() -> dict[str, np.ndarray]:
    g = np.exp(-0.5 * (np.arange(-4, 5) / 1.5) ** 2)
    g /= g.sum()
    return {
        "box": np.full((5, 7), 1 / 35),  # OpenCV's box filter, mean
        "box-sum": np.ones((3, 5)),  # box filter without normalising
        "separable": np.outer(g, g),
        "sobel": np.outer([1.0, 2.0, 1.0], [-1.0, 0.0, 1.0]),  # filter2D, 3x3
        "random-5x5": np.random.default_rng(1).normal(size=(5, 5)),  # filter2D, read through a float copy
    }


class _Recorder:
    """Stands for the cv2 module and notes the sample type of every image a filter receives."""

    def __init__(self, cv2):
        self._cv2 = cv2
        self.sources = []
        self.calls = []

    def __getattr__(self, name):
        real = getattr(self._cv2, name)
        if name in ("filter2D", "sepFilter2D", "boxFilter"):
            def call(src, *args, **kwargs):
                self.sources.append(src.dtype.name)
                self.calls.append(name)
                return real(src, *args, **kwargs)
            return call
        return real


@pytest.fixture
def recorder(monkeypatch):
    import cv2

    spy = _Recorder(cv2)
    monkeypatch.setattr(compiled, "_cv2", lambda: spy)
    return spy


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(_kernels()))
@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_integer_images_give_the_float_paths_result(name, mode, dtype, precision, recorder):
    kernel = _kernels()[name]
    x = _image(dtype)
    opts = dict(channel_axis=-1, pad_mode=mode, method="opencv", precision=precision)
    plan = make_plan(x.shape, kernel, x_dtype=x.dtype, **opts)
    assert plan.method == "opencv"
    op = compiled.operation(kernel[None], plan.axes, plan.choice.separable)
    assert op == {"box": "box", "box-sum": "box", "separable": "separable"}.get(name, "filter")
    got = correlate(x, kernel, **opts)
    reads = compiled.reads_integers(op, x.dtype, kernel[None])
    assert reads == (dtype in compiled.INTEGER_SOURCES[op] and name != "random-5x5")
    assert set(recorder.sources) == {dtype if reads else precision}
    recorder.sources.clear()
    floats = correlate(x.astype(precision), kernel, **opts)
    assert set(recorder.sources) == {precision}
    assert got.dtype == floats.dtype == np.dtype(precision)
    scale = float(np.abs(kernel).sum()) * float(np.abs(x).max())
    eps = float(np.finfo(precision).eps)
    np.testing.assert_allclose(got, floats, rtol=0, atol=16 * eps * scale)
    reference = correlate(x.astype(np.float64), kernel, channel_axis=-1, pad_mode=mode, method="direct")
    np.testing.assert_allclose(got, reference, rtol=0, atol=64 * eps * scale)


def test_the_photo_filters_read_uint8_directly_and_large_filter2d_kernels_do_not():
    g = np.exp(-0.5 * (np.arange(-8, 9) / 2.0) ** 2)
    cases = {"box": (np.full((1, 31, 31), 1.0), True), "separable": (np.outer(g, g)[None], True),
             "filter": (np.ones((1, 3, 3)) - np.eye(3)[None], True)}
    for op, (kernel, expected) in cases.items():
        assert compiled.reads_integers(op, np.uint8, kernel) is expected, op
    assert not compiled.reads_integers("filter", np.uint8, np.random.default_rng(0).random((1, 5, 5)))
    assert not compiled.reads_integers("dft", np.uint8, np.ones((1, 15, 15)))
    assert not compiled.reads_integers("separable", np.uint16, np.outer(g, g)[None])  # measured slower
    for dtype in (np.int8, np.uint32, np.int32, np.float16, bool, np.dtype(">u2"), np.dtype("<i2").newbyteorder()):
        assert not compiled.reads_integers("box", dtype, np.ones((1, 3, 3)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_strided_integer_images_filtered_at_full_resolution_agree_with_direct(dtype, recorder):
    x = _image(dtype, (64, 70, 3))
    kernel = np.outer([1.0, 2.0, 1.0], [1.0, 0.0, -1.0])
    got = correlate(x, kernel, channel_axis=-1, stride=2, padding=1, pad_mode="reflect", method="opencv")
    expected = correlate(x.astype(np.float64), kernel, channel_axis=-1, stride=2, padding=1, pad_mode="reflect",
                         method="direct")
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6 * 4 * float(np.abs(x).max()))
    assert set(recorder.sources) == {dtype}


def test_borders_opencv_cannot_pad_convert_integers_while_padding(recorder):
    x = _image("uint8")
    kernel = np.full((3, 3), 1 / 9)
    for mode in ("circular", "constant:7"):
        got = correlate(x, kernel, channel_axis=-1, pad_mode=mode, method="opencv")
        expected = correlate(x.astype(np.float64), kernel, channel_axis=-1, pad_mode=mode, method="direct")
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
    assert set(recorder.sources) == {"float32"}


def test_a_large_uint8_box_filtered_in_bands_of_rows(recorder, monkeypatch):
    monkeypatch.setattr(compiled, "BOX_BAND_ROWS", 8)
    x = _image("uint8", (61, 40, 3))
    kernel = np.full((9, 7), 1 / 63)
    got = correlate(x, kernel, channel_axis=-1, method="opencv", pad_mode="symmetric")
    expected = correlate(x.astype(np.float64), kernel, channel_axis=-1, method="direct", pad_mode="symmetric")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    assert set(recorder.sources) == {"uint8"}


def test_integers_in_the_other_byte_order_are_converted_first(recorder):
    native = _image("uint16")
    swapped = native.astype(native.dtype.newbyteorder())
    kernel = np.full((3, 3), 1 / 9)
    got = correlate(swapped, kernel, channel_axis=-1, method="opencv")
    np.testing.assert_array_equal(got, correlate(native.astype(np.float32), kernel, channel_axis=-1, method="opencv"))
    assert set(recorder.sources) == {"float32"}


@pytest.mark.parametrize("method", ["auto", "opencv"])
def test_a_rank_one_kernel_runs_as_opencvs_separable_filter_forced_or_not(method, recorder):
    import cv2  # noqa: F401  (loaded: auto weighs OpenCV without its import, and picks it on a small image too)

    g = np.exp(-0.5 * (np.arange(-6, 7) / 2.0) ** 2)
    x = _image("uint8", (80, 90, 3)).astype(np.float32)
    got = correlate(x, np.outer(g, g), channel_axis=-1, method=method)
    assert recorder.calls == ["sepFilter2D"]
    expected = correlate(x.astype(np.float64), np.outer(g, g), channel_axis=-1, method="direct")
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)
