"""Preprocessing: every rule of the issue, checked on small images built in the test."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, strategies as st
from PIL import Image

from convcli.errors import DataError
from conftest import peak_memory
from convcli.io.photo import decode_photo
from convcli.nn.preprocess import Photo, center_crop_box, network_input


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def pattern(w: int, h: int) -> np.ndarray:
    """An RGB picture with no symmetry, so any flip or turn shows."""
    yy, xx = np.mgrid[:h, :w]
    return np.dstack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx * 7 + yy * 3) % 256]).astype(np.uint8)


# --------------------------------------------------------------------------- crop
@given(w=st.integers(1, 5000), h=st.integers(1, 5000))
def test_the_crop_is_the_centred_square_of_the_issue(w, h):
    left, top, right, bottom = center_crop_box(w, h)
    side = max(int(min(w, h) * 224 / 256), 1)
    assert right - left == bottom - top == side
    assert (left, top) == ((w - side + 1) // 2, (h - side + 1) // 2)
    assert 0 <= left and right <= w and 0 <= top and bottom <= h
    assert abs(left - (w - right)) <= 1 and abs(top - (h - bottom)) <= 1


def test_network_input_is_the_bicubic_resize_scaled():
    rgb = pattern(300, 200)
    photo = Photo(rgb, center_crop_box(300, 200))
    x = network_input(photo)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    side = int(200 * 224 / 256)  # 175
    left, top = (300 - side + 1) // 2, (200 - side + 1) // 2
    expected = Image.fromarray(rgb[top:top + side, left:left + side]).resize((224, 224), Image.Resampling.BICUBIC)
    np.testing.assert_array_equal(x, (np.asarray(expected, dtype=np.float32).transpose(2, 0, 1) - 127) / 128)


def test_the_scale_maps_0_and_255_to_just_under_minus_one_and_one():
    for value, expected in ((0, -127 / 128), (127, 0.0), (255, 1.0)):
        rgb = np.full((64, 64, 3), value, np.uint8)
        x = network_input(Photo(rgb, center_crop_box(64, 64)))
        assert np.all(x == np.float32(expected))


# --------------------------------------------------------------------------- colour rules
def test_rgb_passes_through():
    rgb = pattern(40, 30)
    np.testing.assert_array_equal(decode_photo(encode(Image.fromarray(rgb)), "x"), rgb)


def test_grey_is_expanded_to_three_equal_channels():
    grey = pattern(40, 30)[..., 0]
    got = decode_photo(encode(Image.fromarray(grey)), "x")
    assert got.shape == (30, 40, 3)
    for c in range(3):
        np.testing.assert_array_equal(got[..., c], grey)


def test_sixteen_bit_grey_is_scaled_not_truncated():
    values = np.array([[0, 128, 129, 385, 386, 32767, 65407, 65535]], np.uint16)
    got = decode_photo(encode(Image.fromarray(values)), "x")[..., 0]
    np.testing.assert_array_equal(got, np.rint(values / 257.0).astype(np.uint8))
    assert got.tolist()[0] == [0, 0, 1, 1, 2, 127, 255, 255]


@pytest.mark.parametrize("alpha", [0, 1, 64, 128, 254, 255])
def test_alpha_is_composited_on_white(alpha):
    rgb = pattern(20, 10)
    rgba = np.dstack([rgb, np.full((10, 20), alpha, np.uint8)])
    got = decode_photo(encode(Image.fromarray(rgba)), "x").astype(np.int64)
    expected = np.rint((rgb.astype(np.float64) * alpha + 255.0 * (255 - alpha)) / 255.0)
    np.testing.assert_array_equal(got, expected)


def test_grey_with_alpha_and_palette_transparency_are_composited_too():
    la = Image.fromarray(np.dstack([np.full((4, 4), 10, np.uint8), np.full((4, 4), 0, np.uint8)]), "LA")
    assert (decode_photo(encode(la), "x") == 255).all()
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    opaque = decode_photo(encode(p), "x")
    assert opaque[0, 0].tolist() == [200, 10, 10]
    p.info["transparency"] = 1
    assert (decode_photo(encode(p, transparency=1), "x") == 255).all()


def test_cmyk_is_converted_to_rgb():
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red ink
    assert decode_photo(encode(cmyk, "JPEG", quality=100), "x")[0, 0].tolist()[0] > 240


# --------------------------------------------------------------------------- orientation
# What the EXIF specification says each tag value means, as array operations on the stored pixels.
_UPRIGHT_FROM_STORED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirrored left-right
    3: lambda a: a[::-1, ::-1],  # turned half way
    4: lambda a: a[::-1],  # mirrored top-bottom
    5: lambda a: a.transpose(1, 0, 2),  # mirrored about the main diagonal
    6: lambda a: np.rot90(a, -1),  # turn a quarter clockwise to view
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # mirrored about the other diagonal
    8: lambda a: np.rot90(a, 1),  # turn a quarter counter-clockwise to view
}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_the_exif_orientation_is_applied(orientation):
    stored = pattern(6, 4)
    exif = Image.Exif()
    exif[0x0112] = orientation
    got = decode_photo(encode(Image.fromarray(stored), "PNG", exif=exif), "x")
    np.testing.assert_array_equal(got, _UPRIGHT_FROM_STORED[orientation](stored))


# --------------------------------------------------------------------------- bad input
def test_a_text_file_is_not_an_image():
    with pytest.raises(DataError, match="not an image") as info:
        decode_photo(b"hello, world\n", "notes.txt")
    assert info.value.subject == "notes.txt"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_a_truncated_image_is_corrupt(fmt):
    data = encode(Image.fromarray(pattern(64, 48)), fmt)
    with pytest.raises(DataError, match="corrupt|not an image"):
        decode_photo(data[: len(data) // 2], "cut")


def _png_header_claiming(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    # A valid header and the start of the pixel data, which would inflate to width * height * 3 bytes.
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))


@pytest.mark.parametrize("side", [10_000, 100_000])
def test_a_huge_header_is_refused_before_decoding(side):
    with peak_memory() as peak:
        with pytest.raises(DataError, match="pixels is over the limit|decompression bomb"):
            decode_photo(_png_header_claiming(side, side), "bomb.png")
    assert peak() < 8 << 20  # nothing of the 300 MB to 30 GB the header claims was allocated


def test_the_pixel_limit_can_be_lowered():
    data = encode(Image.fromarray(pattern(40, 30)))
    with pytest.raises(DataError, match="1,200 pixels is over the limit of 1,000"):
        decode_photo(data, "x", max_pixels=1000)
    assert decode_photo(data, "x", max_pixels=1200).shape == (30, 40, 3)


def test_float_grey_is_read_on_the_8_bit_scale_and_nan_is_refused():
    values = np.array([[-5.0, 0.4, 0.6, 127.5, 300.0]], np.float32)
    got = decode_photo(encode(Image.fromarray(values), "TIFF"), "x")[..., 0]
    assert got.tolist() == [[0, 0, 1, 128, 255]]
    values[0, 1] = np.nan
    with pytest.raises(DataError, match="1 of 5 samples are NaN or infinite"):
        decode_photo(encode(Image.fromarray(values), "TIFF"), "x")
