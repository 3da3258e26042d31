"""A JPEG's quality, estimated from its quantisation tables, and the tables of a JPEG stream.

libjpeg (and so Pillow, ImageMagick, GIMP, most cameras' software) makes
its tables by scaling the two example tables of the JPEG standard (ITU-T
T.81, Annex K) by a factor that the quality 1..100 sets.  The quality of a
file is found by scaling them for every quality and keeping the one whose
tables are nearest the file's: for a file libjpeg wrote it is exactly the
quality it was written at; for other encoders, the nearest equivalent.
"""
from __future__ import annotations

import struct

# T.81 Annex K, tables K.1 (luminance) and K.2 (chrominance), in natural (row by row) order.
LUMINANCE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)
CHROMINANCE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
) + (99,) * 32
# The order in which a DQT segment stores a table's 64 values (the zig-zag scan).
ZIGZAG = (
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14,
    21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59, 52, 45, 38, 31, 39, 46, 53, 60,
    61, 54, 47, 55, 62, 63,
)


def scaled(base, quality: int) -> list[int]:
    """libjpeg's table for `quality` from a standard table (``jpeg_quality_scaling``, baseline: 1..255)."""
    factor = 5000 // quality if quality < 50 else 200 - 2 * quality
    return [min(max((value * factor + 50) // 100, 1), 255) for value in base]


def estimate_quality(tables) -> int | None:
    """The quality 1..100 whose libjpeg tables are nearest `tables` (natural order; luminance first).

    >>> estimate_quality([scaled(LUMINANCE, 83), scaled(CHROMINANCE, 83)])
    83
    >>> estimate_quality([]) is None
    True
    """
    tables = [list(t) for t in tables if len(t) == 64][:2]
    if not tables:
        return None
    bases = (LUMINANCE, CHROMINANCE)[:len(tables)]

    def distance(quality: int) -> int:
        return sum(abs(a - b) for base, table in zip(bases, tables) for a, b in zip(scaled(base, quality), table))

    # Ties (the tables of qualities near 100 coincide) go to the higher quality.
    return min(range(100, 0, -1), key=distance)


def dqt_tables(stream: bytes) -> list[list[int]]:
    """The quantisation tables of a JPEG stream (or a TIFF's JPEGTables), by table id, in natural order."""
    found: dict[int, list[int]] = {}
    pos = 2 if stream[:2] == b"\xff\xd8" else 0
    while pos + 4 <= len(stream):
        if stream[pos] != 0xFF:
            break
        marker = stream[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no tables follow in the header
            break
        (length,) = struct.unpack(">H", stream[pos + 2:pos + 4])
        if marker == 0xDB:
            _read_dqt(stream[pos + 4:pos + 2 + length], found)
        pos += 2 + length
    return [found[k] for k in sorted(found)]


def _read_dqt(body: bytes, found: dict) -> None:
    i = 0
    while i < len(body):
        precision, table_id = body[i] >> 4, body[i] & 15
        size = 128 if precision else 64
        raw = body[i + 1:i + 1 + size]
        if len(raw) < size:
            return
        values = struct.unpack(">64H", raw) if precision else tuple(raw)
        natural = [0] * 64
        for k, index in enumerate(ZIGZAG):
            natural[index] = values[k]
        found[table_id] = natural
        i += 1 + size
