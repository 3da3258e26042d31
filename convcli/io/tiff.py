"""TIFF through tifffile: every sample type and layout, written back as it was read.

Reading: the chain of page directories is walked first, straight from the
file's bytes (:func:`page_offsets`: bounded, loop-proof, a 70,000-page file is
refused in milliseconds), then every page's header is checked against the
limits before one is decoded.  Pages of 8/16/32/64-bit integers and 16/32/64-bit
floats, grey, RGB(A), CMYK or with extra samples, in strips or tiles,
contiguous or separate planes, classic or BigTIFF, any compression tifffile
and imagecodecs decode, are read in their own sample type.  Bilevel pages
become 0/255, min-is-white pages are inverted to min-is-black (and back on
writing), palettes are expanded to RGB.  One page is an image; several pages
are a volume, or the frames of one image with ``kind="image"``.

``meta["tiff"]`` keeps what the file says beyond the samples: byte order,
BigTIFF, and per page its layout (photometric, planar configuration,
compression, predictor, tiles or strips, extra samples, bits per sample,
subfile type) and every other tag as its raw bytes (DocumentName,
ImageDescription, Software, DateTime, Artist, XMP, GeoTIFF, ImageJ, ...).
The resolution travels in ``meta["resolution"]`` (so that a stride scales
it) and the ICC profile in ``meta["icc_profile"]``.  The writer puts all of
it back, page by page; what it must change (an ImageJ or tifffile
description of the shape after a stride, a compression that cannot hold the
new sample type) it changes, and what it cannot keep (EXIF and GPS
sub-directories) it names in ``Written.notes``.
"""
from __future__ import annotations

import contextlib
import logging
import re
import struct

from ..errors import DataError, FormatMismatch, OutputError, UsageError

UNIT_MM = {"mm": 1.0, "millimeter": 1.0, "millimetre": 1.0, "cm": 10.0, "centimeter": 10.0, "m": 1000.0,
           "meter": 1000.0, "micron": 1e-3, "um": 1e-3, "µm": 1e-3, "\\u00B5m": 1e-3, "nm": 1e-6, "inch": 25.4}
RESUNIT_MM = {2: 25.4, 3: 10.0}  # TIFF ResolutionUnit: inch, centimetre
MAX_PAGES = 65536

MINISWHITE, MINISBLACK, RGB, PALETTE, SEPARATED, YCBCR = 0, 1, 2, 3, 5, 6
LAB_PHOTOMETRICS = {8: "CIELAB", 9: "ICCLAB", 10: "ITULAB"}
NONE, JPEG, ADOBE_DEFLATE, DEFLATE = 1, 7, 8, 32946
LOSSY = {JPEG, 34712, 50001, 50002, 34933, 34934}  # JPEG, JPEG 2000, WebP, JPEG XL and their kin
# Tags tifffile writes itself from the samples and the layout (or that point into the input file and
# cannot be copied): every other tag of a page is copied as its raw bytes.
LAYOUT_TAGS = {254, 256, 257, 258, 259, 262, 266, 273, 277, 278, 279, 282, 283, 284, 296, 317, 320, 322, 323, 324,
               325, 338, 339, 347, 400, 513, 514, 530, 532, 32997, 32998, 34675, 288, 289}
SUBDIRECTORIES = {330: "SubIFDs", 34665: "EXIF", 34853: "GPS", 40965: "interoperability"}
# The range of the samples: no longer true once they are filtered.
RANGE_TAGS = {280: "MinSampleValue", 281: "MaxSampleValue", 340: "SMinSampleValue", 341: "SMaxSampleValue"}
OFFSET_TYPES = {13, 18}  # IFD and IFD8 values are file offsets
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 16: 8, 17: 8}
FIRST_PAGE_TAGS = {270, 305, 306, 50838, 50839}  # of a series: not repeated on later pages


# ---- reading -------------------------------------------------------------------------------


def read_tiff(source, fmt: str, *, limits, kind=None, key=None, auto_orient=True, stream=False):
    """Reader for TIFF: one page is an image, several pages a volume (or, with ``kind="image"``, frames)."""
    if kind in ("signal", "audio"):
        raise UsageError(f"an image file cannot be read as {kind}", subject="--kind")
    with source.open() as fh, tiff_errors(source.name), _bytes_of(fh, source) as raw:
        count = len(page_offsets(raw, source.name))
        import tifffile

        with tifffile.TiffFile(fh) as tif:
            pages, thumbnails = _main_pages(tif, count, source.name, limits)
            spec = PageSpec.of(pages[0], source.name)
            as_volume = kind == "volume" or (len(pages) > 1 and kind != "image")
            shape = (len(pages),) + spec.shape
            limits.check_samples(shape, spec.dtype.itemsize, source.name)
            data = _decode(pages, spec, shape, len(raw), source.name)
            meta = _meta(tif, pages, spec, raw, fh)
    if thumbnails:
        meta["thumbnails_dropped"] = thumbnails
    return _signal(data, meta, spec, as_volume, len(pages))


@contextlib.contextmanager
def _bytes_of(fh, source):
    """The input's bytes for walking its directories: stdin's as they are, a file's read as the walk goes."""
    if source.data is not None:
        yield _Bytes(memoryview(source.data), len(source.data), source.name)
    else:
        yield _Bytes(fh.fileno(), source.size, source.name)


class _Bytes:
    """Bytes of a TIFF for :func:`page_offsets`: in memory, or read from a file 64 KiB at a time with pread.

    Not a memory map: a mapped page of a file cut short by another program
    is a SIGBUS when touched (the process dies without a word); a read
    that comes back short is one error line.  A page-count bomb's
    directories follow one another, so a window of the file serves
    hundreds of them.
    """

    WINDOW = 1 << 16

    def __init__(self, data, size: int, subject: str) -> None:
        self._fd = data if isinstance(data, int) else None
        self._window, self._start = (b"", 0) if self._fd is not None else (data, 0)
        self._size, self.subject = size, subject

    def __len__(self) -> int:
        return self._size

    def unpack(self, layout: struct.Struct, offset: int) -> tuple:
        """``layout.unpack`` of the bytes at ``offset`` (the caller has checked that the file holds them)."""
        at = offset - self._start
        if self._fd is not None and not (0 <= at and at + layout.size <= len(self._window)):
            import os

            self._start, self._window, at = offset, os.pread(self._fd, max(self.WINDOW, layout.size), offset), 0
            if len(self._window) < layout.size:
                raise DataError(f"the file shrank while it was read: it ends before byte {offset + layout.size:,}",
                                subject=self.subject)
        return layout.unpack_from(self._window, at)


def page_offsets(raw, subject: str) -> list[int]:
    """The file offset of every page directory, walking the chain from the header (``raw``: a :class:`_Bytes`).

    Bounded (at most MAX_PAGES), refusing a chain that loops or runs past
    the end of the file: a page-count bomb costs microseconds per page.
    """
    size = len(raw)
    order = {b"II": "<", b"MM": ">"}.get(raw.unpack(struct.Struct("2s"), 0)[0] if size >= 2 else b"")
    if order is None or size < 8:
        raise DataError("not a TIFF file (truncated header)", subject=subject)
    (version,) = raw.unpack(struct.Struct(order + "H"), 2)
    if version == 42:
        (offset,) = raw.unpack(struct.Struct(order + "I"), 4)
        count_format, entry, next_format = struct.Struct(order + "H"), 12, struct.Struct(order + "I")
    elif version == 43 and size >= 16:
        (offset,) = raw.unpack(struct.Struct(order + "Q"), 8)
        count_format, entry, next_format = struct.Struct(order + "Q"), 20, struct.Struct(order + "Q")
    else:
        raise DataError(f"not a TIFF file (version {version})", subject=subject)
    count_size, next_size = count_format.size, next_format.size
    offsets, seen = [], set()
    while offset:
        if offset in seen:
            raise DataError("corrupt TIFF (the chain of pages loops back)", subject=subject)
        if offset + count_size > size:
            raise DataError(f"truncated TIFF (page {len(offsets) + 1}'s directory lies past the end of the file)",
                            subject=subject)
        (entries,) = raw.unpack(count_format, offset)
        end = offset + count_size + entries * entry
        if end + next_size > size:
            raise DataError(f"truncated TIFF (page {len(offsets) + 1}'s directory runs past the end of the file)",
                            subject=subject)
        seen.add(offset)
        offsets.append(offset)
        if len(offsets) > MAX_PAGES:
            raise DataError(f"more than {MAX_PAGES} TIFF pages", subject=subject)
        (offset,) = raw.unpack(next_format, end)
    if not offsets:
        raise DataError("the TIFF holds no page", subject=subject)
    return offsets


def _main_pages(tif, count: int, subject: str, limits):
    """The pages to read (reduced-resolution copies after the first are left out) and how many were left out."""
    pages, thumbnails = [], 0
    for index in range(count):
        page = tif.pages[index]
        if not hasattr(page, "tags"):  # a TiffFrame: tifffile's light page, without tags
            page = page.aspage()
        if index and page.subfiletype & 1:
            thumbnails += 1
            continue
        limits.check_pixels(page.imagewidth, page.imagelength, subject)
        if pages:
            first = pages[0]
            if (page.imagelength, page.imagewidth) != (first.imagelength, first.imagewidth):
                raise DataError(f"pages differ in size ({first.imagewidth}x{first.imagelength} and "
                                f"{page.imagewidth}x{page.imagelength}) and cannot stack", subject=subject)
            if (page.dtype, page.samplesperpixel, page.photometric) != (first.dtype, first.samplesperpixel,
                                                                          first.photometric):
                raise DataError(f"pages differ in sample type ({_kind_of(first)} and {_kind_of(page)}) and "
                                "cannot stack", subject=subject)
        limits.check_samples((len(pages) + 1, page.imagelength, page.imagewidth, page.samplesperpixel),
                             max(1, (page.bitspersample + 7) // 8), subject)
        pages.append(page)
    return pages, thumbnails


def _kind_of(page) -> str:
    return f"{page.samplesperpixel}x{page.dtype}, photometric {int(page.photometric)}"


class PageSpec:
    """How a page's stored samples become convcli's: shape (rows, columns[, channels]), type and conversion."""

    def __init__(self, page, shape, dtype, axes: str, convert):
        self.page, self.shape, self.dtype, self.axes, self.convert = page, shape, dtype, axes, convert
        # Samples convcli takes as tifffile decodes them are decoded straight into the volume's memory.
        photometric = int(page.photometric)
        self.as_decoded = (axes != "SYX" and dtype == page.dtype and photometric != PALETTE
                           and not (photometric == MINISWHITE and dtype.kind == "u"))

    @classmethod
    def of(cls, page, subject: str) -> "PageSpec":
        import numpy as np

        photometric = int(page.photometric)
        if photometric in LAB_PHOTOMETRICS:
            raise DataError(f"unsupported image mode LAB ({LAB_PHOTOMETRICS[photometric]} TIFF)", subject=subject)
        if page.dtype is None or np.dtype(page.dtype).kind not in "biuf":
            raise DataError(f"unsupported TIFF sample format ({page.bitspersample}-bit, format "
                            f"{int(page.sampleformat)})", subject=subject)
        if page.is_volumetric or page.axes not in ("YX", "YXS", "SYX"):
            raise DataError(f"unsupported TIFF page layout (axes {page.axes})", subject=subject)
        if photometric == YCBCR and int(page.compression) != JPEG:
            raise DataError("unsupported image mode YCbCr (a TIFF of YCbCr samples not compressed as JPEG)",
                            subject=subject)
        stored = np.dtype(page.dtype)
        h, w, spp = page.imagelength, page.imagewidth, page.samplesperpixel
        convert = _converter(page, stored)
        if photometric == PALETTE and page.colormap is not None and spp == 1:
            wide = palette_divisor(page.colormap) is None
            return cls(page, (h, w, 3), np.dtype(np.uint16 if wide else np.uint8), page.axes, convert)
        dtype = np.dtype(np.uint8) if stored.kind == "b" else stored
        return cls(page, (h, w) if spp == 1 else (h, w, spp), dtype, page.axes, convert)


def _converter(page, stored):
    """The function from tifffile's decoded page to convcli's samples (channels last, 0/255, min-is-black)."""
    import numpy as np

    photometric, spp = int(page.photometric), page.samplesperpixel
    top = (1 << page.bitspersample) - 1 if stored.kind == "u" else None

    def convert(arr):
        if page.axes == "SYX":
            arr = np.moveaxis(arr, 0, -1)
        if arr.dtype == bool:
            ink = arr if photometric != MINISWHITE else ~arr
            return np.where(ink, np.uint8(255), np.uint8(0))
        if photometric == MINISWHITE and top is not None:
            return (top - arr).astype(arr.dtype)
        if photometric == PALETTE and page.colormap is not None and spp == 1:
            colormap = np.asarray(page.colormap)
            rgb = np.moveaxis(colormap[:, arr], 0, -1)
            divisor = palette_divisor(colormap)
            return rgb if divisor is None else (rgb // divisor).astype(np.uint8)
        return arr

    return convert


def palette_divisor(colormap) -> int | None:
    """What turns a TIFF colormap's 16-bit entries into 8-bit colours (None: they are 16-bit colours).

    Writers scale 8-bit colours as v * 257 (libtiff's tools) or v * 256 (Pillow).
    """
    import numpy as np

    colormap = np.asarray(colormap)
    for divisor in (257, 256):
        if not np.any(colormap % divisor):
            return divisor
    return None


def _decode(pages, spec: PageSpec, shape, file_size: int, subject: str):
    """Every page's samples into one array (pages, rows, columns[, channels])."""
    import numpy as np

    from ..parallel import thread_count

    data = np.empty(shape, dtype=spec.dtype)
    for index, page in enumerate(pages):
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            if count and offset + count > file_size:
                raise DataError(f"truncated TIFF (page {index + 1}'s samples run past the end of the file)",
                                subject=subject)
        if not any(page.databytecounts):
            raise DataError(f"page {index + 1} of the TIFF holds no samples", subject=subject)
        with _logged_errors(subject):
            if spec.as_decoded:
                page.asarray(out=data[index], maxworkers=thread_count())
            else:
                data[index] = spec.convert(page.asarray(maxworkers=thread_count()))
    return data


def _meta(tif, pages, spec: PageSpec, raw, fh) -> dict:
    """What the file says beyond the samples: sample type, mode, colour, resolution and every page's tags."""
    import numpy as np

    first = pages[0]
    extrasamples = tuple(int(v) for v in first.extrasamples)
    channels = spec.shape[2] if len(spec.shape) == 3 else 1
    alpha = bool(extrasamples) and extrasamples[-1] in (1, 2)
    meta = {"format": "tiff", "dtype": spec.dtype.name, "alpha": alpha}
    mode = pillow_mode(spec.dtype, channels, int(first.photometric), first.bitspersample == 1, alpha)
    if mode:
        meta["mode"] = mode
    icc = first.tags.get(34675)
    if icc is not None:
        meta["icc_profile"] = _raw_value(fh, icc)
    resolution = _resolution(first)
    if resolution is not None:
        meta["resolution"] = resolution
        (xn, xd), (yn, yd), unit = resolution
        if unit in RESUNIT_MM and xd and yd and xn and yn:
            per_inch = 25.4 / RESUNIT_MM[unit]
            meta["dpi"] = (xn / xd * per_inch, yn / yd * per_inch)
    quality = _jpeg_quality(first, fh) if int(first.compression) == JPEG else None
    meta["tiff"] = {
        "byteorder": tif.byteorder, "bigtiff": bool(tif.is_bigtiff), "pages": [_layout(p, fh) for p in pages],
        "shape": (len(pages),) + tuple(spec.shape), "quality": quality,
        "bits": first.bitspersample if np.dtype(spec.dtype).kind in "iu" and first.bitspersample not in (
            1, 8, 16, 32, 64) else None,
    }
    return meta


def _jpeg_quality(page, fh) -> int | None:
    """The quality of a JPEG-compressed page: from its shared JPEGTables, else from its first strip's own."""
    from .jpegq import dqt_tables, estimate_quality

    tables = page.tags.get(347)
    if tables is not None:
        found = dqt_tables(_raw_value(fh, tables))
    else:
        fh.seek(page.dataoffsets[0])
        found = dqt_tables(fh.read(min(int(page.databytecounts[0]), 1 << 16)))
    return estimate_quality(found)


def pillow_mode(dtype, channels: int, photometric: int, bilevel: bool, alpha: bool) -> str | None:
    """The Pillow-style mode naming these samples, for the other image formats (None: there is none)."""
    import numpy as np

    if bilevel:
        return "1"
    name = np.dtype(dtype).name
    if name == "uint8" and channels == 4 and photometric == SEPARATED:
        return "CMYK"
    return {("uint8", 1): "L", ("uint8", 2): "LA", ("uint8", 3): "RGB", ("uint8", 4): "RGBA",
            ("uint16", 1): "I;16", ("uint16", 2): "LA;16", ("uint16", 3): "RGB;16", ("uint16", 4): "RGBA;16",
            ("int16", 1): "I;16S", ("int32", 1): "I", ("float32", 1): "F"}.get((name, channels))


def _resolution(page):
    """((x num, den), (y num, den), unit) as the page states them, or None."""
    tags = page.tags
    if 282 not in tags or 283 not in tags:
        return None
    try:
        x, y = tuple(int(v) for v in tags[282].value), tuple(int(v) for v in tags[283].value)
        unit = int(tags[296].value) if 296 in tags else 2
    except (TypeError, ValueError):
        return None
    if len(x) != 2 or len(y) != 2 or not (x[1] and y[1]) or unit not in (1, 2, 3):
        return None  # a zero denominator or an unknown unit states no resolution
    return (x, y, unit)


def _layout(page, fh) -> dict:
    """One page's layout and its other tags (raw bytes), as the writer puts them back."""
    tags, dropped = [], []
    for tag in page.tags:
        code = tag.code
        if code in SUBDIRECTORIES:
            dropped.append(SUBDIRECTORIES[code])
        elif code in RANGE_TAGS:
            dropped.append(RANGE_TAGS[code])
        elif code not in LAYOUT_TAGS and int(tag.dtype) not in OFFSET_TYPES and int(tag.dtype) in TYPE_SIZES:
            value = _raw_value(fh, tag)
            if len(value) == tag.count * TYPE_SIZES[int(tag.dtype)]:  # else it runs past the end of the file
                tags.append((code, int(tag.dtype), tag.count, value))
    tile = (page.tilelength, page.tilewidth) if page.is_tiled else None
    return {
        "photometric": int(page.photometric), "planarconfig": int(page.planarconfig),
        "compression": int(page.compression), "predictor": int(page.predictor), "tile": tile,
        "rowsperstrip": None if tile else int(page.rowsperstrip), "extrasamples": tuple(int(v) for v in page.extrasamples),
        "subfiletype": int(page.subfiletype), "subsampling": tuple(page.subsampling) if page.subsampling else None,
        "has_resolution": 282 in page.tags, "tags": tags, "dropped": dropped,
    }


def _raw_value(fh, tag) -> bytes:
    """A tag's value as the bytes stored in the file (in its byte order)."""
    fh.seek(tag.valueoffset)
    return fh.read(tag.count * TYPE_SIZES.get(int(tag.dtype), 1))


def _signal(data, meta: dict, spec: PageSpec, as_volume: bool, count: int):
    from .signal import Signal

    channel_axis = -1 if len(spec.shape) == 3 else None
    if as_volume:
        spacing = tiff_spacing(meta, 3)
        return Signal(data=data, kind="volume", channel_axis=channel_axis, spacing=spacing, meta=meta)
    if count == 1:
        data = data[0]
    return Signal(data=data, kind="image", channel_axis=channel_axis, spacing=tiff_spacing(meta, 2), meta=meta,
                  frames=count > 1)


def description_of(layout: dict) -> str | None:
    """A page's ImageDescription as text (None when it has none)."""
    for code, _dtype, _count, value in layout["tags"]:
        if code == 270:
            return bytes(value).split(b"\0", 1)[0].decode("latin1")
    return None


def tiff_spacing(meta: dict, ndim: int):
    """Millimetres per sample along (rows, columns), or (slices, rows, columns), from the resolution tags.

    None when the file states no physical unit.  Slices are as far apart as
    an ImageJ ``spacing=`` says, else as far as columns (isotropic).
    """
    resolution = meta.get("resolution")
    if resolution is None:
        return None
    (xn, xd), (yn, yd), unit = resolution
    description = description_of(meta["tiff"]["pages"][0]) or ""
    unit_text = re.search(r"^unit=(\S+)", description, re.MULTILINE)
    z = re.search(r"^spacing=([0-9.eE+-]+)", description, re.MULTILINE)
    if unit_text and unit_text.group(1).lower() in UNIT_MM:
        per_unit = UNIT_MM[unit_text.group(1).lower()]
    else:
        per_unit = RESUNIT_MM.get(unit)
    if per_unit is None or not (xn > 0 and yn > 0 and xd > 0 and yd > 0):
        return None
    dx, dy = per_unit * xd / xn, per_unit * yd / yn
    if ndim == 2:
        return (dy, dx)
    dz = dx
    if z:
        with contextlib.suppress(ValueError):
            dz = float(z.group(1)) * per_unit
    return (dz, dy, dx)


@contextlib.contextmanager
def tiff_errors(subject: str):
    """Map everything tifffile and its codecs raise on a bad file to one DataError."""
    with decode_errors(subject, "the TIFF", "the image"), _quiet_log():
        yield


@contextlib.contextmanager
def decode_errors(subject: str, what: str, whole: str):
    """tifffile's and its codecs' errors decoding ``what`` (of ``whole``) as one DataError naming ``subject``."""
    from ..errors import ConvcliError

    try:
        yield
    except ConvcliError:
        raise
    except MemoryError:
        raise DataError(f"{whole} is too large to decode in memory", subject=subject) from None
    except Exception as exc:  # tifffile's and imagecodecs' errors have no common base
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"cannot decode {what}: {text[:200]}", subject=subject) from None


class _Kept(logging.Handler):
    """Keeps tifffile's log records instead of printing them."""

    def __init__(self):
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _quiet_log():
    """tifffile logs what it finds wrong instead of raising; nothing below the CLI prints, so keep it."""
    logger = logging.getLogger("tifffile")
    kept = _Kept()
    saved = logger.propagate
    logger.addHandler(kept)
    logger.propagate = False
    try:
        yield kept
    finally:
        logger.removeHandler(kept)
        logger.propagate = saved


@contextlib.contextmanager
def _logged_errors(subject: str):
    """Decode a page; an error tifffile only logs (a strip it could not decode, filled with zeros) is raised."""
    with _quiet_log() as log:
        yield
    errors = [r for r in log.records if r.levelno >= logging.ERROR]
    if errors:
        raise DataError(f"cannot decode the TIFF: {errors[0].getMessage().splitlines()[0][:200]}", subject=subject)


# ---- writing -------------------------------------------------------------------------------


def write_tiff(sig, dest: str, fmt: str, *, compress_level=None, range_mode: str = "clip", depth=None,
               quality=None):
    """Writer for TIFF: an image is one page, frames or a volume one page each, as the input's pages were."""
    import numpy as np

    from .files import atomic_path
    from .samples import depth_type, rescale, to_samples
    from .signal import Written

    nd = sig.spatial_ndim
    if nd not in (2, 3) or (nd == 3 and sig.frames):
        raise FormatMismatch(f"a {nd}-D {sig.kind} cannot be written as TIFF; use .npy", subject=dest)
    data = np.asarray(sig.data)
    pages = data if (nd == 3 or sig.frames) else data[None]
    if sig.channel_axis is None:
        pages = pages[..., None]
    notes: list[str] = []
    meta = sig.meta
    stored, bits = _stored_type(sig, data)
    bilevel = meta.get("mode") == "1"
    if depth == "1" and pages.shape[-1] > 1:
        notes.append("--depth 1 (bilevel) needs one grey channel: written as 8-bit")
        depth = "8"
    if depth is not None:
        target, target_bits = depth_type(depth, stored)
        pages = rescale(pages, stored, target, src_bits=bits, dst_bits=target_bits)
        stored, bits, bilevel = target, target_bits, depth == "1"
    samples, clipped = to_samples(pages, stored, range_mode, bits=bits)
    if bilevel:
        samples, bilevel = _bilevel(samples, depth == "1", notes)
    layouts = _layouts(sig, samples.shape, notes)
    writes = [_page_arguments(samples[i], layout, sig, stored, bits, bilevel, compress_level, quality, notes)
              for i, layout in enumerate(layouts)]
    if sig.frames and meta.get("animation"):
        notes.append("TIFF pages have no frame durations: the animation's timing was not kept")
    tiff = meta.get("tiff") or {}
    big = tiff.get("bigtiff", False) or samples.nbytes > (1 << 32) - (1 << 25)
    with atomic_path(dest) as tmp:
        _write_pages(tmp, writes, tiff.get("byteorder", "<"), big, dest)
    return Written(path=dest, format="tiff", clipped=clipped, notes=_unique(notes))


def _write_pages(path: str, writes, byteorder: str, bigtiff: bool, dest: str) -> None:
    import tifffile

    try:
        with _quiet_log(), tifffile.TiffWriter(path, bigtiff=bigtiff, byteorder=byteorder) as tw:
            for page, arguments in writes:
                tw.write(page, **arguments)
    except (ValueError, TypeError, KeyError, NotImplementedError, ZeroDivisionError, OverflowError,
            struct.error) as exc:
        raise OutputError(f"cannot write this TIFF: {exc}", subject=dest) from None


def _unique(notes: list[str]) -> list[str]:
    return list(dict.fromkeys(notes))


def _stored_type(sig, data):
    """The sample type to write (the input's) and its significant bits (12 for a 12-bit TIFF)."""
    import numpy as np

    stored = sig.meta.get("dtype")
    if stored:
        dtype = np.dtype(stored)
    elif data.dtype.kind in "iuf":
        dtype = data.dtype if sig.kind == "volume" or data.dtype.kind != "f" else np.dtype(np.uint8)
    else:
        dtype = np.dtype(np.uint8)
    if dtype.kind == "b":
        dtype = np.dtype(np.uint8)
    return dtype, (sig.meta.get("tiff") or {}).get("bits")


def _bilevel(samples, asked: bool, notes: list[str]):
    """0/255 samples as bilevel; a result with other values stays 8-bit grey, unless depth 1 was asked."""
    import numpy as np

    if asked:
        return samples >= 128, True
    if np.all((samples == 0) | (samples == 255)):
        return samples >= 128, True
    notes.append("the result is not black and white: written as 8-bit grey (--depth 1 thresholds it)")
    return samples, False


def _layouts(sig, shape, notes: list[str]) -> list[dict]:
    """Each output page's layout: the input page's where the input was a TIFF of the same samples, else baseline."""
    meta = sig.meta
    tiff = meta.get("tiff")
    count, channels = shape[0], shape[-1]
    layouts = tiff["pages"] if tiff else []
    in_channels = (tiff["shape"][3] if len(tiff["shape"]) == 4 else 1) if tiff else None
    if not layouts or in_channels != channels:
        return [_baseline(sig, channels, count)] * count
    for layout in layouts:
        for name in layout["dropped"]:
            notes.append(f"the TIFF's {name} {'directory' if name in SUBDIRECTORIES.values() else 'tag'} "
                         "was not kept")
    if len(layouts) == count:
        chosen = list(layouts)
    else:
        later = layouts[1] if len(layouts) > 1 else _without_first_page_tags(layouts[0])
        chosen = [layouts[0]] + [later] * (count - 1)
    return _with_descriptions(chosen, sig, shape)


def _without_first_page_tags(layout: dict) -> dict:
    return dict(layout, tags=[t for t in layout["tags"] if t[0] not in FIRST_PAGE_TAGS])


def _baseline(sig, channels: int, count: int) -> dict:
    """The layout of a page from a file that was not a TIFF: strips, uncompressed, photometric from the samples."""
    meta = sig.meta
    alpha = bool(meta.get("alpha"))
    if meta.get("mode") == "CMYK" and channels == 4:
        photometric, extra = SEPARATED, ()
    elif channels in (3, 4):
        photometric, extra = RGB, ((2 if alpha else 0),) * (channels - 3)
    else:
        photometric = MINISBLACK
        extra = tuple([0] * (channels - 2) + [2 if alpha else 0]) if channels > 1 else ()
    tags = []
    if sig.kind == "volume" and sig.spacing is not None and len(sig.spacing) == 3 and "resolution" not in meta:
        dz = float(sig.spacing[0])
        # ImageJ's convention: resolution in pixels per `unit`, slice spacing in `unit` (mm here).
        text = f"ImageJ=1.11a\nimages={count}\nslices={count}\nunit=mm\nspacing={dz!r}\nloop=false\n"
        tags.append((270, 2, len(text) + 1, text.encode("ascii") + b"\0"))
    return {"photometric": photometric, "planarconfig": 1, "compression": NONE, "predictor": 1, "tile": None,
            "rowsperstrip": None, "extrasamples": extra, "subfiletype": 0, "subsampling": None,
            "has_resolution": True, "tags": tags, "dropped": [], "baseline": True}


def _with_descriptions(layouts: list[dict], sig, shape) -> list[dict]:
    """The layouts with an ImageJ or tifffile description of the shape updated to the output's shape."""
    tiff = sig.meta["tiff"]
    old_shape, new_shape = tuple(tiff["shape"]), tuple(shape if shape[-1] > 1 else shape[:-1])
    first = layouts[0]
    text = description_of(first)
    if text is None:
        return layouts
    new_text = _describe_shape(text, old_shape, new_shape, sig)
    if new_text == text:
        return layouts
    tags = [t for t in first["tags"] if t[0] != 270]
    tags.append((270, 2, len(new_text) + 1, new_text.encode("latin1", "replace") + b"\0"))
    return [dict(first, tags=tags)] + layouts[1:]


def _describe_shape(text: str, old_shape, new_shape, sig) -> str:
    """An ImageJ or tifffile ("shaped") description made true of the output's shape and slice spacing."""
    if text.startswith("ImageJ="):
        return _imagej_description(text, old_shape[0], new_shape[0], sig.spacing)
    if text.startswith("{") and old_shape != new_shape:
        import json

        try:
            described = json.loads(text)
        except ValueError:
            return text
        if isinstance(described, dict) and isinstance(described.get("shape"), list):
            described["shape"] = _reshaped(described["shape"], old_shape[:3], new_shape[:3])
            return json.dumps(described)
    return text


def _imagej_description(text: str, old_count: int, count: int, spacing) -> str:
    """ImageJ's ``key=value`` lines with the image count and slice spacing of the output."""
    lines = text.split("\n")
    changed = {}
    if count != old_count:
        changed = {"images": count, "slices": count}
        lines = [ln for ln in lines if not ln.startswith(("channels=", "frames="))]
    unit = re.search(r"^unit=(\S+)", text, re.MULTILINE)
    old = re.search(r"^spacing=([0-9.eE+-]+)", text, re.MULTILINE)
    per_unit = UNIT_MM.get(unit.group(1).lower()) if unit else None
    if spacing is not None and len(spacing) == 3 and per_unit and old:
        with contextlib.suppress(ValueError):
            value = float(spacing[0]) / per_unit
            if abs(value - float(old.group(1))) > 1e-9 * max(abs(value), 1.0):
                changed["spacing"] = repr(value)
    out = []
    for line in lines:
        key = line.split("=", 1)[0]
        out.append(f"{key}={changed[key]}" if key in changed else line)
    return "\n".join(out)


def _reshaped(described: list, old, new) -> list:
    """tifffile's described shape with the (rows, columns) pair and a leading page count of `old` made `new`'s.

    The described shape is in tifffile's axes (planes of samples may come
    before the rows), so the rows and columns are found as the last adjacent
    pair equal to the old ones; a description it cannot match is kept.
    """
    dims = list(described)
    for i in range(len(dims) - 1, 0, -1):
        if (dims[i - 1], dims[i]) == (old[1], old[2]):
            dims[i - 1], dims[i] = new[1], new[2]
            if old[0] != new[0] and i >= 2 and dims[0] == old[0]:
                dims[0] = new[0]
            return dims
    return dims


def _page_arguments(samples, layout: dict, sig, stored, bits, bilevel: bool, compress_level, quality, notes):
    """One page's samples as tifffile takes them, and the arguments of TiffWriter.write that lay it out."""
    page, photometric = _photometric(samples, layout, sig, bits, bilevel)
    arguments = {"photometric": photometric, "metadata": None, "software": False, "description": None,
                 "datetime": None, "subfiletype": layout["subfiletype"] or None}
    page = _planes(page, samples.shape[-1], layout, arguments)
    _compression(arguments, layout, page, sig, bits, compress_level, quality, notes)
    if layout["tile"] is not None:
        arguments["tile"] = layout["tile"]
    elif layout["rowsperstrip"] and layout["rowsperstrip"] < samples.shape[0]:
        arguments["rowsperstrip"] = layout["rowsperstrip"]
    arguments.update(_resolution_arguments(sig, layout))
    if sig.meta.get("icc_profile"):
        arguments["iccprofile"] = bytes(sig.meta["icc_profile"])
    if layout["tags"]:
        arguments["extratags"] = [(code, dtype, count, value, False) for code, dtype, count, value in layout["tags"]]
    return page, arguments


def _photometric(samples, layout: dict, sig, bits, bilevel: bool):
    """The page's samples (one channel as a plane) and photometric, min-is-white ones inverted back."""
    import numpy as np

    photometric = layout["photometric"]
    channels = samples.shape[-1]
    page = samples[..., 0] if channels == 1 else samples
    if photometric in (PALETTE, YCBCR):
        photometric = RGB  # a palette was expanded, and JPEG's YCbCr decoded, to RGB
    if photometric in (RGB, SEPARATED) and channels < {RGB: 3, SEPARATED: 4}[photometric]:
        photometric = MINISBLACK
    if bilevel:
        return (~page if photometric == MINISWHITE else page), (MINISWHITE if photometric == MINISWHITE
                                                                else MINISBLACK)
    if photometric == MINISWHITE:
        # Unsigned min-is-white samples were inverted on reading; others were read as stored.
        if page.dtype.kind == "u":
            top = (1 << bits) - 1 if bits else np.iinfo(page.dtype).max
            return (top - page).astype(page.dtype), photometric
        if np.dtype(sig.meta.get("dtype") or page.dtype).kind == "u":
            return page, MINISBLACK
    return page, photometric


def _planes(page, channels: int, layout: dict, arguments: dict):
    """Planar configuration and extra samples of a page of several channels (planes first if separate)."""
    import numpy as np

    if channels == 1:
        return page
    separate = layout["planarconfig"] == 2
    arguments["planarconfig"] = 2 if separate else 1
    base = {RGB: 3, SEPARATED: 4}.get(arguments["photometric"], 1)
    if channels > base:
        extra = tuple(layout["extrasamples"])
        arguments["extrasamples"] = extra if len(extra) == channels - base else (0,) * (channels - base)
    return np.moveaxis(page, -1, 0) if separate else page


def _resolution_arguments(sig, layout: dict) -> dict:
    """Resolution and unit: the input TIFF's (strided), else the DPI, else a volume's spacing the ImageJ way."""
    meta = sig.meta
    resolution = meta.get("resolution")
    if resolution is not None and layout["has_resolution"]:
        return {"resolution": (_rational32(*resolution[0]), _rational32(*resolution[1])),
                "resolutionunit": resolution[2]}
    if meta.get("dpi") and layout["has_resolution"]:
        return {"resolution": tuple(float(v) for v in meta["dpi"]), "resolutionunit": 2}
    if layout.get("baseline") and sig.kind == "volume" and sig.spacing is not None and len(sig.spacing) == 3:
        _, dy, dx = (float(d) for d in sig.spacing)
        if dx > 0 and dy > 0:
            return {"resolution": (1.0 / dx, 1.0 / dy), "resolutionunit": 1}
    return {}


def _rational32(numerator: int, denominator: int) -> tuple[int, int]:
    """A rational as TIFF stores it (two 32-bit unsigned integers): itself, or the nearest that fits."""
    from fractions import Fraction

    top = 0xFFFFFFFF
    if 0 <= numerator <= top and 0 < denominator <= top:
        return numerator, denominator
    value = Fraction(numerator, denominator).limit_denominator(top)
    while value.numerator > top:
        value = Fraction(value.numerator >> 1, max(value.denominator >> 1, 1))
    return value.numerator, value.denominator


def _compression(arguments: dict, layout: dict, page, sig, bits, compress_level, quality, notes) -> None:
    """Compression, predictor and bits per sample: the input's where the samples allow, else the nearest."""
    compression = _compression_code(layout, page, arguments["photometric"], compress_level, notes)
    arguments["compression"] = compression if compression != NONE else None
    predictor = _predictor(layout["predictor"], compression, page.dtype)
    if predictor != 1:
        arguments["predictor"] = predictor
    level = None
    if compression in LOSSY:
        level = quality or (sig.meta.get("tiff") or {}).get("quality") or 90
        if compression == JPEG and layout["subsampling"] and arguments["photometric"] == RGB:
            arguments["subsampling"] = tuple(layout["subsampling"])
    elif quality is not None:
        notes.append("--quality applies to a TIFF of lossy compression (JPEG, WebP, ...) only; ignored")
    if compression in (ADOBE_DEFLATE, DEFLATE) and compress_level:
        level = compress_level
    if level is not None:
        arguments["compressionargs"] = {"level": int(level)}
    if bits and page.dtype.kind in "iu" and bits < page.dtype.itemsize * 8:
        if compression == NONE:
            arguments["bitspersample"] = bits
        else:
            notes.append(f"{bits}-bit samples written in {page.dtype.itemsize * 8} bits (tifffile packs "
                         "uncompressed samples only)")


def _compression_code(layout: dict, page, photometric: int, compress_level, notes: list[str]) -> int:
    """The input page's compression, or Deflate where --compress-level asks or the samples do not fit it."""
    import numpy as np

    import tifffile

    compression = layout["compression"]
    if layout.get("baseline"):
        compression = ADOBE_DEFLATE if compress_level else NONE
    elif compress_level == 0:
        compression = NONE
    elif compress_level is not None and compression not in (ADOBE_DEFLATE, DEFLATE):
        compression = ADOBE_DEFLATE
    if compression == 6:  # old-style JPEG, which no one writes any more
        notes.append("old-style JPEG compression written as JPEG")
        compression = JPEG
    if compression in LOSSY and not (page.dtype == np.uint8 and photometric in (MINISBLACK, RGB)):
        notes.append(f"TIFF {_compression_name(compression)} compression cannot hold these samples: "
                     "written with Deflate")
        compression = ADOBE_DEFLATE
    try:
        tifffile.TIFF.COMPRESSORS[compression]
    except Exception:  # no encoder for it: tifffile's KeyError, or imagecodecs' own import error
        notes.append(f"TIFF {_compression_name(compression)} compression cannot be written: written with Deflate")
        compression = ADOBE_DEFLATE
    return compression


def _predictor(predictor: int, compression: int, dtype) -> int:
    """The input's predictor, made the one that fits the samples (horizontal for integers, floating point)."""
    if compression == NONE or dtype == bool:
        return 1
    if predictor == 2 and dtype.kind == "f":
        return 3
    if predictor == 3 and dtype.kind != "f":
        return 2
    return predictor


def _compression_name(code: int) -> str:
    import tifffile

    try:
        return tifffile.COMPRESSION(code).name
    except ValueError:
        return str(code)
