"""Images in and out: every mode and format, 16-bit kept, orientation, ICC/DPI, limits, corrupt files."""
import io as pyio
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from conftest import convcli
from convcli import io
from convcli.engine import correlate
from convcli.errors import DataError, OutputError, UsageError
from convcli.io import png16
from convcli.io.samples import to_samples

KERNEL = np.array([[0.0, 0.5, 0.0], [0.0, 0.0, 0.25], [0.25, 0.0, 0.0]])  # asymmetric: catches flips
RNG = np.random.default_rng(7)


def _rgba(h=13, w=17):
    return RNG.integers(0, 256, (h, w, 4), dtype=np.uint8)


def _image(mode: str) -> Image.Image:
    base = Image.fromarray(_rgba(), "RGBA")
    if mode == "I;16":
        return Image.fromarray(RNG.integers(0, 65536, (13, 17), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(RNG.integers(-100000, 100000, (13, 17), dtype=np.int32))
    if mode == "F":
        return Image.fromarray(RNG.normal(size=(13, 17)).astype(np.float32))
    if mode == "P":
        return base.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return base.convert(mode)


def _filter_like_cli(sig):
    """The expected output: the engine on the decoded samples, then to_samples into the stored type."""
    values = correlate(sig.data, KERNEL, channel_axis=sig.channel_axis)
    return to_samples(values, sig.data.dtype, "clip")[0]


# mode -> formats that store it losslessly
LOSSLESS = {
    "1": ["png", "tif", "bmp", "pbm"],
    "L": ["png", "tif", "bmp", "pgm", "gif"],
    "LA": ["png", "tif"],
    "P": ["png", "tif", "bmp"],
    "RGB": ["png", "tif", "bmp", "ppm", "webp"],
    "RGBA": ["png", "tif", "webp"],
    "CMYK": ["tif"],
    "I;16": ["png", "tif", "pgm"],
    "I": ["tif"],
    "F": ["tif"],
}
CASES = [(mode, ext) for mode, exts in LOSSLESS.items() for ext in exts]


@pytest.mark.parametrize("mode,ext", CASES, ids=[f"{m}-{e}" for m, e in CASES])
def test_round_trip_filtered_equals_engine(tmp_path, mode, ext):
    src = tmp_path / f"in.{ext}"
    options = {"lossless": True} if ext == "webp" else {}
    _image(mode).save(src, **options)
    sig = io.read(src)
    assert sig.kind == "image"
    if mode == "P":
        assert sig.meta["mode"] in ("RGB", "RGBA")  # the palette expanded
    if mode == "1":
        assert set(np.unique(sig.data)) <= {0, 255}
    out = io.derive(sig, correlate(sig.data, KERNEL, channel_axis=sig.channel_axis))
    written = io.write(out, tmp_path / f"out.{ext}")
    back = io.read(tmp_path / f"out.{ext}")
    assert back.data.dtype == sig.data.dtype and back.data.shape == sig.data.shape
    # A filtered bilevel image is grey, not black and white: it is written as 8-bit grey, and says so.
    assert back.meta["mode"] == (sig.meta["mode"] if mode != "1" else "L")
    assert (mode == "1") == any("not black and white" in note for note in written.notes)
    expected = _filter_like_cli(sig)
    if mode == "P" and ext == "gif":
        pytest.skip("GIF re-quantises colour")
    diff = np.abs(back.data.astype(np.float64) - expected.astype(np.float64))
    assert diff.max() <= (1 if mode != "F" else 1e-6), (mode, ext, written.notes)


@pytest.mark.parametrize("ext,tolerance", [("jpg", 6.0), ("webp", 8.0)])
def test_lossy_formats_round_trip_close(tmp_path, ext, tolerance):
    Image.fromarray(np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], 48, 0).repeat(3, 2)).save(
        tmp_path / f"in.{ext}", quality=95
    )
    sig = io.read(tmp_path / f"in.{ext}")
    io.write(io.derive(sig, correlate(sig.data, KERNEL, channel_axis=-1)), tmp_path / f"out.{ext}")
    back = io.read(tmp_path / f"out.{ext}")
    assert back.meta["mode"] == "RGB" and back.data.shape == sig.data.shape
    assert np.abs(back.data.astype(float) - _filter_like_cli(sig)).mean() < tolerance


def test_cmyk_jpeg_stays_cmyk(tmp_path):
    Image.fromarray(_rgba(), "RGBA").convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    sig = io.read(tmp_path / "c.jpg")
    assert sig.meta["mode"] == "CMYK" and sig.data.shape[-1] == 4
    io.write(sig, tmp_path / "o.jpg")
    assert Image.open(tmp_path / "o.jpg").mode == "CMYK"
    notes = io.write(sig, tmp_path / "o.png").notes
    assert Image.open(tmp_path / "o.png").mode == "RGB" and "CMYK converted to RGB" in notes[0]


# ---- 16-bit ----------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_16_bit_png_stays_16_bit(tmp_path, channels):
    data = RNG.integers(0, 65536, (21, 19, channels), dtype=np.uint16)
    if channels == 1:
        Image.fromarray(data[:, :, 0]).save(tmp_path / "in.png")
    else:
        (tmp_path / "in.png").write_bytes(png16.encode(data))
    sig = io.read(tmp_path / "in.png")
    assert sig.data.dtype == np.uint16 and sig.meta["dtype"] == "uint16"
    np.testing.assert_array_equal(sig.data.reshape(data.shape), data)
    io.write(io.derive(sig, correlate(sig.data, KERNEL, channel_axis=sig.channel_axis)), tmp_path / "out.png")
    raw = (tmp_path / "out.png").read_bytes()
    assert raw[24] == 16  # IHDR bit depth
    back = io.read(tmp_path / "out.png")
    assert back.data.dtype == np.uint16
    assert np.abs(back.data.astype(np.int64) - _filter_like_cli(sig).astype(np.int64)).max() <= 1


def test_16_bit_png_agrees_with_pillow_on_the_high_byte(tmp_path):
    """Pillow reads 16-bit RGB as 8-bit by taking the high byte: an independent check of our decoder."""
    data = RNG.integers(0, 65536, (33, 40, 3), dtype=np.uint16)
    raw = png16.encode(data, compress_level=9)
    assert np.array_equal(np.asarray(Image.open(pyio.BytesIO(raw))), (data >> 8).astype(np.uint8))
    decoded, _ = png16.decode(raw, "x")
    np.testing.assert_array_equal(decoded, data)


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else (b if pb <= pc else c)


def _filter_rows(pixels: np.ndarray, bpp: int, types) -> bytes:
    """The PNG spec's filters written out literally, one byte at a time (an oracle for unfilter)."""
    rows = pixels.reshape(pixels.shape[0], -1).astype(int)
    out = bytearray()
    for r, t in enumerate(types):
        prev = rows[r - 1] if r else np.zeros_like(rows[r])
        out.append(t)
        for i, x in enumerate(rows[r]):
            a = rows[r][i - bpp] if i >= bpp else 0
            c = prev[i - bpp] if i >= bpp else 0
            b = prev[i]
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][t]
            out.append((x - pred) % 256)
    return bytes(out)


@pytest.mark.parametrize("seed", range(4))
def test_unfilter_matches_the_spec_for_every_filter(seed):
    rng = np.random.default_rng(seed)
    h, w, bpp = rng.integers(1, 9), rng.integers(1, 9), int(rng.choice([2, 4, 6, 8]))
    pixels = rng.integers(0, 256, (h, w, bpp), dtype=np.uint8)
    for types in (rng.integers(0, 5, h), rng.integers(0, 3, h), np.full(h, 4)):
        raw = _filter_rows(pixels, bpp, list(types))
        np.testing.assert_array_equal(png16.unfilter(raw, h, w, bpp), pixels)


def _png(ihdr_fields, rows_raw: bytes, extra=b"") -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (png16.SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", *ihdr_fields)) + extra
            + chunk(b"IDAT", zlib.compress(rows_raw)) + chunk(b"IEND", b""))


def test_interlaced_16_bit_png(tmp_path):
    h, w = 11, 9
    data = RNG.integers(0, 65536, (h, w, 3), dtype=np.uint16)
    raw = b""
    for x0, y0, dx, dy in png16.ADAM7:
        sub = data[y0::dy, x0::dx]
        if sub.size:
            pix = sub.astype(">u2").view(np.uint8).reshape(sub.shape[0], -1)
            raw += _filter_rows(pix.reshape(sub.shape[0], sub.shape[1], 6), 6, [4] * sub.shape[0])
    (tmp_path / "i.png").write_bytes(_png((w, h, 16, 2, 0, 0, 1), raw))
    np.testing.assert_array_equal(io.read(tmp_path / "i.png").data, data)


def test_16_bit_png_corruption(tmp_path):
    good = png16.encode(RNG.integers(0, 65536, (8, 8, 3), dtype=np.uint16))
    (tmp_path / "cut.png").write_bytes(good[:-30])
    with pytest.raises(DataError, match="truncated"):
        io.read(tmp_path / "cut.png")
    bad = bytearray(good)
    bad[40] ^= 0xFF  # inside IDAT
    (tmp_path / "crc.png").write_bytes(bytes(bad))
    with pytest.raises(DataError, match="CRC|corrupt"):
        io.read(tmp_path / "crc.png")


# ---- metadata ------------------------------------------------------------------------------


def test_exif_rotated_jpeg_comes_out_upright(tmp_path):
    # Stored 20 wide x 10 high with a bright left half; orientation 6 = rotate 90 degrees clockwise to view.
    stored = np.zeros((10, 20, 3), np.uint8)
    stored[:, :10] = 250
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    sig = io.read(tmp_path / "r.jpg")
    assert sig.data.shape == (20, 10, 3)  # upright: 10 wide, 20 high
    assert sig.data[:5].mean() > 200 and sig.data[-5:].mean() < 50  # the bright half is now on top
    io.write(sig, tmp_path / "o.jpg")
    out = Image.open(tmp_path / "o.jpg")
    assert out.size == (10, 20) and out.getexif().get(0x0112, 1) == 1
    kept = io.read(tmp_path / "r.jpg", auto_orient=False)
    assert kept.data.shape == (10, 20, 3)
    io.write(kept, tmp_path / "k.jpg")
    assert Image.open(tmp_path / "k.jpg").getexif().get(0x0112) == 6  # the tag still explains the pixels


@pytest.mark.parametrize("ext", ["png", "jpg", "tif"])
def test_icc_and_dpi_carried_over(tmp_path, ext):
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(_rgba()[:, :, :3]).save(tmp_path / f"in.{ext}", icc_profile=icc, dpi=(300, 300))
    sig = io.read(tmp_path / f"in.{ext}")
    assert sig.meta["icc_profile"] == icc and round(sig.meta["dpi"][0]) == 300
    io.write(sig, tmp_path / f"out.{ext}")
    out = Image.open(tmp_path / f"out.{ext}")
    assert out.info.get("icc_profile") == icc and round(out.info["dpi"][0]) == 300


def test_every_frame_of_a_gif_is_read(tmp_path):
    frames = [Image.fromarray(np.full((8, 8, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=[70, 90])
    sig = io.read(tmp_path / "a.gif")
    assert sig.frames and sig.spatial_ndim == 2 and sig.data.shape == (2, 8, 8, 3)
    assert sig.data[0].mean() == 10 and sig.data[1].mean() == 200
    assert sig.meta["animation"]["durations"] == [70, 90]


def test_tiff_resolution_gives_spacing(tmp_path):
    Image.fromarray(_rgba()[:, :, 0]).save(tmp_path / "r.tif", resolution_unit=3, x_resolution=40, y_resolution=20)
    assert io.read(tmp_path / "r.tif").spacing == pytest.approx((0.5, 0.25))  # mm per row, per column


# ---- limits and broken files -----------------------------------------------------------------


def test_bomb_header_refused_before_decoding(tmp_path):
    body = zlib.compress(b"\0" * 20)
    (tmp_path / "b.png").write_bytes(_png((100000, 100000, 8, 0, 0, 0, 0), b"", b"")[:33]
                                     + struct.pack(">I", len(body)) + b"IDAT" + body + b"\0\0\0\0")
    with pytest.raises(DataError, match="pixels") as err:
        io.read(tmp_path / "b.png")
    assert "max-pixels" in str(err.value)


def test_max_pixels_is_adjustable(tmp_path):
    Image.fromarray(np.zeros((40, 50), np.uint8)).save(tmp_path / "s.png")
    with pytest.raises(DataError, match="2,000 pixels is over the limit of 1,000"):
        io.read(tmp_path / "s.png", max_pixels=1000)
    assert io.read(tmp_path / "s.png", max_pixels=2000).data.shape == (40, 50)


def test_corrupt_images_are_data_errors(tmp_path):
    Image.fromarray(_rgba()).save(tmp_path / "ok.png")
    raw = (tmp_path / "ok.png").read_bytes()
    cases = {
        "trunc.png": raw[: len(raw) // 2],
        "sig_only.png": raw[:12],
        "zero.png": b"",
        "text.png": b"this is not an image\n" * 4,
        "wav_named.jpg": b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\0" * 40,
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError) as err:
            io.read(tmp_path / name)
        assert err.value.subject == str(tmp_path / name), name


def test_unsupported_mode_is_a_data_error(tmp_path):
    Image.fromarray(_rgba()[:, :, :3]).convert("LAB").save(tmp_path / "lab.tif")
    with pytest.raises(DataError, match="unsupported image mode LAB"):
        io.read(tmp_path / "lab.tif")


def test_kind_mismatch_and_shape_errors(tmp_path):
    Image.fromarray(_rgba()).save(tmp_path / "i.png")
    with pytest.raises(UsageError):
        io.read(tmp_path / "i.png", kind="audio")
    vol = io.Signal(np.zeros((3, 4, 5)), kind="volume")
    with pytest.raises(OutputError, match="cannot be written as an image"):
        io.write(vol, tmp_path / "v.png")
    assert not (tmp_path / "v.png").exists()


def test_nan_never_reaches_an_8_bit_file(tmp_path):
    sig = io.read_signal = io.Signal(np.array([[1.0, np.nan], [3.0, 4.0]]), kind="image",
                                     meta={"dtype": "uint8", "mode": "L"})
    (tmp_path / "o.png").write_bytes(b"previous")
    with pytest.raises(DataError, match="1 non-finite sample"):
        io.write(sig, tmp_path / "o.png")
    assert (tmp_path / "o.png").read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]


def test_an_image_larger_than_webp_holds_is_refused_in_one_line(tmp_path):
    Image.fromarray(np.zeros((1, 16384), np.uint8)).save(tmp_path / "wide.png")
    result = convcli("filter", str(tmp_path / "wide.png"), "-k", "identity", "-o", str(tmp_path / "wide.webp"))
    assert result.exit_code == 1 and result.stderr.splitlines() == [
        f"convcli: error: {tmp_path / 'wide.webp'}: 16384x1 is larger than WEBP holds (16383 pixels a side)"]
    assert not (tmp_path / "wide.webp").exists()
