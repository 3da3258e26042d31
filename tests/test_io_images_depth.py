"""Output depth and quality under the user's control, and nothing of a PNG or JPEG lost on the way.

--depth scales integers full range to full range as ImageMagick's -depth does
(8 -> 16 is x * 257, 16 -> 8 is round(x / 257)); --quality sets JPEG/WebP
quality, and by default a JPEG is written back with its own quantisation
tables; an option with no meaning for the output format is a warning, never
silence.  PNGs of every bit depth, with and without alpha, come back
bit-exact with their text and colour-space chunks.
"""
from __future__ import annotations

import io as pyio
import shutil
import struct
import subprocess

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from conftest import convcli
from convcli import io
from convcli.io.jpegq import estimate_quality

RNG = np.random.default_rng(31)


def run(*args):
    return convcli("filter", *map(str, args))


def photo(h=96, w=128):
    """A smooth picture with some texture: what JPEG is made for."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([128 + 90 * np.sin(x / 9.0), 128 + 90 * np.cos(y / 7.0), (x + y) % 256], axis=-1)
    return np.clip(base + RNG.normal(0, 6, base.shape), 0, 255).astype(np.uint8)


# ---- --depth ------------------------------------------------------------------------------


def test_depth_16_from_8_bit_multiplies_by_257(tmp_path):
    grey = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    result = run(tmp_path / "g.png", "-k", "identity", "--depth", "16", "-o", tmp_path / "g16.png")
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert (tmp_path / "g16.png").read_bytes()[24] == 16  # IHDR bit depth
    np.testing.assert_array_equal(io.read(tmp_path / "g16.png").data, grey.astype(np.uint16) * 257)


def test_depth_8_from_16_bit_is_round_x_over_257(tmp_path):
    rgb = RNG.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    import imagecodecs

    (tmp_path / "c.png").write_bytes(imagecodecs.png_encode(rgb))
    result = run(tmp_path / "c.png", "-k", "identity", "--depth", "8", "-o", tmp_path / "c8.png")
    assert result.exit_code == 0, result.output
    got = io.read(tmp_path / "c8.png").data
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, np.floor(rgb / 257 + 0.5).astype(np.uint8))


@pytest.mark.skipif(shutil.which("convert") is None, reason="ImageMagick is not installed")
def test_depth_agrees_with_imagemagick(tmp_path):
    rgb = RNG.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    import imagecodecs

    (tmp_path / "c.png").write_bytes(imagecodecs.png_encode(rgb))
    subprocess.run(["convert", str(tmp_path / "c.png"), "-depth", "8", str(tmp_path / "im8.png")], check=True)
    assert run(tmp_path / "c.png", "-k", "identity", "--depth", "8", "-o", tmp_path / "us8.png").exit_code == 0
    # ImageMagick 6 truncates x / 257 where convcli (and ImageMagick 7's formula) rounds: 0 or 1 apart.
    difference = io.read(tmp_path / "us8.png").data.astype(int) - np.asarray(Image.open(tmp_path / "im8.png"))
    assert set(np.unique(difference)) <= {0, 1}
    subprocess.run(["convert", str(tmp_path / "im8.png"), "-depth", "16", str(tmp_path / "im16.tif")], check=True)
    assert run(tmp_path / "im8.png", "-k", "identity", "--depth", "16", "-o", tmp_path / "us16.png").exit_code == 0
    np.testing.assert_array_equal(io.read(tmp_path / "us16.png").data, io.read(tmp_path / "im16.tif").data)


def test_depth_16_keeps_the_precision_of_a_blur(tmp_path):
    grey = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert run(tmp_path / "g.png", "-k", "box:3", "--depth", "16", "-o", tmp_path / "b16.npy").exit_code == 0
    assert run(tmp_path / "g.png", "-k", "box:3", "-o", tmp_path / "b.npy").exit_code == 0
    exact = np.load(tmp_path / "b.npy").astype(np.float64)
    np.testing.assert_array_equal(np.load(tmp_path / "b16.npy"), np.rint(exact * 257).astype(np.uint16))


def test_depth_32f_keeps_the_values_in_the_inputs_units(tmp_path):
    grey = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert run(tmp_path / "g.png", "-k", "identity", "--depth", "32f", "-o", tmp_path / "f.tif").exit_code == 0
    back = io.read(tmp_path / "f.tif")
    assert back.data.dtype == np.float32
    np.testing.assert_array_equal(back.data, grey.astype(np.float32))
    # ... so going back to 8 bits is exact.
    assert run(tmp_path / "f.tif", "-k", "identity", "--depth", "8", "-o", tmp_path / "g8.png").exit_code == 0
    np.testing.assert_array_equal(io.read(tmp_path / "g8.png").data, grey)


def test_depth_the_format_cannot_hold_says_what_was_written(tmp_path):
    Image.fromarray(photo()).save(tmp_path / "p.png")
    result = run(tmp_path / "p.png", "-k", "identity", "--depth", "16", "-o", tmp_path / "p.jpg")
    assert result.exit_code == 0
    assert "JPEG cannot store mode RGB;16: written as RGB (reduced to 8 bits)" in result.stderr
    result = run(tmp_path / "p.png", "-k", "identity", "--depth", "32f", "-o", tmp_path / "q.png")
    assert "PNG holds no float samples" in result.stderr and io.read(tmp_path / "q.png").data.dtype == np.uint8


def test_a_blurred_1_bit_png_is_grey_not_thresholded(tmp_path):
    """The finding: the blur became a threshold."""
    bits = RNG.integers(0, 2, (24, 24)).astype(bool)
    Image.fromarray(bits).save(tmp_path / "b.png")
    result = run(tmp_path / "b.png", "-k", "gaussian:sigma=3", "-o", tmp_path / "soft.png")
    assert result.exit_code == 0 and "not black and white: written as 8-bit grey" in result.stderr
    soft = io.read(tmp_path / "soft.png")
    assert soft.meta["mode"] == "L" and len(np.unique(soft.data)) > 10
    result = run(tmp_path / "b.png", "-k", "gaussian:sigma=3", "--depth", "1", "-o", tmp_path / "hard.png")
    assert result.exit_code == 0 and result.stderr == ""
    hard = io.read(tmp_path / "hard.png")
    assert hard.meta["mode"] == "1"
    np.testing.assert_array_equal(hard.data, np.where(soft.data >= 128, 255, 0))


def test_depth_24_on_audio_is_pcm_24_at_the_same_loudness(tmp_path):
    import soundfile

    pcm = RNG.integers(-32768, 32768, (400, 2), dtype=np.int16)
    soundfile.write(tmp_path / "a.wav", pcm, 8000, subtype="PCM_16")
    assert run(tmp_path / "a.wav", "-k", "identity", "--depth", "24", "-o", tmp_path / "b.wav").exit_code == 0
    info = soundfile.info(tmp_path / "b.wav")
    assert info.subtype == "PCM_24"
    got, _ = soundfile.read(tmp_path / "b.wav", dtype="int32")
    np.testing.assert_array_equal(got >> 8, pcm.astype(np.int32) * 256)


def test_depth_on_npy_and_nifti(tmp_path):
    x = RNG.normal(size=(6, 7, 8)).astype(np.float32) * 1000
    np.save(tmp_path / "v.npy", x)
    assert run(tmp_path / "v.npy", "-k", "identity", "--depth", "16", "-o", tmp_path / "v16.npy").exit_code == 0
    got = np.load(tmp_path / "v16.npy")
    assert got.dtype == np.uint16  # float values taken as they are, clipped to 0..65535
    np.testing.assert_array_equal(got, np.clip(np.rint(x), 0, 65535).astype(np.uint16))
    nib = pytest.importorskip("nibabel", reason="nibabel (the nifti extra) is not installed")
    nib.save(nib.Nifti1Image(np.rint(x).astype(np.int16), np.eye(4)), tmp_path / "v.nii")
    assert run(tmp_path / "v.nii", "-k", "identity", "--depth", "64f", "-o", tmp_path / "f.nii").exit_code == 0
    assert nib.load(tmp_path / "f.nii").get_data_dtype() == np.float64


@pytest.mark.parametrize("flag,value", [("--depth", "12"), ("--quality", "0"), ("--quality", "101")])
def test_bad_depth_or_quality_is_a_usage_error(tmp_path, flag, value):
    Image.fromarray(photo()).save(tmp_path / "p.png")
    result = run(tmp_path / "p.png", "-k", "identity", flag, value, "-o", tmp_path / "o.jpg")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and flag in result.stderr
    assert not (tmp_path / "o.jpg").exists()


# ---- --quality and JPEG ---------------------------------------------------------------------


@pytest.mark.parametrize("quality", [50, 75, 90, 95])
def test_a_jpeg_is_written_back_at_its_own_quality(tmp_path, quality):
    """The finding: every JPEG came out at quality 95; a q90 input grew by a third."""
    Image.fromarray(photo()).save(tmp_path / "in.jpg", quality=quality)
    assert estimate_quality(list(Image.open(tmp_path / "in.jpg").quantization.values())) == quality
    result = run(tmp_path / "in.jpg", "-k", "identity", "-o", tmp_path / "out.jpg")
    assert result.exit_code == 0 and result.stderr == ""
    out = Image.open(tmp_path / "out.jpg")
    assert estimate_quality(list(out.quantization.values())) == quality
    assert io.read(tmp_path / "out.jpg").meta["quality"] == quality
    size_in, size_out = (tmp_path / "in.jpg").stat().st_size, (tmp_path / "out.jpg").stat().st_size
    assert abs(size_out - size_in) <= 0.05 * size_in


def test_a_jpeg_keeps_its_subsampling_progression_and_comment(tmp_path):
    Image.fromarray(photo()).save(tmp_path / "in.jpg", quality=88, subsampling=0, progressive=True,
                                  comment=b"shot on a cloudy day")
    assert run(tmp_path / "in.jpg", "-k", "sharpen", "-o", tmp_path / "out.jpg").exit_code == 0
    from PIL import JpegImagePlugin

    out = Image.open(tmp_path / "out.jpg")
    assert JpegImagePlugin.get_sampling(out) == 0 and out.info.get("progressive")
    assert out.info.get("comment") == b"shot on a cloudy day"


def test_quality_is_the_users_choice(tmp_path):
    Image.fromarray(photo()).save(tmp_path / "in.jpg", quality=95)
    assert run(tmp_path / "in.jpg", "-k", "identity", "--quality", "40", "-o", tmp_path / "q40.jpg").exit_code == 0
    assert estimate_quality(list(Image.open(tmp_path / "q40.jpg").quantization.values())) == 40
    Image.fromarray(photo()).save(tmp_path / "in.png")
    assert run(tmp_path / "in.png", "-k", "identity", "-o", tmp_path / "d.jpg").exit_code == 0
    assert estimate_quality(list(Image.open(tmp_path / "d.jpg").quantization.values())) == 90
    assert run(tmp_path / "in.jpg", "-k", "identity", "--quality", "70", "-o", tmp_path / "w.webp").exit_code == 0
    assert (tmp_path / "w.webp").stat().st_size < (tmp_path / "in.jpg").stat().st_size


def test_an_option_with_no_meaning_for_the_format_is_a_warning(tmp_path):
    Image.fromarray(photo()).save(tmp_path / "in.png")
    result = run(tmp_path / "in.png", "-k", "identity", "--compress-level", "9", "-o", tmp_path / "o.jpg")
    assert result.exit_code == 0 and "--compress-level does not apply to JPEG image output; ignored" in result.stderr
    result = run(tmp_path / "in.png", "-k", "identity", "--quality", "80", "-o", tmp_path / "o.png")
    assert result.exit_code == 0 and "--quality does not apply to PNG image output; ignored" in result.stderr


@pytest.mark.parametrize("mode", ["L", "LA"])
def test_grey_into_webp_is_written_as_rgb(tmp_path, mode):
    """The finding: a grey or LA image written as WebP crashed (exit 70, 'Invalid mode for data type')."""
    grey = RNG.integers(0, 256, (16, 16, 2), dtype=np.uint8)
    Image.fromarray(grey if mode == "LA" else grey[..., 0], mode).save(tmp_path / "g.png")
    result = run(tmp_path / "g.png", "-k", "identity", "--alpha", "channel", "-o", tmp_path / "g.webp")
    assert result.exit_code == 0 and "grey stored as RGB" in result.stderr, result.output
    back = io.read(tmp_path / "g.webp")
    assert back.data.shape == (16, 16, 4 if mode == "LA" else 3)
    assert np.abs(back.data[..., 0].astype(int) - back.data[..., 2]).max() <= 8  # grey (lossy WebP, quality 90)


# ---- PNG: every bit depth, with its chunks --------------------------------------------------


def chunks_of(raw: bytes):
    """IHDR and every chunk but the pixels and IEND, in order, from a PNG's bytes."""
    out, pos = [], 8
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        kind = raw[pos + 4:pos + 8]
        if kind not in (b"IDAT", b"IEND"):
            out.append((kind, raw[pos + 8:pos + 8 + length]))
        pos += 12 + length
    return out


def png_with_chunks(image: Image.Image) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "a test card")
    info.add_itxt("Description", "ünïcode text", lang="en")
    info.add(b"gAMA", struct.pack(">I", 45455))
    info.add(b"sRGB", b"\x00")
    info.add_text("Comment", "after the pixels", zip=True)
    buffer = pyio.BytesIO()
    image.save(buffer, "PNG", pnginfo=info, dpi=(150, 150))
    return buffer.getvalue()


PNG_MODES = {
    "1": lambda: Image.fromarray(RNG.integers(0, 2, (17, 23)).astype(bool)),
    "L": lambda: Image.fromarray(RNG.integers(0, 256, (17, 23), dtype=np.uint8)),
    "LA": lambda: Image.fromarray(RNG.integers(0, 256, (17, 23, 2), dtype=np.uint8), "LA"),
    "RGB": lambda: Image.fromarray(RNG.integers(0, 256, (17, 23, 3), dtype=np.uint8)),
    "RGBA": lambda: Image.fromarray(RNG.integers(0, 256, (17, 23, 4), dtype=np.uint8), "RGBA"),
    "opaque RGBA": lambda: Image.fromarray(np.dstack([RNG.integers(0, 256, (17, 23, 3), dtype=np.uint8),
                                                      np.full((17, 23), 255, np.uint8)]), "RGBA"),
    "I;16": lambda: Image.fromarray(RNG.integers(0, 65536, (17, 23), dtype=np.uint16)),
}


@pytest.mark.parametrize("mode", list(PNG_MODES))
def test_a_png_comes_back_bit_exact_with_its_chunks(tmp_path, mode):
    (tmp_path / "in.png").write_bytes(png_with_chunks(PNG_MODES[mode]()))
    alpha = () if mode == "opaque RGBA" else ("--alpha", "channel")
    result = run(tmp_path / "in.png", "-k", "identity", *alpha, "-o", tmp_path / "out.png")
    assert result.exit_code == 0 and result.stderr == "", result.output
    before, after = io.read(tmp_path / "in.png"), io.read(tmp_path / "out.png")
    np.testing.assert_array_equal(after.data, before.data)
    assert after.meta["mode"] == before.meta["mode"]
    raw_in, raw_out = (tmp_path / "in.png").read_bytes(), (tmp_path / "out.png").read_bytes()
    assert sorted(chunks_of(raw_out)) == sorted(chunks_of(raw_in))


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16_bit_colour_png_comes_back_bit_exact(tmp_path, channels):
    import imagecodecs

    data = RNG.integers(0, 65536, (17, 23, channels), dtype=np.uint16)
    (tmp_path / "in.png").write_bytes(imagecodecs.png_encode(data))
    assert run(tmp_path / "in.png", "-k", "identity", "--alpha", "channel", "-o", tmp_path / "o.png").exit_code == 0
    np.testing.assert_array_equal(io.read(tmp_path / "o.png").data, data)
    assert chunks_of((tmp_path / "o.png").read_bytes())[0] == chunks_of((tmp_path / "in.png").read_bytes())[0]


def test_chunks_that_describe_the_old_samples_are_named_when_dropped(tmp_path):
    buffer = pyio.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add(b"tIME", struct.pack(">HBBBBB", 2020, 1, 2, 3, 4, 5))
    info.add(b"bKGD", struct.pack(">H", 7))
    Image.fromarray(RNG.integers(0, 256, (8, 8), dtype=np.uint8)).save(buffer, "PNG", pnginfo=info)
    (tmp_path / "t.png").write_bytes(buffer.getvalue())
    result = run(tmp_path / "t.png", "-k", "box:3", "-o", tmp_path / "o.png")
    assert result.exit_code == 0 and "tIME, bKGD chunks describe the original samples" in result.stderr
    kinds = [kind for kind, _ in chunks_of((tmp_path / "o.png").read_bytes())]
    assert b"tIME" not in kinds and b"bKGD" not in kinds
