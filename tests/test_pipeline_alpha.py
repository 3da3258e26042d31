"""Transparency as users meet it: an RGBA image filtered with every kind of kernel, through the real CLI.

The promise (README, "Transparency"): under the default ``--alpha auto`` an
opaque pixel whose kernel window holds only opaque pixels gets exactly what
the same image without alpha gets, for every kernel; colour hidden under
transparent pixels never shows; smoothing kernels soften alpha and every
other kernel leaves it as it was.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from conftest import convcli

# Our border modes and scipy.ndimage's names for the same rules.
SCIPY_MODE = {"reflect": "mirror", "symmetric": "reflect", "replicate": "nearest", "circular": "wrap"}


def run(*args):
    return convcli("filter", *map(str, args))


def png(path, array, mode=None):
    Image.fromarray(array, mode).save(path)
    return path


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def matrix(w: np.ndarray) -> str:
    return "[" + ",".join("[" + ",".join(repr(float(v)) for v in row) + "]" for row in w) + "]"


@pytest.fixture
def photo():
    """A busy 24x20 RGB picture: every kernel has something to respond to."""
    rng = np.random.default_rng(7)
    smooth = ndimage.gaussian_filter(rng.random((24, 20, 3)) * 255, (2, 2, 0))
    return np.clip(smooth + rng.integers(-30, 30, (24, 20, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("kernel", ["sobel", "sobel-x", "laplacian", "emboss", "log:sigma=1", "sharpen",
                                    "gaussian:sigma=1.5", "box:4", "[[1,-2],[3,-1]]", "kirsch"])
def test_an_opaque_rgba_image_filters_exactly_as_without_alpha(tmp_path, photo, kernel):
    # A screenshot: RGBA with alpha 255 everywhere.  Edge kernels used to turn it transparent
    # black (sobel) or flat (128,128,128,128) (sobel-x, laplacian, emboss).
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    a = run(png(tmp_path / "shot.png", rgba), "-k", kernel, "-o", tmp_path / "a.png")
    b = run(png(tmp_path / "rgb.png", photo), "-k", kernel, "-o", tmp_path / "b.png")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    out = pixels(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "RGBA"
    np.testing.assert_array_equal(out[..., :3], pixels(tmp_path / "b.png"))
    assert np.all(out[..., 3] == 255)
    assert "alpha" not in a.stderr  # nothing about alpha changed: nothing to say


def test_opaque_rgba_with_a_constant_border_is_opaque_black_beyond_the_edge(tmp_path, photo):
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    for pad in ("zeros", "constant:200"):
        a = run(png(tmp_path / "shot.png", rgba), "-k", "box:5", "--pad-mode", pad, "-o", tmp_path / "a.png")
        b = run(png(tmp_path / "rgb.png", photo), "-k", "box:5", "--pad-mode", pad, "-o", tmp_path / "b.png")
        assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
        out = pixels(tmp_path / "a.png")
        np.testing.assert_array_equal(out[..., :3], pixels(tmp_path / "b.png"))
        assert np.all(out[..., 3] == 255), pad


@st.composite
def scenes(draw):
    """A small RGBA image (opaque, transparent and some half-transparent pixels), a kernel and a border."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    h, w = draw(st.integers(4, 11)), draw(st.integers(4, 11))
    kh, kw = draw(st.sampled_from([1, 3, 5])), draw(st.sampled_from([1, 3, 5]))
    signed = draw(st.booleans())
    weights = np.round(rng.uniform(-1 if signed else 0, 1, (kh, kw)), 2)
    if not signed and weights.sum() <= 0:
        weights[kh // 2, kw // 2] = 1.0
    alpha = rng.choice([0, 255, 255, 255, int(rng.integers(1, 255))], (h, w)).astype(np.uint8)
    colour = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return colour, alpha, weights, draw(st.sampled_from(sorted(SCIPY_MODE))), seed


@settings(max_examples=40)
@given(scenes())
def test_auto_alpha_for_any_kernel_and_any_mask(scene):
    colour, alpha, weights, pad, seed = scene
    rgba = np.dstack([colour, alpha])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        args = ("-k", matrix(weights), "--pad-mode", pad)
        assert run(png(tmp / "in.png", rgba), *args, "-o", tmp / "a.png").exit_code == 0
        assert run(png(tmp / "rgb.png", colour), *args, "-o", tmp / "b.png").exit_code == 0
        hidden = rgba.copy()
        hidden[alpha == 0, :3] = np.random.default_rng(seed + 1).integers(0, 256, (int((alpha == 0).sum()), 3))
        assert run(png(tmp / "hidden.png", hidden), *args, "-o", tmp / "c.png").exit_code == 0
        out, plain, other = pixels(tmp / "a.png"), pixels(tmp / "b.png"), pixels(tmp / "c.png")
    # Opaque pixels whose window holds only opaque pixels: the no-alpha picture, to the last bit.
    reach = (weights != 0).astype(float)
    touched = ndimage.correlate((alpha < 255).astype(float), reach, mode=SCIPY_MODE[pad]) > 0.5
    clean = ~touched & (alpha == 255)
    np.testing.assert_array_equal(out[clean, :3], plain[clean])
    # The colour under transparent pixels never shows, whatever it was.
    np.testing.assert_array_equal(out, other)
    smooth = weights.min() >= 0
    if smooth:  # alpha softens: the mean alpha under the (normalised) kernel
        expected = ndimage.correlate(alpha.astype(float), weights / weights.sum(), mode=SCIPY_MODE[pad])
        assert np.abs(out[..., 3].astype(float) - expected).max() <= 0.5 + 1e-3
    else:  # alpha as it was
        np.testing.assert_array_equal(out[..., 3], alpha)


def test_hidden_colour_never_bleeds_into_an_edge_picture(tmp_path):
    # A red disc on a transparent field whose hidden colour is pure green: sobel-x finds the
    # disc's colour edges only where colour is visible, and no green anywhere.
    yy, xx = np.mgrid[:21, :21]
    inside = (yy - 10) ** 2 + (xx - 10) ** 2 <= 36
    rgba = np.zeros((21, 21, 4), np.uint8)
    rgba[..., 1] = 255
    rgba[inside] = (200, 30, 30, 255)
    result = run(png(tmp_path / "disc.png", rgba), "-k", "sobel-x", "-o", tmp_path / "e.png")
    assert result.exit_code == 0, result.output
    out = pixels(tmp_path / "e.png")
    np.testing.assert_array_equal(out[..., 3], rgba[..., 3])  # alpha kept
    # Inside a flat disc the colour has no edge: sobel-x is 0, shown at the offset (128), even next to
    # the transparent field (it holds the disc's colour, not the hidden green).
    assert np.all(out[inside, :3] == 128)
    assert np.all(out[~inside] == (128, 128, 128, 0))  # transparent pixels carry no colour: zero, offset


def test_keep_leaves_transparent_pixels_transparent_under_an_offset_range(tmp_path):
    # --range offset (the default of sobel-x) is for colour: alpha 0 used to come out as 128.
    rgba = np.zeros((9, 9, 4), np.uint8)
    rgba[3:6, 3:6] = (90, 90, 90, 255)
    for extra in (("--alpha", "keep"), ("--range", "rescale", "--alpha", "keep"), ()):
        result = run(png(tmp_path / "in.png", rgba), "-k", "sobel-x", *extra, "-o", tmp_path / "o.png")
        assert result.exit_code == 0, result.output
        np.testing.assert_array_equal(pixels(tmp_path / "o.png")[..., 3], rgba[..., 3], err_msg=str(extra))


def test_smoothing_with_transparency_says_alpha_softened_and_q_silences_it(tmp_path):
    rgba = np.zeros((9, 9, 4), np.uint8)
    rgba[2:7, 2:7] = (250, 10, 10, 255)
    path = png(tmp_path / "logo.png", rgba)
    said = run(path, "-k", "gaussian:sigma=1", "-o", tmp_path / "o.png")
    assert said.exit_code == 0
    lines = said.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"convcli: warning: {path}: alpha was filtered")
    assert 0 < pixels(tmp_path / "o.png")[1, 4, 3] < 255  # the edge softened
    quiet = run(path, "-k", "gaussian:sigma=1", "-q", "-o", tmp_path / "q.png")
    assert quiet.exit_code == 0 and quiet.stderr == ""
    np.testing.assert_array_equal(pixels(tmp_path / "q.png"), pixels(tmp_path / "o.png"))
    # Asked for explicitly, or with a kernel that keeps alpha: nothing to say.
    for args in (("-k", "gaussian:sigma=1", "--alpha", "premultiply"), ("-k", "sobel")):
        assert run(path, *args, "-o", tmp_path / "n.png").stderr == ""


def test_an_unnormalised_blur_brightens_as_without_alpha_and_keeps_mean_alpha(tmp_path):
    # [[1,1],[1,1]] sums to 4: without alpha the picture is 4x brighter (clipped); with alpha the
    # opaque part is too, and alpha is the mean coverage (not 4x it).
    rgba = np.zeros((6, 6, 4), np.uint8)
    rgba[:, :3] = (20, 40, 60, 255)
    result = run(png(tmp_path / "in.png", rgba), "-k", "[[1,1],[1,1]]", "-o", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    out = pixels(tmp_path / "o.png")
    assert tuple(out[0, 0]) == (80, 160, 240, 255)
    assert tuple(out[0, 2]) == (80, 160, 240, 128)  # half the window covered: alpha 127.5 -> 128


def test_stride_moves_kept_alpha_onto_the_output_grid(tmp_path):
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 3] = np.arange(100).reshape(10, 10) * 2
    rgba[..., 0] = 77
    result = run(png(tmp_path / "in.png", rgba), "-k", "laplacian", "--stride", 2, "-o", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    # "same" with stride 2 on 10 samples pads 0 before and 1 after: output i is centred on input 2i + 1.
    np.testing.assert_array_equal(pixels(tmp_path / "o.png")[..., 3], rgba[1::2, 1::2, 3])


def test_explain_says_what_happens_to_alpha(tmp_path):
    rgba = np.zeros((6, 6, 4), np.uint8)
    path = png(tmp_path / "in.png", rgba)
    assert "alpha: auto: premultiply" in run(path, "-k", "box:3", "--explain").stdout
    assert "alpha: auto: fill" in run(path, "-k", "sobel", "--explain").stdout
    assert "alpha: keep" in run(path, "-k", "sobel", "--alpha", "keep", "--explain").stdout
    assert "alpha:" not in run(png(tmp_path / "rgb.png", rgba[..., :3]), "-k", "sobel", "--explain").stdout


def test_transparent_pixels_take_the_mean_of_their_coloured_neighbours_as_far_as_the_kernel_reaches():
    from convcli.io import Signal
    from convcli.pipeline.alpha import fill_hidden
    from convcli.pipeline.chain import prepare, resolve_kernels
    from convcli.pipeline.options import FilterOptions

    row = np.array([[[10, 200], [99, 0], [30, 200], [99, 0], [99, 0], [99, 0]]], np.uint8)  # grey + alpha
    signal = Signal(row, kind="image", channel_axis=-1, meta={"alpha": True, "dtype": "uint8"})
    for kernel, expected in (("[[-1,0,1]]", [10, 20, 30, 30, 0, 0]), ("[[-1,0,0,0,1]]", [10, 20, 30, 30, 30, 0])):
        options = FilterOptions(kernels=(kernel,))
        chain = prepare(signal, resolve_kernels(options, signal), options).chain
        filled = fill_hidden(row[..., :1], row[..., 1:] == 0, chain)
        np.testing.assert_array_equal(filled[0, :, 0], expected, err_msg=kernel)
