"""``--axes``: a kernel of fewer dimensions along chosen axes, checked against scipy.ndimage's ``axes=``.

Our ``reflect`` border is scipy's ``mirror``; a kernel gets one axis per
name, in the data's order (t, z, y, x) whatever the order named, as scipy
lays the weights' axes over ``axes``.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from conftest import convcli
from convcli.io import Signal
from convcli.pipeline.chain import filter_signal
from convcli.pipeline.options import FilterOptions


def run(*args):
    return convcli("filter", *map(str, args))


@pytest.fixture
def volume(tmp_path):
    x = np.random.default_rng(5).random((6, 9, 11))
    np.save(tmp_path / "v.npy", x)
    return tmp_path / "v.npy", x


def test_a_1d_gaussian_along_x_of_an_image(tmp_path):
    image = np.random.default_rng(1).random((13, 17))
    np.save(tmp_path / "i.npy", image)
    result = run(tmp_path / "i.npy", "-k", "gaussian:sigma=2", "--axes", "x", "-o", tmp_path / "o.npy")
    assert result.exit_code == 0, result.output
    expected = ndimage.gaussian_filter(image, 2, mode="mirror", axes=(1,))
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("names,axes", [("y,x", (1, 2)), ("z,x", (0, 2)), ("x,y", (1, 2)), ("x,z", (0, 2))])
def test_a_2d_kernel_on_every_slice_of_the_named_axes(volume, tmp_path, names, axes):
    path, x = volume
    kernel = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]])  # asymmetric: the order of the axes shows
    inline = "[[1,-2,0.5],[3,0,-1]]"
    result = run(path, "-k", inline, "--axes", names, "-o", tmp_path / "o.npy")
    assert result.exit_code == 0, result.output
    # An even length: our "same" pads one less before than after, scipy's origin -1 does the same.
    expected = ndimage.correlate(x, kernel, mode="mirror", axes=axes, origin=(-1, 0))
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), expected, rtol=0, atol=1e-12)


def test_a_named_edge_kernel_on_the_slices_of_a_volume(volume, tmp_path):
    path, x = volume
    assert run(path, "-k", "sobel", "--axes", "y,x", "-o", tmp_path / "o.npy").exit_code == 0
    # The 2-D gradient magnitude of each slice, slice by slice.
    expected = np.stack([np.hypot(ndimage.sobel(s, axis=0, mode="mirror"), ndimage.sobel(s, axis=1, mode="mirror"))
                         for s in x])
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("names", ["z,x", "x,z"])
def test_a_named_kernel_keeps_its_meaning_on_the_named_axes(volume, tmp_path, names):
    # sobel-x differentiates along the kernel's last axis: x, smoothing along the other named one (z).
    path, x = volume
    assert run(path, "-k", "sobel-x", "--axes", names, "-o", tmp_path / "o.npy").exit_code == 0
    derivative = ndimage.correlate1d(x, [-1.0, 0.0, 1.0], axis=2, mode="mirror")
    expected = ndimage.correlate1d(derivative, [1.0, 2.0, 1.0], axis=0, mode="mirror")
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), expected, rtol=0, atol=1e-12)


def test_stride_and_dilation_apply_to_the_named_axes_only(volume, tmp_path):
    path, x = volume
    result = run(path, "-k", "[1,2,4]", "--axes", "z", "--stride", 2, "--dilation", 2, "--padding", "valid",
                 "-o", tmp_path / "o.npy")
    assert result.exit_code == 0, result.output
    out = np.load(tmp_path / "o.npy")
    expected = x[0:2:2] + 2 * x[2:4:2] + 4 * x[4:6:2]  # valid, dilation 2, stride 2 along z
    assert out.shape == (1, 9, 11)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_stride_along_x_updates_only_the_x_resolution(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png", dpi=(300, 150))
    result = run(tmp_path / "in.png", "-k", "box:3", "--axes", "x", "--stride", 2, "-o", tmp_path / "out.png")
    assert result.exit_code == 0, result.output
    out = Image.open(tmp_path / "out.png")
    assert out.size == (6, 8)
    assert tuple(round(v) for v in out.info["dpi"]) == (150, 150)
    # "same" with stride 2 on 12 samples pads 0 before and 1 after: output i is centred on input 2i + 1.
    expected = ndimage.correlate1d(rgb.astype(float), np.ones(3) / 3, axis=1, mode="mirror")[:, 1::2]
    assert np.abs(np.asarray(out).astype(float) - expected).max() <= 0.5 + 1e-4


def test_frames_are_an_axis_only_when_named(volume):
    x = np.random.default_rng(6).random((5, 7, 8))
    signal = Signal(x.copy(), kind="image", frames=True)
    along_t = filter_signal(signal, FilterOptions(kernels=("[1,2,3]",), axes=("t",))).signal.data
    np.testing.assert_allclose(along_t, ndimage.correlate1d(x, [1, 2, 3], axis=0, mode="mirror"), atol=1e-12)
    # Without t, each frame on its own: a 2-D kernel on every frame.
    each = filter_signal(signal, FilterOptions(kernels=("[[1,2],[3,4]]",))).signal.data
    expected = ndimage.correlate(x, np.array([[1.0, 2], [3, 4]]), mode="mirror", axes=(1, 2), origin=(-1, -1))
    np.testing.assert_allclose(each, expected, atol=1e-12)
    # t, y, x: a 3-D kernel reaches across frames.
    across = filter_signal(signal, FilterOptions(kernels=("box:3",), axes=("t", "y", "x"))).signal.data
    np.testing.assert_allclose(across, ndimage.uniform_filter(x, 3, mode="mirror"), atol=1e-12)


def test_colour_channels_are_never_an_axis(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    y = run(tmp_path / "in.png", "-k", "[1,0,-1]", "--range", "offset", "--axes", "y", "-o", tmp_path / "y.png")
    assert y.exit_code == 0, y.output
    expected = ndimage.correlate1d(rgb.astype(float), [1, 0, -1], axis=0, mode="mirror") + 128
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "y.png")), np.clip(np.rint(expected), 0, 255))


@pytest.mark.parametrize("axes,words", [
    ("z", "no z axis"), ("t", "no frames"), ("w", "must be one of x, y, z, t"), ("x,x", "names an axis twice"),
    ("", "must be one of"),
])
def test_axes_the_input_lacks_are_refused_in_one_line(tmp_path, axes, words):
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(tmp_path / "in.png")
    result = run(tmp_path / "in.png", "-k", "box:3", "--axes", axes, "-o", tmp_path / "o.png")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("convcli: error: --axes: ")
    assert words in result.stderr and not (tmp_path / "o.png").exists()


def test_a_kernel_must_fit_the_named_axes(tmp_path, volume):
    path, _ = volume
    result = run(path, "-k", "[[1,2],[3,4]]", "--axes", "x", "-o", tmp_path / "o.npy")
    assert result.exit_code == 2 and "1D" in result.stderr and not (tmp_path / "o.npy").exists()


def test_explain_names_the_axes(volume):
    path, _ = volume
    text = run(path, "-k", "sobel-x", "--axes", "x,z", "--explain").stdout
    assert "axes: z, x" in text and "padding axis z: 1 before, 1 after" in text
    assert "output shape: (6, 9, 11)" in text
