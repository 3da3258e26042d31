"""A minimal multi-page TIFF writer for volumes: one page per slice, written in one pass.

Pillow appends pages by re-reading and patching the file for each one, which
is quadratic in the page count (a 4096-slice stack takes about a minute);
this writer lays out every page's IFD and strip in a single linear pass.  It
writes baseline little-endian TIFF that Pillow, libtiff, tifffile and ImageJ
read: one strip per page, uncompressed or Deflate, 8/16/32-bit integers or
float32, grey or RGB(A), with resolution tags and an optional description.
"""
from __future__ import annotations

import struct
import zlib
from fractions import Fraction

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
