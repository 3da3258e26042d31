"""TIFF through tifffile: every sample type and layout comes back bit-exact with every tag, as users run it.

The corpus is written here with tifffile (the reference TIFF library of the
scientific Python stack): 8/16/32-bit integers, 16/32/64-bit floats, grey,
grey+alpha, RGB, RGBA, contiguous and separate planes, several pages, BigTIFF,
big-endian, tiles, no compression, Deflate, LZW, PackBits, Zstandard, with
resolution, unit and descriptive tags.  ``convcli filter -k identity`` must
give back the same samples and the same tags (only where the samples lie may
differ), through the real command line.
"""
from __future__ import annotations

import struct
import time
from fractions import Fraction

import numpy as np
import pytest
import tifffile
from PIL import Image

from conftest import convcli, leftovers
from convcli import io
from convcli.errors import DataError

RNG = np.random.default_rng(13)
WHERE_SAMPLES_LIE = {273, 279, 324, 325}  # strip and tile offsets and byte counts
DESCRIPTIVE = [(269, 2, 0, "scan-0042", True), (315, 2, 0, "A. Photographer", True),
               (33432, 2, 0, "(c) nobody", True), (700, 1, 12, b"<x:xmpmeta/>", True)]


def samples(dtype, shape):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return (RNG.standard_normal(shape) * 100).astype(dtype)
    if dtype == bool:
        return RNG.integers(0, 2, shape).astype(bool)
    info = np.iinfo(dtype)
    return RNG.integers(info.min, info.max, shape, dtype=np.int64 if dtype.itemsize < 8 else dtype,
                        endpoint=True).astype(dtype)


def page_tags(path):
    """(byte order, BigTIFF, [(samples, {tag: value})]) of every page, values comparable across files."""
    with tifffile.TiffFile(path) as tif:
        pages = []
        for page in tif.pages:
            tags = {}
            for tag in page.tags:
                if tag.code in WHERE_SAMPLES_LIE:
                    continue
                value = tag.value
                if tag.code in (282, 283):
                    value = Fraction(*value)
                elif hasattr(value, "tolist"):
                    value = value.tolist()
                elif isinstance(value, tuple):
                    value = tuple(int(v) if hasattr(v, "value") else v for v in value)
                elif hasattr(value, "value"):
                    value = int(value)
                tags[tag.code] = value
            pages.append((page.asarray(), tags))
        return tif.byteorder, tif.is_bigtiff, pages


def identity(tmp_path, src, *extra, out_name="out.tif"):
    out = tmp_path / out_name
    result = convcli("filter", str(src), "-k", "identity", "--alpha", "channel", "-o", str(out), *extra)
    assert result.exit_code == 0, result.output
    return out, result


def assert_same_tiff(src, out):
    order_in, big_in, pages_in = page_tags(src)
    order_out, big_out, pages_out = page_tags(out)
    assert (order_out, big_out, len(pages_out)) == (order_in, big_in, len(pages_in))
    for (data_in, tags_in), (data_out, tags_out) in zip(pages_in, pages_out):
        assert data_out.dtype == data_in.dtype and data_out.shape == data_in.shape
        np.testing.assert_array_equal(data_out, data_in)
        assert tags_out == tags_in


# name, (dtype, shape of one page), tifffile.imwrite arguments
FLAVOURS = [
    ("grey8", ("uint8", (24, 31)), {}),
    ("rgb8-lzw-predictor", ("uint8", (24, 31, 3)), {"photometric": "rgb", "compression": "lzw", "predictor": True}),
    ("rgba8-packbits", ("uint8", (24, 31, 4)), {"photometric": "rgb", "extrasamples": ["unassalpha"],
                                                 "compression": "packbits"}),
    ("rgb16-deflate", ("uint16", (24, 31, 3)), {"photometric": "rgb", "compression": "zlib"}),
    ("greyalpha16", ("uint16", (24, 31, 2)), {"photometric": "minisblack", "extrasamples": ["unassalpha"],
                                              "planarconfig": "contig"}),
    ("int16-tiled", ("int16", (40, 37)), {"tile": (16, 16)}),
    ("uint32", ("uint32", (24, 31)), {}),
    ("int32-bigtiff", ("int32", (24, 31)), {"bigtiff": True}),
    ("float16", ("float16", (24, 31)), {}),
    ("rgb-float32-separate-predictor", ("float32", (3, 24, 31)),
     {"photometric": "rgb", "planarconfig": "separate", "compression": "zlib", "predictor": True}),
    ("rgb-float64-separate-2-pages", ("float64", (2, 3, 24, 31)), {"photometric": "rgb", "planarconfig": "separate"}),
    ("grey16-big-endian", ("uint16", (24, 31)), {"byteorder": ">"}),
    ("grey8-zstd-strips", ("uint8", (64, 31)), {"compression": "zstd", "rowsperstrip": 16}),
    ("bilevel", ("bool", (24, 31)), {"photometric": "minisblack"}),
    ("bilevel-min-is-white", ("bool", (24, 31)), {"photometric": "miniswhite"}),
    ("grey8-min-is-white", ("uint8", (24, 31)), {"photometric": "miniswhite"}),
    ("grey8-3-pages", ("uint8", (3, 24, 31)), {"photometric": "minisblack"}),
]


@pytest.mark.parametrize("name,sample_spec,arguments", FLAVOURS, ids=[f[0] for f in FLAVOURS])
def test_identity_gives_back_every_sample_and_tag(tmp_path, name, sample_spec, arguments):
    dtype, shape = sample_spec
    data = samples(dtype, shape)
    src = tmp_path / "in.tif"
    arguments = dict(arguments)
    write_options = {k: arguments.pop(k) for k in ("bigtiff", "byteorder") if k in arguments}
    tifffile.imwrite(src, data, metadata=None, software="scanner 2.1", description="a plain description",
                     datetime="2021:03:04 05:06:07", resolution=(118.11, 118.11), resolutionunit="centimeter",
                     extratags=DESCRIPTIVE, **write_options, **arguments)
    # 32-bit integers need more than float32's 24 bits of mantissa in the filter.
    precision = ("--precision", "float64") if np.dtype(dtype).itemsize == 4 and np.dtype(dtype).kind in "iu" else ()
    out, result = identity(tmp_path, src, *precision)
    assert result.stderr == ""
    assert_same_tiff(src, out)


def test_a_16_bit_rgb_tiff_as_imagemagick_writes_it_stays_16_bit(tmp_path):
    """The finding: Pillow read 16-bit RGB as 8-bit, silently, even through -k identity."""
    data = samples("uint16", (20, 30, 3))
    # ImageMagick's layout: one strip per few rows, RGB, 72 dpi, no compression.
    tifffile.imwrite(tmp_path / "im.tif", data, photometric="rgb", rowsperstrip=2, resolution=(72, 72),
                     resolutionunit="inch", metadata=None, software="ImageMagick 6.9.11-60 Q16")
    out, _ = identity(tmp_path, tmp_path / "im.tif")
    assert tifffile.imread(out).dtype == np.uint16
    assert_same_tiff(tmp_path / "im.tif", out)


def test_a_multi_page_tiff_keeps_its_resolution_and_tags_and_gets_no_imagej_description(tmp_path):
    """The finding: a stack at 72 dpi came back as an ImageJ stack in mm with an invented z spacing."""
    src = tmp_path / "pages.tif"
    with tifffile.TiffWriter(src) as tw:
        for index in range(3):
            tw.write(samples("uint8", (16, 20)), resolution=(72, 72), resolutionunit="inch", metadata=None,
                     software="Scanner", extratags=[(269, 2, 0, f"page {index}", False), (285, 2, 0, f"p{index}",
                                                                                         False)])
    out, _ = identity(tmp_path, src)
    assert_same_tiff(src, out)
    with tifffile.TiffFile(out) as tif:
        assert not tif.is_imagej and tif.pages[0].description == ""
        assert tif.pages[2].tags["DocumentName"].value == "page 2"


def test_the_volume_reading_of_a_stack_feeds_physical_kernels_from_imagej_spacing(tmp_path):
    volume = samples("uint16", (6, 10, 12))
    tifffile.imwrite(tmp_path / "v.tif", volume, imagej=True, resolution=(2.0, 4.0),
                     metadata={"spacing": 1.5, "unit": "mm", "axes": "ZYX"})
    sig = io.read(tmp_path / "v.tif")
    assert sig.kind == "volume" and sig.data.shape == (6, 10, 12)
    assert sig.spacing == pytest.approx((1.5, 0.25, 0.5))
    # A stride of 2 on every axis: the ImageJ description, resolution and spacing follow it.
    out = tmp_path / "s.tif"
    result = convcli("filter", str(tmp_path / "v.tif"), "-k", "box:3", "--stride", "2", "-o", str(out))
    assert result.exit_code == 0, result.output
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and len(tif.pages) == 3
        assert tif.imagej_metadata["images"] == 3 and tif.imagej_metadata["spacing"] == pytest.approx(3.0)
        assert tif.pages[0].tags["XResolution"].value == (1, 1) and tif.pages[0].tags["YResolution"].value == (2, 1)
    assert io.read(out).spacing == pytest.approx((3.0, 0.5, 1.0))


def test_stride_scales_the_resolution_as_stated(tmp_path):
    tifffile.imwrite(tmp_path / "r.tif", samples("uint8", (20, 30)), resolution=(300, 150), resolutionunit="inch",
                     metadata=None)
    out = tmp_path / "o.tif"
    assert convcli("filter", str(tmp_path / "r.tif"), "-k", "box:3", "--stride", "2,3", "-o", str(out)).exit_code == 0
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert page.shape == (10, 10)
        assert Fraction(*page.tags["XResolution"].value) == 100 and Fraction(*page.tags["YResolution"].value) == 75


def test_a_tifffile_shape_description_follows_a_stride(tmp_path):
    tifffile.imwrite(tmp_path / "s.tif", samples("uint16", (4, 12, 16)), photometric="minisblack")  # shaped
    out = tmp_path / "o.tif"
    assert convcli("filter", str(tmp_path / "s.tif"), "-k", "box:3", "--stride", "2", "-o", str(out)).exit_code == 0
    with tifffile.TiffFile(out) as tif:
        assert tif.is_shaped and tif.shaped_metadata[0]["shape"] == [2, 6, 8]
        assert tif.series[0].shape == (2, 6, 8)


def test_12_bit_samples_stay_12_bit(tmp_path):
    data = RNG.integers(0, 4096, (20, 30)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "b.tif", data, bitspersample=12, metadata=None)
    out, result = identity(tmp_path, tmp_path / "b.tif")
    assert result.stderr == ""
    assert_same_tiff(tmp_path / "b.tif", out)
    # A result past 12 bits is clipped to 4095, not written as a larger 16-bit value.
    result = convcli("filter", str(tmp_path / "b.tif"), "-k", "[[2]]", "-o", str(tmp_path / "x.tif"))
    assert result.exit_code == 0 and tifffile.imread(tmp_path / "x.tif").max() == 4095


def test_kind_image_reads_pages_as_frames_filtered_one_by_one(tmp_path):
    pages = samples("uint16", (3, 12, 14))
    tifffile.imwrite(tmp_path / "p.tif", pages, photometric="minisblack", metadata=None)
    sig = io.read(tmp_path / "p.tif", kind="image")
    assert sig.frames and sig.spatial_ndim == 2 and sig.data.shape == (3, 12, 14)
    out = tmp_path / "o.tif"
    result = convcli("filter", str(tmp_path / "p.tif"), "--kind", "image", "-k", "[[0,1],[1,0]]",
                     "--padding", "valid", "-o", str(out))
    assert result.exit_code == 0, result.output
    got = tifffile.imread(out)
    want = pages[:, :-1, 1:].astype(np.int64) + pages[:, 1:, :-1]  # each page on its own, no mixing
    np.testing.assert_array_equal(got, np.clip(want, 0, 65535))


def test_a_volume_from_an_array_gets_imagej_spacing_and_pillow_reads_every_page(tmp_path):
    volume = samples("uint8", (4, 9, 7))
    io.write(io.Signal(volume, kind="volume", spacing=(2.0, 0.5, 0.25), meta={"dtype": "uint8"}), tmp_path / "v.tif")
    with tifffile.TiffFile(tmp_path / "v.tif") as tif:
        assert tif.is_imagej and tif.imagej_metadata["spacing"] == pytest.approx(2.0)
    with Image.open(tmp_path / "v.tif") as im:
        assert im.n_frames == 4
        im.seek(2)
        np.testing.assert_array_equal(np.asarray(im), volume[2])
    assert io.read(tmp_path / "v.tif").spacing == pytest.approx((2.0, 0.5, 0.25))


def test_compress_level_chooses_deflate_and_zero_none(tmp_path):
    src = tmp_path / "l.tif"
    tifffile.imwrite(src, samples("uint8", (30, 30)), compression="lzw", metadata=None)
    for level, compression in ((6, 8), (0, 1), (None, 5)):
        extra = ("--compress-level", str(level)) if level is not None else ()
        out, _ = identity(tmp_path, src, *extra)
        with tifffile.TiffFile(out) as tif:
            assert tif.pages[0].compression == compression
        np.testing.assert_array_equal(tifffile.imread(out), tifffile.imread(src))


def test_jpeg_compressed_tiff_keeps_its_quality(tmp_path):
    src = tmp_path / "j.tif"
    image = np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], 48, 0).repeat(3, 2)
    tifffile.imwrite(src, image, photometric="rgb", compression="jpeg", compressionargs={"level": 60}, metadata=None)
    out, _ = identity(tmp_path, src)
    assert io.read(out).meta["tiff"]["quality"] == io.read(src).meta["tiff"]["quality"] == 60
    assert abs(out.stat().st_size - src.stat().st_size) <= 0.05 * src.stat().st_size


def test_exif_directories_and_stale_ranges_are_named_not_silently_lost(tmp_path):
    src = tmp_path / "e.tif"
    tifffile.imwrite(src, samples("uint8", (8, 8)), metadata=None, extratags=[(280, 3, 1, 3, True),
                                                                            (281, 3, 1, 250, True)])
    _, result = identity(tmp_path, src)
    assert "MinSampleValue" in result.stderr and "MaxSampleValue" in result.stderr


def test_thumbnails_are_left_out_with_a_note(tmp_path):
    src = tmp_path / "t.tif"
    with tifffile.TiffWriter(src) as tw:
        tw.write(samples("uint8", (32, 32, 3)), photometric="rgb", metadata=None)
        tw.write(samples("uint8", (8, 8, 3)), photometric="rgb", subfiletype=1, metadata=None)
    sig = io.read(src)
    assert sig.kind == "image" and sig.data.shape == (32, 32, 3)
    _, result = identity(tmp_path, src)
    assert "1 reduced-resolution TIFF page(s)" in result.stderr


# ---- hostile files -------------------------------------------------------------------------


def many_pages(count: int) -> bytes:
    """A classic TIFF of `count` 1x1 grey pages, each IFD pointing at the next (all share one sample)."""
    entries = [(256, 3, 1, 1), (257, 3, 1, 1), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1), (273, 4, 1, 8),
               (277, 3, 1, 1), (278, 3, 1, 1), (279, 4, 1, 1)]
    ifd_size = 2 + 12 * len(entries) + 4
    out = bytearray(b"II*\x00" + struct.pack("<I", 10) + b"\x80\x00")
    for index in range(count):
        start = 10 + index * ifd_size
        out += struct.pack("<H", len(entries))
        for tag, typ, n, value in entries:
            out += struct.pack("<HHI", tag, typ, n) + (struct.pack("<HH", value, 0) if typ == 3
                                                        else struct.pack("<I", value))
        out += struct.pack("<I", start + ifd_size if index < count - 1 else 0)
    return bytes(out)


def test_a_70000_page_tiff_is_refused_from_its_directories_before_any_page_is_parsed(tmp_path, monkeypatch):
    (tmp_path / "bomb.tif").write_bytes(many_pages(70_000))
    out = tmp_path / "o.tif"
    # The refusal comes from walking the directory chain: tifffile (about 0.1 ms a page) never opens the file.
    monkeypatch.setattr(tifffile, "TiffFile", None)
    start = time.perf_counter()
    result = convcli("filter", str(tmp_path / "bomb.tif"), "-k", "box:3", "-o", str(out))
    elapsed = time.perf_counter() - start
    assert result.exit_code == 1 and "more than 65536 TIFF pages" in result.stderr
    assert len(result.stderr.splitlines()) == 1 and not out.exists() and not leftovers(tmp_path)
    assert elapsed < 3, elapsed  # the walk takes about 0.05 s (bench/hostile_harness.py times the whole process)


def test_a_truncated_strip_is_a_data_error_not_zeros(tmp_path):
    tifffile.imwrite(tmp_path / "c.tif", samples("uint16", (64, 64)), compression="zlib", rowsperstrip=8,
                     metadata=None)
    raw = (tmp_path / "c.tif").read_bytes()
    with tifffile.TiffFile(tmp_path / "c.tif") as tif:
        end = tif.pages[0].dataoffsets[-1]
    (tmp_path / "cut.tif").write_bytes(raw[:end + 3])
    with pytest.raises(DataError, match="truncated TIFF"):
        io.read(tmp_path / "cut.tif")


def test_a_corrupt_strip_is_one_error_line(tmp_path):
    tifffile.imwrite(tmp_path / "c.tif", samples("uint16", (64, 64)), compression="zlib", metadata=None)
    raw = bytearray((tmp_path / "c.tif").read_bytes())
    with tifffile.TiffFile(tmp_path / "c.tif") as tif:
        start = tif.pages[0].dataoffsets[0]
    raw[start + 2:start + 40] = b"\xff" * 38
    (tmp_path / "bad.tif").write_bytes(bytes(raw))
    result = convcli("filter", str(tmp_path / "bad.tif"), "-k", "box:3", "-o", str(tmp_path / "o.tif"))
    assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"convcli: error: {tmp_path / 'bad.tif'}: ")
    assert not (tmp_path / "o.tif").exists()


def test_a_page_claiming_a_huge_size_is_refused_before_decoding(tmp_path):
    raw = bytearray(many_pages(1))
    # Width and height (SHORT values in the first two entries) set to 65535 x 65535.
    struct.pack_into("<H", raw, 10 + 2 + 8, 65535)
    struct.pack_into("<H", raw, 10 + 2 + 12 + 8, 65535)
    (tmp_path / "huge.tif").write_bytes(bytes(raw))
    with pytest.raises(DataError, match="over the limit"):
        io.read(tmp_path / "huge.tif")


@pytest.mark.parametrize("fault", ["zero denominator", "unknown unit"])
def test_a_broken_resolution_is_no_resolution_not_a_crash(tmp_path, fault):
    tifffile.imwrite(tmp_path / "r.tif", samples("uint8", (8, 8)), resolution=(300, 300), resolutionunit="inch",
                     metadata=None)
    raw = bytearray((tmp_path / "r.tif").read_bytes())
    with tifffile.TiffFile(tmp_path / "r.tif") as tif:
        tags = tif.pages[0].tags
        where = tags[282].valueoffset + 4 if fault == "zero denominator" else tags[296].valueoffset
    struct.pack_into("<I" if fault == "zero denominator" else "<H", raw, where, 0 if fault == "zero denominator"
                     else 77)
    (tmp_path / "bad.tif").write_bytes(bytes(raw))
    assert "resolution" not in io.read(tmp_path / "bad.tif").meta
    result = convcli("filter", str(tmp_path / "bad.tif"), "-k", "box:3", "--stride", "2", "-o", str(tmp_path / "o.tif"))
    assert result.exit_code == 0, result.output
