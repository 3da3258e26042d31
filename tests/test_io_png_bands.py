"""Decoding a PNG in bands (one thread inflating, libpng unfiltering band by band) gives Pillow's pixels.

The images are small; the decoder's thresholds are lowered so that they are
cut into many bands, and the rows are filtered with every PNG filter type
(chosen at random per row) so that each filter meets a band seam.
"""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from convcli.io import png

COLOUR_TYPES = {1: 0, 3: 2, 4: 6}


@pytest.fixture
def tiny_bands(monkeypatch):
    """Band decoding for any image of 4 rows or more, a few rows per band."""
    monkeypatch.setattr(png, "PIPELINE_BYTES", 0)
    monkeypatch.setattr(png, "BAND_ROWS_MIN", 2)
    monkeypatch.setattr(png, "INFLATE_STEP", 97)  # an odd size: hand-overs fall mid-row


def _paeth(a, b, c):
    p = a.astype(np.int16) + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)).astype(np.uint8)


def filtered_rows(pixels: np.ndarray, kinds) -> bytes:
    """The PNG filtered scanlines of `pixels` (H, W, C) with filter `kinds[r]` on row r (PNG spec, section 9)."""
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1)
    bpp = pixels.shape[2]
    out = bytearray()
    for r in range(height):
        x = rows[r]
        up = rows[r - 1] if r else np.zeros_like(x)
        left = np.concatenate([np.zeros(bpp, np.uint8), x[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.uint8), up[:-bpp]])
        kind = kinds[r]
        if kind == 0:
            line = x
        elif kind == 1:
            line = x - left
        elif kind == 2:
            line = x - up
        elif kind == 3:
            line = x - ((left.astype(np.uint16) + up) // 2).astype(np.uint8)
        else:
            line = x - _paeth(left, up, upleft)
        out.append(kind)
        out += line.astype(np.uint8).tobytes()
    return bytes(out)


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def make_png(pixels: np.ndarray, kinds, *, idat_size: int = 1000, stream: bytes | None = None) -> bytes:
    height, width, channels = pixels.shape
    if stream is None:
        stream = zlib.compress(filtered_rows(pixels, kinds), 6)
    parts = [png.SIGNATURE, chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, COLOUR_TYPES[channels],
                                                       0, 0, 0))]
    parts += [chunk(b"IDAT", stream[i:i + idat_size]) for i in range(0, len(stream), idat_size)]
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)


def pillow_pixels(raw: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(raw)) as im:
        return np.asarray(im)


def band_decode(raw: bytes):
    stream = png.pixel_stream(raw)
    assert stream is not None
    width, height = struct.unpack(">II", raw[16:24])
    return png.decode_with_opencv(stream, width, height)


@pytest.mark.parametrize("channels", [1, 3, 4])
@pytest.mark.parametrize("idat_size", [1, 300, 1 << 20])
def test_every_filter_across_band_seams_decodes_as_pillow_does(tiny_bands, channels, idat_size):
    rng = np.random.default_rng(channels * 31 + idat_size)
    pixels = rng.integers(0, 256, (37, 19, channels), dtype=np.uint8)
    pixels[10:20] //= 7  # runs of similar samples, so that Paeth picks each predictor
    kinds = rng.integers(0, 5, 37)
    raw = make_png(pixels, kinds, idat_size=idat_size)
    got = band_decode(raw)
    want = pillow_pixels(raw)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got.reshape(pixels.shape), pixels)


def test_a_large_photo_sized_image_decodes_in_bands_as_pillow_does():
    # Over the real thresholds: the path a 4K photo takes, with its default band size.
    rng = np.random.default_rng(3)
    height, width = 600, 2400
    ramp = np.linspace(0, 255, width, dtype=np.float32)
    pixels = (ramp[None, :, None] * np.array([1.0, 0.5, 0.25]) + rng.normal(0, 8, (height, width, 3)))
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    kinds = rng.integers(0, 5, height)
    raw = make_png(pixels, kinds, idat_size=65536)
    assert height * width * 3 >= png.PIPELINE_BYTES
    np.testing.assert_array_equal(band_decode(raw), pixels)


@pytest.mark.parametrize("damage", ["truncated", "extra", "corrupt", "short"])
def test_a_damaged_stream_is_left_to_pillow(tiny_bands, damage):
    """Every anomaly gives None (the caller then lets Pillow read the file and report the error)."""
    rng = np.random.default_rng(5)
    pixels = rng.integers(0, 256, (20, 9, 3), dtype=np.uint8)
    kinds = rng.integers(0, 5, 20)
    data = filtered_rows(pixels, kinds)
    if damage == "truncated":  # the zlib stream ends early
        stream = zlib.compress(data)[:-40]
    elif damage == "extra":  # more filtered bytes than the image holds
        stream = zlib.compress(data + bytes(50))
    elif damage == "corrupt":  # an invalid deflate block type in the middle
        body = bytearray(zlib.compress(data, 0))
        body[2 + 5 + len(data) // 2] ^= 0xFF
        body[2] = 0b110  # first block: reserved type 3
        stream = bytes(body)
    else:  # a complete zlib stream of too few rows
        stream = zlib.compress(data[:-(1 + 27)])
    raw = make_png(pixels, kinds, stream=stream)
    assert band_decode(raw) is None


def test_a_band_decoded_file_reads_through_convcli_like_pillow(tmp_path, tiny_bands, monkeypatch):
    from convcli import io as cio
    from convcli.io import image

    monkeypatch.setattr(image, "OPENCV_PNG_PIXELS", 0)
    rng = np.random.default_rng(11)
    pixels = rng.integers(0, 256, (41, 23, 4), dtype=np.uint8)
    path = tmp_path / "bands.png"
    path.write_bytes(make_png(pixels, rng.integers(0, 5, 41), idat_size=64))
    signal = cio.read(str(path))
    np.testing.assert_array_equal(signal.data, pixels)
