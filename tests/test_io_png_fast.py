"""The PNG writer (numpy filtering, deflate in parallel bands) and the block-wise sample conversion."""
from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from convcli.io import samples as samples_module
from convcli.errors import DataError
from convcli.io import png, png16
from convcli.io.samples import to_samples

RNG = np.random.default_rng(7)
PIL_MODES = {(np.uint8, 1): "L", (np.uint8, 2): "LA", (np.uint8, 3): "RGB", (np.uint8, 4): "RGBA",
             (np.uint16, 1): "I;16"}


def chunks(raw: bytes):
    pos = 8
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        yield raw[pos + 4:pos + 8], raw[pos + 8:pos + 8 + length]
        pos += 12 + length


def decoded(raw: bytes, dtype, channels: int) -> np.ndarray:
    """The pixels of a PNG read by an independent decoder (Pillow; png16 for 16-bit colour)."""
    if dtype == np.uint16 and channels > 1:
        return png16.decode(raw, "x")[0]
    with Image.open(io.BytesIO(raw)) as im:
        assert im.mode == PIL_MODES[(dtype, channels)]
        out = np.asarray(im)
    return out if channels > 1 else out[:, :, None]


def backends():
    """The deflate implementations png.py may use: zlib always, zlib-ng when installed."""
    found = [zlib]
    try:
        from zlib_ng import zlib_ng

        found.append(zlib_ng)
    except ImportError:
        pass
    return found


@settings(derandomize=True, max_examples=40, deadline=None)
@given(height=st.integers(1, 40), width=st.integers(1, 30), channels=st.integers(1, 4),
       wide=st.booleans(), level=st.sampled_from([0, 1, 6, 9]), threads=st.integers(1, 4),
       backend=st.sampled_from(backends()))
def test_pixels_survive_at_every_level_and_band_split(height, width, channels, wide, level, threads, backend):
    dtype = np.uint16 if wide else np.uint8
    rng = np.random.default_rng([height, width, channels, level, threads])  # the same data on every replay
    data = rng.integers(0, np.iinfo(dtype).max + 1, (height, width, channels), dtype=dtype)
    saved = png.BAND_BYTES, png._DEFLATER, png.STEP_BYTES
    # Every row may be its own band and, at odd heights, its own step: the seams are what is under test.
    png.BAND_BYTES, png._DEFLATER, png.STEP_BYTES = 1, backend, 1 + (height % 2) * (1 << 18)
    try:
        raw = png.encode(data if channels > 1 else data[:, :, 0], compress_level=level, threads=threads)
    finally:
        png.BAND_BYTES, png._DEFLATER, png.STEP_BYTES = saved
    np.testing.assert_array_equal(decoded(raw, dtype, channels), data)
    # One zlib stream across all IDAT chunks: zlib itself checks the header and the combined Adler-32.
    stream = b"".join(body for kind, body in chunks(raw) if kind == b"IDAT")
    filtered = zlib.decompress(stream)
    assert len(filtered) == height * (1 + width * channels * (2 if wide else 1))
    for kind, body in chunks(raw):
        assert struct.unpack(">I", raw[raw.index(kind + body) + 4 + len(body):][:4])[0] == zlib.crc32(kind + body)


@pytest.mark.parametrize("backend", backends(), ids=lambda m: m.__name__)
def test_a_large_image_in_parallel_bands_matches_one_band(monkeypatch, backend):
    monkeypatch.setattr(png, "_DEFLATER", backend)
    data = RNG.integers(0, 40, (800, 1400, 3), dtype=np.uint8).cumsum(axis=1, dtype=np.uint8)
    one = png.encode(data, compress_level=1, threads=1)
    two = png.encode(data, compress_level=1, threads=2)
    assert sum(kind == b"IDAT" for kind, _ in chunks(two)) == 2
    np.testing.assert_array_equal(decoded(two, np.uint8, 3), data)
    np.testing.assert_array_equal(decoded(one, np.uint8, 3), data)
    # Priming each band with the previous 32 KiB keeps the split almost free.
    assert len(two) < 1.01 * len(one)


@settings(derandomize=True, max_examples=30, deadline=None)
@given(a=st.binary(max_size=3000), b=st.binary(max_size=3000))
def test_adler32_combine_is_zlibs(a, b):
    assert png.adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)


@pytest.mark.parametrize("level", range(10))
def test_zlib_header_is_the_one_zlib_writes(level):
    assert png.zlib_header(level) == zlib.compress(b"x", level)[:2]


def test_rejects_other_sample_types():
    with pytest.raises(TypeError):
        png.encode(np.zeros((2, 2), np.float32))


def _photo_with_metadata(path, mode="RGB"):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "Maker"
    channels = len(mode)
    data = RNG.integers(0, 256, (30, 41, channels), dtype=np.uint8)
    Image.fromarray(data if channels > 1 else data[:, :, 0], mode).save(
        path, icc_profile=icc, dpi=(300, 72), exif=exif.tobytes())
    return data


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
def test_cli_keeps_pixels_and_metadata_as_pillow_would(tmp_path, mode):
    """A one-tap kernel leaves every pixel as it was; ICC, DPI and EXIF read back as Pillow wrote them."""
    data = _photo_with_metadata(tmp_path / "in.png", mode)
    done = subprocess.run([sys.executable, "-m", "convcli", "filter", str(tmp_path / "in.png"), "-k", "[[1]]",
                           "--alpha", "keep", "-o", str(tmp_path / "out.png")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "in.png") as before, Image.open(tmp_path / "out.png") as after:
        assert after.mode == mode
        got = np.asarray(after)
        np.testing.assert_array_equal(got if got.ndim == 3 else got[:, :, None], data)
        assert after.info["icc_profile"] == before.info["icc_profile"]
        assert after.info["dpi"] == before.info["dpi"]
        assert dict(after.getexif()) == dict(before.getexif())


def test_cli_png_pixels_equal_the_float_result_converted(tmp_path):
    """The PNG holds exactly to_samples of the filter's float output (same result as the .npy route)."""
    data = RNG.integers(0, 256, (64, 80, 3), dtype=np.uint8)
    Image.fromarray(data).save(tmp_path / "in.png")
    for out in ("out.png", "out.npy"):
        done = subprocess.run([sys.executable, "-m", "convcli", "filter", str(tmp_path / "in.png"), "-k",
                               "gaussian:sigma=2", "-o", str(tmp_path / out)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    expected, _ = to_samples(np.load(tmp_path / "out.npy"), np.uint8)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out.png")), expected)


def test_16_bit_grey_is_written_by_the_fast_writer(tmp_path):
    data = RNG.integers(0, 65536, (20, 25), dtype=np.uint16)
    Image.fromarray(data).save(tmp_path / "in.png")
    done = subprocess.run([sys.executable, "-m", "convcli", "filter", str(tmp_path / "in.png"), "-k", "[[1]]",
                           "--compress-level", "9", "-o", str(tmp_path / "out.png")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "out.png") as im:
        assert im.mode == "I;16"
        np.testing.assert_array_equal(np.asarray(im), data)


# ---- to_samples, a block of rows at a time ----------------------------------------------


def whole_array(values, dtype, mode, bits=None):
    """The direct definition: one float32 copy (exact for these types), round half to even, count, clip, cast."""
    import math

    lo, hi = samples_module.sample_range(dtype, bits)
    v = np.array(values, dtype=np.float32)
    if mode == "abs":
        v = np.abs(v)
    elif mode == "offset":
        v = v + np.float32((lo + hi + 1) / 2)  # in float32, as the conversion's policy says
    v = np.rint(v)
    clipped = int(np.count_nonzero((v < lo) | (v > hi)))
    assert math.isfinite(float(v.sum())) or v.size == 0
    return np.clip(v, lo, hi).astype(dtype), clipped


@settings(derandomize=True, max_examples=40, deadline=None)
@given(shape=st.sampled_from([(0,), (7,), (13, 2), (9, 11, 3), (1, 50), (31, 4, 4)]),
       dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.int8]),
       mode=st.sampled_from(["clip", "abs", "offset"]), block=st.sampled_from([1, 5, 64, 1 << 18]),
       scale=st.sampled_from([1.0, 300.0, 1e5]), strided=st.booleans(), parallel=st.booleans())
def test_block_conversion_matches_the_definition(shape, dtype, mode, block, scale, strided, parallel):
    rng = np.random.default_rng([sum(shape), block, int(scale), strided, parallel])  # the same on every replay
    values = (rng.standard_normal(shape) * scale).astype(np.float32)
    values[values > 0] = np.floor(values[values > 0]) + 0.5  # halves: round to even
    if strided and values.ndim >= 2:
        values = values[::2, ::-1]
    saved = samples_module.BLOCK, samples_module.PARALLEL
    samples_module.BLOCK = block
    samples_module.PARALLEL = 1 if parallel else saved[1]  # rows split between threads, whatever the size
    try:
        got, clipped = to_samples(values, dtype, mode)
    finally:
        samples_module.BLOCK, samples_module.PARALLEL = saved
    want, want_clipped = whole_array(values, dtype, mode)
    assert got.dtype == np.dtype(dtype) and got.shape == values.shape
    np.testing.assert_array_equal(got, want)
    assert clipped == want_clipped


def test_block_conversion_leaves_the_input_alone_and_counts_every_non_finite():
    values = RNG.standard_normal((40, 30, 3)).astype(np.float32) * 100
    values[3, 4, 1] = np.nan
    values[39, 29, 2] = np.inf
    values[20, 0, 0] = -np.inf
    copy = values.copy()
    saved = samples_module.BLOCK, samples_module.PARALLEL
    samples_module.BLOCK, samples_module.PARALLEL = 90, 1  # the three lie in different blocks and threads
    try:
        with pytest.raises(DataError, match=r"^3 non-finite samples"):
            to_samples(values, np.uint8, "offset")
    finally:
        samples_module.BLOCK, samples_module.PARALLEL = saved
    np.testing.assert_array_equal(values, copy)


# ---- 8-bit PNGs read through OpenCV ----------------------------------------------------------


def _read_both_ways(path, monkeypatch):
    """(signal via the OpenCV route, signal via Pillow alone, whether OpenCV decoded it)."""
    from convcli import io as cio
    from convcli.io import image

    used = []
    original = png.decode_with_opencv

    def spy(*args):
        pixels = original(*args)
        used.append(pixels is not None)
        return pixels

    monkeypatch.setattr(png, "decode_with_opencv", spy)
    monkeypatch.setattr(image, "OPENCV_PNG_PIXELS", 0)  # small test images take the OpenCV route too
    fast = cio.read(path)
    monkeypatch.setattr(image, "_png_pixel_stream", lambda source: None)
    slow = cio.read(path)
    return fast, slow, any(used)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16"])
@pytest.mark.parametrize("extra", ["plain", "metadata", "text", "transparency", "rotated", "optimized"])
def test_opencv_route_reads_what_pillow_reads(tmp_path, monkeypatch, mode, extra):
    from PIL import ImageCms, PngImagePlugin

    rng = np.random.default_rng(len(mode) * 7 + len(extra))
    base = rng.integers(0, 256, (23, 31, 4), dtype=np.uint8)
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65536, (23, 31), dtype=np.uint16))
    elif mode == "P":
        im = Image.fromarray(base[:, :, :3]).convert("P")
    else:
        im = Image.fromarray(base[:, :, :len(mode)] if len(mode) > 1 else base[:, :, 0], mode)
    options, exif = {}, Image.Exif()
    if extra == "metadata":
        exif[0x010F] = "Maker"
        exif[0x0112] = 1
        options.update(icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
                       dpi=(96.5, 72), exif=exif.tobytes())
    elif extra == "text":
        info = PngImagePlugin.PngInfo()
        info.add_text("XML:com.adobe.xmp", '<x tiff:Orientation="3"/>')
        options["pnginfo"] = info
    elif extra == "transparency" and mode in ("L", "RGB"):
        options["transparency"] = 5 if mode == "L" else (1, 2, 3)
    elif extra == "rotated":
        exif[0x0112] = 6
        options["exif"] = exif.tobytes()
    elif extra == "optimized":
        options["optimize"] = True
    im.save(tmp_path / "in.png", **options)
    fast, slow, used = _read_both_ways(tmp_path / "in.png", monkeypatch)
    assert fast.data.dtype == slow.data.dtype
    np.testing.assert_array_equal(fast.data, slow.data)
    assert fast.meta == slow.meta
    # The OpenCV route is taken exactly when nothing can make it differ (the XMP
    # packet of "text" says Orientation 3: Pillow turns those pixels, seen without decoding them).
    simple = mode in ("L", "RGB", "RGBA") and extra not in ("rotated", "text") and not (
        extra == "transparency" and mode in ("L", "RGB"))
    assert used == simple


def test_opencv_route_reads_interlaced_pngs(tmp_path, monkeypatch):
    data = RNG.integers(0, 256, (37, 29, 3), dtype=np.uint8)
    with Image.open(io.BytesIO(png.encode(data))) as im:
        assert im.info.get("interlace") is None
    # An Adam7 file from the pixels re-encoded by hand: libpng and Pillow must agree on it.
    passes = []
    for x0, y0, dx, dy in png16.ADAM7:
        sub = data[y0::dy, x0::dx]
        if sub.size:
            rows = sub.reshape(sub.shape[0], -1)
            passes.append(np.concatenate([np.zeros((rows.shape[0], 1), np.uint8), rows], axis=1).tobytes())
    body = zlib.compress(b"".join(passes))
    raw = (png.SIGNATURE + png.chunk(b"IHDR", struct.pack(">IIBBBBB", 29, 37, 8, 2, 0, 0, 1))
           + png.chunk(b"IDAT", body) + png.chunk(b"IEND", b""))
    (tmp_path / "adam7.png").write_bytes(raw)
    fast, slow, used = _read_both_ways(tmp_path / "adam7.png", monkeypatch)
    assert used
    np.testing.assert_array_equal(fast.data, data)
    np.testing.assert_array_equal(slow.data, data)


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_corrupt_pixel_data_is_one_line_and_libpng_stays_quiet(tmp_path, damage):
    """CRCs correct, deflate stream broken: Pillow's error, and nothing from libpng on stderr."""
    good = png.encode(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8), compress_level=1)
    body = b"".join(b for kind, b in chunks(good) if kind == b"IDAT")
    body = body[: len(body) // 2] if damage == "truncated" else body[:50] + bytes([body[50] ^ 0xFF]) + body[51:]
    start = good.index(b"IDAT") - 4
    (tmp_path / "bad.png").write_bytes(good[:start] + png.chunk(b"IDAT", body) + png.chunk(b"IEND", b""))
    done = subprocess.run([sys.executable, "-m", "convcli", "filter", str(tmp_path / "bad.png"), "-k", "box:3",
                           "-o", str(tmp_path / "out.png")], capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("convcli: error: ")
    assert "libpng" not in done.stderr and not (tmp_path / "out.png").exists()


def test_small_pngs_do_not_import_opencv_for_reading(tmp_path):
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "small.png")
    code = ("import sys; from convcli import io; io.read(sys.argv[1]); "
            "print('cv2' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "small.png")], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr
