"""TIFF: one page is an image, several pages a volume; stacks are written in one pass.

Reading (Pillow): the pages are counted one at a time, each page's size and
the running total checked against the limits, before anything is decoded.
One page (or ``--kind image``) is read like any Pillow image
(:func:`convcli.io.image.image_signal`), keeping signed 16-bit pages int16
and the pixel size from the resolution tags; several pages (or ``--kind
volume``) are read page by page into (slices, rows, columns[, channels]),
keeping 8-bit, 16-bit, 32-bit integer and float32 pages in their type, with
voxel spacing from the resolution tags and an ImageJ description's
``unit=``/``spacing=``.

Writing: an image is one page through Pillow (:func:`convcli.io.image.write_image`);
a volume goes through :func:`write_stack`.  Pillow appends pages by
re-reading and patching the file for each one, which is quadratic in the
page count (a 4096-slice stack takes about a minute); :func:`write_stack`
lays out every page's IFD and strip in a single linear pass.  It writes
baseline little-endian TIFF that Pillow, libtiff, tifffile and ImageJ read:
one strip per page, uncompressed or Deflate, 8/16/32-bit integers or
float32, grey or RGB(A), with resolution tags and an optional description.
"""
from __future__ import annotations

import re
import struct
import zlib
from fractions import Fraction

from ..errors import DataError, OutputError, UsageError
from .image import MODE_SAMPLES, image_signal, pillow_errors, write_image

UNIT_MM = {"mm": 1.0, "millimeter": 1.0, "millimetre": 1.0, "cm": 10.0, "centimeter": 10.0, "m": 1000.0,
           "meter": 1000.0, "micron": 1e-3, "um": 1e-3, "µm": 1e-3, "\\u00B5m": 1e-3, "nm": 1e-6, "inch": 25.4}
MAX_PAGES = 65536


# ---- reading -------------------------------------------------------------------------------


def read_tiff(source, fmt: str, *, limits, kind=None, key=None, auto_orient=True, stream=False):
    """Reader for TIFF: one page is an image, several pages (or ``kind="volume"``) a volume."""
    if kind in ("signal", "audio"):
        raise UsageError(f"an image file cannot be read as {kind}", subject="--kind")
    with pillow_errors(source.name, limits):
        from PIL import Image

        with source.open() as fh, Image.open(fh) as im:
            limits.check_pixels(im.width, im.height, source.name)
            pages = _page_count(im, limits, source.name)
            if (pages > 1 and kind != "image") or kind == "volume":
                return _read_stack(im, pages, source.name, limits)
            # Pillow widens signed 16-bit pages to mode I; keep them int16.
            stored_mode = "I;16S" if im.mode == "I" and is_int16_tiff(im) else None
            return image_signal(im, fmt, pages, source.name, limits, auto_orient, source.head(4096),
                                stored_mode=stored_mode, spacing_of=lambda page: tiff_spacing(page, 2))


def _page_count(im, limits, subject: str) -> int:
    """How many pages the open TIFF holds; `im` is left at the first.

    Pages are counted by seeking one at a time, checking every page's size
    and the running total against the limits, so a huge page count or a page
    that claims a huge size is refused before anything is decoded.
    """
    pages = 0
    try:
        while True:
            im.seek(pages)
            pages += 1
            limits.check_pixels(im.width, im.height, subject)
            limits.check_samples((pages, im.height, im.width), 4, subject)
            if pages > MAX_PAGES:
                raise DataError(f"more than {MAX_PAGES} TIFF pages", subject=subject)
    except EOFError:
        pass
    if pages > 1:
        im.seek(pages - 1)
        if im.tag_v2.next:
            # Pillow ends a chain that points back to a page it has seen; such a file is corrupt.
            raise DataError("corrupt TIFF (the chain of pages loops back)", subject=subject)
    im.seek(0)
    return max(pages, 1)


def is_int16_tiff(im) -> bool:
    """True for a TIFF page of signed 16-bit samples (which Pillow opens as mode I)."""
    tags = getattr(im, "tag_v2", {})
    return tuple(tags.get(258, ())) == (16,) and tuple(tags.get(339, (1,))) == (2,)


def tiff_spacing(im, ndim: int):
    """Millimetres per sample along (rows, columns), or (slices, rows, columns), from TIFF tags.

    Returns None when the file states no physical unit, or when `im` is no
    longer the page read from the file (a converted or rotated copy has no tags).
    Slices are as far apart as an ImageJ ``spacing=`` says, else as far as
    columns (isotropic).
    """
    tags = getattr(im, "tag_v2", None)
    if tags is None:
        return None
    try:
        xres, yres = float(tags.get(282, 0) or 0), float(tags.get(283, 0) or 0)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    description = tags.get(270, "")
    if isinstance(description, bytes):
        description = description.decode("latin1", "replace")
    description = str(description)
    unit = re.search(r"^unit=(\S+)", description, re.MULTILINE)
    z = re.search(r"^spacing=([0-9.eE+-]+)", description, re.MULTILINE)
    if unit and unit.group(1).lower() in UNIT_MM:
        per_unit = UNIT_MM[unit.group(1).lower()]
    else:
        per_unit = {2: 25.4, 3: 10.0}.get(int(tags.get(296, 2) or 2))
        if 296 not in tags and 282 not in tags:
            return None
    if per_unit is None or not (xres > 0 and yres > 0):
        return None
    dx, dy = per_unit / xres, per_unit / yres
    if ndim == 2:
        return (dy, dx)
    dz = dx
    if z:
        try:
            dz = float(z.group(1)) * per_unit
        except ValueError:
            pass
    return (dz, dy, dx)


def _read_stack(im, pages: int, subject: str, limits):
    """Read every page of an open multi-page TIFF into one volume Signal."""
    import numpy as np

    from .signal import Signal

    width, height = im.size
    first_mode = None
    data = None
    for index in range(pages):
        im.seek(index)
        if im.size != (width, height):
            raise DataError(
                f"pages differ in size ({width}x{height} and {im.width}x{im.height}) and cannot stack",
                subject=subject,
            )
        mode = "I;16" if im.mode in ("I;16", "I;16B", "I;16L", "I;16N") else im.mode
        if mode == "I" and is_int16_tiff(im):
            mode = "I;16S"
        if mode not in MODE_SAMPLES or mode in ("LA;16", "RGB;16", "RGBA;16"):
            raise DataError(f"unsupported TIFF page mode {im.mode}", subject=subject)
        if first_mode is None:
            first_mode = mode
            dtype, channels = MODE_SAMPLES[mode]
            shape = (pages, height, width) + ((channels,) if channels > 1 else ())
            limits.check_samples(shape, np.dtype(dtype).itemsize, subject)
            data = np.empty(shape, dtype=dtype)
        elif mode != first_mode:
            raise DataError(f"pages differ in mode ({first_mode} and {mode}) and cannot stack", subject=subject)
        im.load()
        page = np.asarray(im)
        data[index] = (page.astype(bool) * np.uint8(255)) if mode == "1" else page
    im.seek(0)
    meta = {"format": "tiff", "mode": first_mode, "dtype": str(data.dtype), "alpha": first_mode in ("LA", "RGBA")}
    if im.info.get("icc_profile"):
        meta["icc_profile"] = im.info["icc_profile"]
    return Signal(data=data, kind="volume", channel_axis=-1 if data.ndim == 4 else None,
                  spacing=tiff_spacing(im, 3), meta=meta)


# ---- writing -------------------------------------------------------------------------------


def write_tiff(sig, dest: str, fmt: str, *, compress_level=None, range_mode: str = "clip"):
    """Writer for TIFF: a volume becomes a multi-page stack, an image one page."""
    if sig.spatial_ndim == 2:
        return write_image(sig, dest, fmt, compress_level=compress_level, range_mode=range_mode)
    if sig.spatial_ndim != 3:
        raise OutputError(f"a {sig.spatial_ndim}-D {sig.kind} cannot be written as TIFF; use .npy", subject=dest)
    return _write_volume(sig, dest, compress_level, range_mode)


_STACK_TYPES = ("uint8", "uint16", "int16", "int32", "float32")


def _write_volume(sig, dest: str, compress_level, range_mode: str):
    """A volume as a stack of pages in its stored sample type (RGB(A) volumes as uint8), ImageJ spacing kept."""
    import numpy as np

    from .files import atomic_path
    from .samples import to_samples
    from .signal import Written

    data = np.asarray(sig.data)
    notes: list[str] = []
    if sig.channel_axis is not None:
        if data.shape[-1] not in (3, 4):
            raise OutputError(f"a volume with {data.shape[-1]} channels cannot be written as TIFF; use .npy",
                              subject=dest)
        target = np.dtype(np.uint8)
    else:
        stored = np.dtype(sig.meta.get("dtype") or data.dtype)
        target = stored if stored.name in _STACK_TYPES else np.dtype(np.float32)
        if target != stored and stored != np.float16:
            notes.append(f"TIFF stacks hold uint8, uint16, int16, int32 or float32: {stored} written as float32")
    samples, clipped = to_samples(data, target, range_mode)
    options = {}
    if sig.spacing is not None and len(sig.spacing) == 3 and all(d > 0 for d in sig.spacing):
        dz, dy, dx = (float(d) for d in sig.spacing)
        # ImageJ's convention: resolution in pixels per `unit`, slice spacing in `unit`.
        n = samples.shape[0]
        options.update(resolution=(1.0 / dx, 1.0 / dy), resolution_unit=1,
                       description=f"ImageJ=1.11a\nimages={n}\nslices={n}\nunit=mm\nspacing={dz!r}\nloop=false\n")
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            try:
                write_stack(fh, samples, compress_level=compress_level, **options)
            except ValueError as exc:
                raise OutputError(str(exc), subject=dest) from None
    return Written(path=dest, format="tiff", clipped=clipped, notes=notes)


_SAMPLE_FORMAT = {"u": 1, "i": 2, "f": 3}
_SHORT, _LONG, _RATIONAL, _ASCII = 3, 4, 5, 2
MAX_CLASSIC = (1 << 32) - 1


def _rational(value: float) -> tuple[int, int]:
    frac = Fraction(float(value)).limit_denominator(1_000_000)
    num, den = frac.numerator, frac.denominator
    while num > 0xFFFFFFFF or den > 0xFFFFFFFF:
        num, den = num >> 1, max(den >> 1, 1)
    return num, den


def write_stack(fh, pages, *, resolution=None, resolution_unit: int = 1, description: str | None = None,
                compress_level: int | None = None) -> None:
    """Write `pages` (slices, rows, columns[, 3|4]) to the binary file `fh` as a multi-page TIFF.

    Parameters
    ----------
    resolution : (float, float), optional
        Pixels per unit along x (columns) and y (rows).
    resolution_unit : int
        1 none (ImageJ: the unit is in the description), 2 inch, 3 centimetre.
    description : str, optional
        ImageDescription of the first page (ImageJ keeps ``unit=``/``spacing=`` there).
    compress_level : int, optional
        1..9 compresses every strip with Deflate; None or 0 writes raw strips.
    """
    import numpy as np

    pages = np.ascontiguousarray(pages)
    dtype = pages.dtype.newbyteorder("<") if pages.dtype.itemsize > 1 else pages.dtype
    pages = pages.astype(dtype, copy=False)
    count, height, width = pages.shape[:3]
    spp = pages.shape[3] if pages.ndim == 4 else 1
    bits = pages.dtype.itemsize * 8
    fmt = _SAMPLE_FORMAT[pages.dtype.kind]
    compress = bool(compress_level)
    desc = (description.encode("ascii", "replace") + b"\0") if description else None

    fh.write(b"II*\x00" + struct.pack("<I", 8))  # the first IFD follows the header
    pos = 8
    for index in range(count):
        strip = pages[index].tobytes()
        if compress:
            strip = zlib.compress(strip, int(compress_level))
        tags = [
            (256, _LONG, [width]), (257, _LONG, [height]), (258, _SHORT, [bits] * spp),
            (259, _SHORT, [8 if compress else 1]), (262, _SHORT, [2 if spp >= 3 else 1]),
        ]
        if desc is not None and index == 0:
            tags.append((270, _ASCII, desc))
        tags += [(273, _LONG, [0]), (277, _SHORT, [spp]), (278, _LONG, [height]), (279, _LONG, [len(strip)])]
        if resolution is not None:
            tags += [(282, _RATIONAL, [_rational(resolution[0])]), (283, _RATIONAL, [_rational(resolution[1])]),
                     (296, _SHORT, [resolution_unit])]
        if spp == 4:
            tags.append((338, _SHORT, [2]))  # unassociated alpha
        tags.append((339, _SHORT, [fmt] * spp))
        ifd_size = 2 + 12 * len(tags) + 4
        extra_pos = pos + ifd_size
        entries, extra = [], b""
        for tag, typ, values in tags:
            if typ == _ASCII:
                payload = values
                n = len(values)
            elif typ == _RATIONAL:
                payload = b"".join(struct.pack("<II", *v) for v in values)
                n = len(values)
            else:
                payload = struct.pack("<" + ("H" if typ == _SHORT else "I") * len(values), *values)
                n = len(values)
            if len(payload) <= 4:
                entries.append([tag, typ, n, payload.ljust(4, b"\0")])
            else:
                entries.append([tag, typ, n, struct.pack("<I", extra_pos + len(extra))])
                extra += payload
                if len(extra) % 2:
                    extra += b"\0"
        data_pos = extra_pos + len(extra)
        for entry in entries:
            if entry[0] == 273:
                entry[3] = struct.pack("<I", data_pos)
        next_pos = data_pos + len(strip)
        next_pos += next_pos % 2  # IFDs start on a word boundary
        if next_pos > MAX_CLASSIC:
            raise ValueError("the stack is larger than a classic TIFF holds (4 GiB); write .npy or .nii instead")
        ifd = struct.pack("<H", len(entries)) + b"".join(
            struct.pack("<HHI", tag, typ, n) + value for tag, typ, n, value in entries
        ) + struct.pack("<I", next_pos if index < count - 1 else 0)
        fh.write(ifd + extra + strip + b"\0" * (next_pos - data_pos - len(strip)))
        pos = next_pos
