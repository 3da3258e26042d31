"""``--colorspace``: filtering in linear light and on luma only, against the literal formulas.

- sRGB's transfer curve, IEC 61966-2-1: V <= 0.04045 -> V / 12.92, else
  ((V + 0.055) / 1.055) ** 2.4, and its inverse (knee 0.0031308);
- relative luminance from linear BT.709/sRGB primaries: 0.2126 R + 0.7152 G + 0.0722 B;
- luma Y' (BT.709 weights on the encoded values), whose change is added to
  R', G' and B' alike, so Cb and Cr are kept.
"""
from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy import ndimage

from conftest import convcli
from convcli.kernels import resolve

WEIGHTS = np.array([0.2126, 0.7152, 0.0722])


def run(*args):
    return convcli("filter", *map(str, args))


def eotf(v):
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def oetf(light):
    return np.where(light <= 0.0031308, 12.92 * light, 1.055 * np.maximum(light, 0) ** (1 / 2.4) - 0.055)


def save16(path, rgb16):
    cv2.imwrite(str(path), np.ascontiguousarray(rgb16[..., ::-1]))  # OpenCV writes BGR
    return path


def load16(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1]


def box3(image):
    return ndimage.correlate(image, np.full((3, 3, 1), 1 / 9), mode="mirror")


@pytest.fixture
def photo(tmp_path):
    rgb = np.random.default_rng(11).integers(0, 256, (16, 18, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    return tmp_path / "photo.png", rgb


def close(out, expected, full=255):
    """Within one step everywhere (float32 compute against a float64 oracle), exact nearly everywhere."""
    want = np.clip(np.rint(expected * full), 0, full)
    diff = np.abs(out.astype(np.int64) - want)
    assert diff.max() <= 1 and np.mean(diff == 0) > 0.98, (diff.max(), np.mean(diff == 0))


def test_linear_blur_is_the_srgb_formula(tmp_path, photo):
    path, rgb = photo
    result = run(path, "-k", "box:3", "--colorspace", "linear", "-o", tmp_path / "o.png")
    assert result.exit_code == 0 and result.stderr == "", result.output
    out = np.asarray(Image.open(tmp_path / "o.png"))
    close(out, oetf(box3(eotf(rgb / 255.0))))


def test_linear_16_bit(tmp_path):
    rgb = np.random.default_rng(12).integers(0, 65536, (10, 12, 3)).astype(np.uint16)
    result = run(save16(tmp_path / "in.png", rgb), "-k", "box:3", "--colorspace", "linear", "-o", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    out = load16(tmp_path / "o.png")
    assert out.dtype == np.uint16
    expected = oetf(box3(eotf(rgb / 65535.0)))
    # float32 holds a 16-bit value and its curve to a few parts in 1e7: within 2 steps of 65535.
    assert np.abs(out.astype(np.int64) - np.rint(expected * 65535)).max() <= 2


@pytest.mark.parametrize("bits", [8, 16])
def test_identity_in_linear_light_and_luma_gives_the_picture_back(tmp_path, bits):
    rng = np.random.default_rng(bits)
    if bits == 8:
        rgb = rng.integers(0, 256, (9, 10, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(tmp_path / "in.png")
    else:
        rgb = rng.integers(0, 65536, (9, 10, 3)).astype(np.uint16)
        save16(tmp_path / "in.png", rgb)
    for space in ("linear", "luma"):
        assert run(tmp_path / "in.png", "-k", "identity", "--colorspace", space, "-o", tmp_path / "o.png").exit_code == 0
        np.testing.assert_array_equal(load16(tmp_path / "o.png"), rgb, err_msg=space)


@st.composite
def edges(draw):
    colours = draw(st.lists(st.tuples(*[st.integers(0, 65535)] * 3), min_size=2, max_size=2))
    return np.array(colours, dtype=np.uint16), draw(st.integers(2, 13)), draw(st.floats(0.5, 4.0)), draw(st.booleans())


@settings(max_examples=30)
@given(edges())
def test_a_linear_blur_of_a_two_colour_edge_never_darkens_below_both(edge):
    colours, at, sigma, vertical = edge
    rgb = np.empty((16, 16, 3), np.uint16)
    rgb[:, :at], rgb[:, at:] = colours[0], colours[1]
    if vertical:
        rgb = rgb.transpose(1, 0, 2).copy()
    with tempfile.TemporaryDirectory() as tmp:
        path = save16(Path(tmp) / "edge.png", rgb)
        result = run(path, "-k", f"gaussian:sigma={sigma}", "--colorspace", "linear", "-o", Path(tmp) / "o.png")
        assert result.exit_code == 0, result.output
        out = load16(Path(tmp) / "o.png")
    luminance = eotf(out / 65535.0) @ WEIGHTS
    ends = eotf(colours / 65535.0) @ WEIGHTS
    step = 3e-5  # one 16-bit step of the encoded value, in luminance (the curve's slope is at most ~2.3)
    assert luminance.min() >= ends.min() - step and luminance.max() <= ends.max() + step


def test_a_stored_blur_darkens_red_against_green_and_a_linear_one_does_not(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :4, 0], rgb[:, 4:, 1] = 255, 255
    Image.fromarray(rgb).save(tmp_path / "rg.png")
    lowest = {}
    for space in ("stored", "linear"):
        assert run(tmp_path / "rg.png", "-k", "box:3", "--colorspace", space, "-o", tmp_path / "o.png").exit_code == 0
        lowest[space] = (eotf(np.asarray(Image.open(tmp_path / "o.png")) / 255.0) @ WEIGHTS).min()
    red = WEIGHTS[0]  # the darker of the two colours
    assert lowest["stored"] < 0.8 * red and lowest["linear"] >= red - 1e-3


def test_luma_sharpens_lightness_and_keeps_colour_differences(tmp_path, photo):
    path, rgb = photo
    result = run(path, "-k", "sharpen", "--colorspace", "luma", "-o", tmp_path / "o.png")
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp_path / "o.png"))
    weights = resolve("sharpen", ndim=2).weights[0]
    luma = rgb / 255.0 @ WEIGHTS
    change = ndimage.correlate(luma, weights, mode="mirror") - luma
    close(out, rgb / 255.0 + change[..., None])  # the same change on R', G' and B': Cb, Cr kept


def test_grey_images_linear_and_luma(tmp_path):
    grey = np.random.default_rng(13).integers(0, 256, (11, 9), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert run(tmp_path / "g.png", "-k", "box:3", "--colorspace", "luma", "-o", tmp_path / "l.png").exit_code == 0
    assert run(tmp_path / "g.png", "-k", "box:3", "-o", tmp_path / "s.png").exit_code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "l.png")), np.asarray(Image.open(tmp_path / "s.png")))
    assert run(tmp_path / "g.png", "-k", "box:3", "--colorspace", "linear", "-o", tmp_path / "n.png").exit_code == 0
    expected = oetf(ndimage.correlate(eotf(grey / 255.0), np.full((3, 3), 1 / 9), mode="mirror"))
    close(np.asarray(Image.open(tmp_path / "n.png")), expected)


def gamma_profile(gamma: float, space: bytes = b"RGB ") -> bytes:
    """A minimal matrix/TRC ICC profile whose three tone curves are one ``curv`` power law."""
    curve = b"curv" + bytes(4) + struct.pack(">IH", 1, round(gamma * 256)) + bytes(2)
    tags = [b"rTRC", b"gTRC", b"bTRC"]
    offset = 128 + 4 + 12 * len(tags)
    table = struct.pack(">I", len(tags)) + b"".join(struct.pack(">4sII", t, offset, len(curve)) for t in tags)
    size = offset + len(curve)
    header = struct.pack(">I4sI4s4s4s", size, b"none", 0x02100000, b"mntr", space, b"XYZ ") + bytes(12) + b"acsp"
    return header + bytes(128 - len(header)) + table + curve


def test_linear_uses_the_tone_curves_of_the_icc_profile(tmp_path, photo):
    _, rgb = photo
    Image.fromarray(rgb).save(tmp_path / "g22.png", icc_profile=gamma_profile(2.2))
    result = run(tmp_path / "g22.png", "-k", "box:3", "--colorspace", "linear", "-o", tmp_path / "o.png")
    assert result.exit_code == 0 and result.stderr == "", result.output
    gamma = round(2.2 * 256) / 256  # the profile's u8Fixed8 value
    close(np.asarray(Image.open(tmp_path / "o.png")), box3((rgb / 255.0) ** gamma) ** (1 / gamma))
    assert Image.open(tmp_path / "o.png").info.get("icc_profile") == gamma_profile(2.2)  # carried over


def test_a_profile_without_readable_curves_falls_back_to_srgb_with_a_note(tmp_path, photo):
    _, rgb = photo
    Image.fromarray(rgb).save(tmp_path / "odd.png", icc_profile=gamma_profile(2.2, space=b"Lab "))
    result = run(tmp_path / "odd.png", "-k", "box:3", "--colorspace", "linear", "-o", tmp_path / "o.png")
    assert result.exit_code == 0
    assert result.stderr.startswith(f"convcli: warning: {tmp_path / 'odd.png'}: linear light:")
    assert "sRGB" in result.stderr and result.stderr.count("\n") == 1
    close(np.asarray(Image.open(tmp_path / "o.png")), oetf(box3(eotf(rgb / 255.0))))


def test_an_opaque_rgba_image_in_linear_light_is_the_rgb_result(tmp_path, photo):
    path, rgb = photo
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])).save(tmp_path / "rgba.png")
    for kernel in ("gaussian:sigma=1", "sobel"):
        assert run(path, "-k", kernel, "--colorspace", "linear", "-o", tmp_path / "a.png").exit_code == 0
        assert run(tmp_path / "rgba.png", "-k", kernel, "--colorspace", "linear", "-o", tmp_path / "b.png").exit_code == 0
        b = np.asarray(Image.open(tmp_path / "b.png"))
        np.testing.assert_array_equal(b[..., :3], np.asarray(Image.open(tmp_path / "a.png")))
        assert np.all(b[..., 3] == 255)


def test_luma_with_transparency_keeps_hidden_colour_out(tmp_path):
    rgba = np.zeros((12, 12, 4), np.uint8)
    rgba[..., 1] = 255  # hidden green
    rgba[3:9, 3:9] = (200, 40, 40, 255)
    Image.fromarray(rgba).save(tmp_path / "in.png")
    for kernel in ("sharpen", "gaussian:sigma=1"):
        assert run(tmp_path / "in.png", "-k", kernel, "--colorspace", "luma", "-q", "-o", tmp_path / "o.png").exit_code == 0
        out = np.asarray(Image.open(tmp_path / "o.png"))
        visible = out[..., 3] > 0
        assert np.all(out[visible, 1] < out[visible, 0]), kernel  # red stays red: no green bleeds in


@pytest.mark.parametrize("space", ["linear", "luma"])
def test_colour_spaces_are_refused_for_what_is_not_an_rgb_or_grey_image(tmp_path, space):
    sf.write(tmp_path / "a.wav", np.zeros(64), 8000)
    np.save(tmp_path / "v.npy", np.zeros((4, 4, 4)))
    Image.fromarray(np.zeros((4, 4), np.int32)).save(tmp_path / "i.tif")
    Image.new("CMYK", (4, 4)).save(tmp_path / "c.jpg")
    for name, words in (("a.wav", "this input is audio"), ("v.npy", "a volume"), ("i.tif", "int32"),
                        ("c.jpg", "CMYK")):
        result = run(tmp_path / name, "-k", "box:3", "--colorspace", space, "-o", tmp_path / ("out" + name[-4:]))
        assert result.exit_code == 2, (name, result.output)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("convcli: error: --colorspace: ")
        assert words in result.stderr and not (tmp_path / ("out" + name[-4:])).exists()
    bad = run(tmp_path / "a.wav", "-k", "box:3", "--colorspace", "lab", "-o", tmp_path / "o.wav")
    assert bad.exit_code == 2 and "stored, linear, luma" in bad.stderr


def test_explain_shows_the_colour_space(photo):
    path, _ = photo
    assert "colour space: linear" in run(path, "-k", "box:3", "--colorspace", "linear", "--explain").stdout
    assert "colour space: stored" in run(path, "-k", "box:3", "--explain").stdout


@settings(max_examples=200)
@given(st.binary(max_size=400), st.sampled_from([1, 3]), st.integers(0, 3))
def test_any_icc_bytes_give_usable_curves_or_srgb_with_a_note(data, channels, splice):
    from convcli.pipeline.colour import SRGB, decode, encode, profile_curves

    if splice:  # a plausible header with random tags, so the parser gets past the signature
        data = gamma_profile(2.2, b"RGB " if channels == 3 else b"GRAY")[:128 + 4 * splice] + data
    curves, note = profile_curves(data, channels)
    assert len(curves) == channels
    if note is not None:
        assert curves == [SRGB] * channels and "sRGB" in note
    v = np.linspace(0, 1, 9)
    for curve in curves:
        with np.errstate(all="ignore"):
            light = decode(curve, v)
            assert np.all(np.diff(light) >= -1e-12) and np.all(np.isfinite(encode(curve, light)))
