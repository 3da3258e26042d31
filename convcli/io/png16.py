"""A small PNG codec for 16-bit colour (RGB, RGBA, grey+alpha), which Pillow reduces to 8 bits.

Pillow has no 16-bit-per-channel colour mode, so it decodes a 48- or 64-bit
PNG to 8 bits per channel and cannot write one.  Rather than add a dependency
(pypng is pure Python and slow on large images; OpenCV and imagecodecs are
tens of megabytes), this module reads and writes exactly the PNGs Pillow
cannot, with zlib and numpy:

- reading: chunk walk with CRC checks, IHDR/PLTE-free colour types 2, 4, 6 at
  bit depth 16, Adam7 interlacing, iCCP and pHYs (ICC profile and DPI) kept;
  the scanline filters are undone with numpy, rows at a time when only
  None/Sub/Up filters occur, and along anti-diagonals otherwise (each pixel
  depends on its left, upper and upper-left neighbours, all on earlier
  anti-diagonals, so one diagonal is one vector operation);
- writing: :mod:`convcli.io.png`, the encoder of every PNG convcli writes.
"""
from __future__ import annotations

import struct
import zlib

from ..errors import DataError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel (no palettes here)
MODES = {3: "RGB;16", 4: "RGBA;16", 2: "LA;16", 1: "I;16"}
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def read_ihdr(head: bytes):
    """(width, height, bit_depth, colour_type, interlace) from the first bytes of a PNG, or None."""
    if len(head) < 33 or not head.startswith(SIGNATURE) or head[12:16] != b"IHDR":
        return None
    width, height, depth, ctype, _comp, _filt, interlace = struct.unpack(">IIBBBBB", head[16:29])
    return width, height, depth, ctype, interlace


def wants_png16(head: bytes) -> bool:
    """True for the PNGs this module decodes instead of Pillow: 16-bit colour with or without alpha."""
    ihdr = read_ihdr(head)
    return ihdr is not None and ihdr[2] == 16 and ihdr[3] in (2, 4, 6)


def _chunks(data: bytes, subject: str):
    pos = len(SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise DataError("truncated PNG (no IEND chunk)", subject=subject)
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        ctype = data[pos + 4:pos + 8]
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > len(data):
            raise DataError(f"truncated PNG (chunk {ctype!r} runs past the end of the file)", subject=subject)
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(ctype + body) != crc:
            raise DataError(f"corrupt PNG (CRC mismatch in chunk {ctype.decode('latin1')!r})", subject=subject)
        yield ctype, body
        if ctype == b"IEND":
            return
        pos = end


def decode(data: bytes, subject: str, limits=None):
    """Decode a 16-bit colour PNG; return (uint16 array of shape (H, W, C), info dict)."""
    import numpy as np

    ihdr = read_ihdr(data)
    if ihdr is None:
        raise DataError("not a PNG file", subject=subject)
    width, height, depth, ctype, interlace = ihdr
    if depth != 16 or ctype not in (0, 2, 4, 6) or interlace not in (0, 1):
        raise DataError(f"unsupported PNG (bit depth {depth}, colour type {ctype})", subject=subject)
    if limits is not None:
        limits.check_pixels(width, height, subject)
    channels = CHANNELS[ctype]
    if limits is not None:
        limits.check_samples((height, width, channels), 2, subject)
    idat, info = [], {}
    for kind, body in _chunks(data, subject):
        if kind == b"IDAT":
            idat.append(body)
        elif kind == b"iCCP":
            name_end = body.find(b"\0")
            if name_end > 0 and name_end + 1 < len(body):
                try:
                    info["icc_profile"] = _inflate(body[name_end + 2:], 1 << 24, subject)
                except DataError:
                    pass  # a broken profile is dropped, the pixels are still good
        elif kind == b"pHYs" and len(body) == 9:
            ppx, ppy, unit = struct.unpack(">IIB", body)
            if unit == 1 and ppx and ppy:
                info["dpi"] = (ppx * 0.0254, ppy * 0.0254)
        elif kind == b"tRNS":
            info["transparency_dropped"] = True
    bpp = 2 * channels
    passes = [(0, 0, 1, 1)] if interlace == 0 else ADAM7
    sizes = []
    for x0, y0, dx, dy in passes:
        pw, ph = -(-(width - x0) // dx), -(-(height - y0) // dy)
        sizes.append((pw, ph) if pw > 0 and ph > 0 else (0, 0))
    expected = sum(ph * (1 + pw * bpp) for pw, ph in sizes)
    raw = _inflate(b"".join(idat), expected, subject)
    if len(raw) < expected:
        raise DataError("truncated PNG (image data ends early)", subject=subject)
    out = np.empty((height, width, bpp), dtype=np.uint8)
    pos = 0
    for (x0, y0, dx, dy), (pw, ph) in zip(passes, sizes):
        if pw == 0:
            continue
        n = ph * (1 + pw * bpp)
        out[y0::dy, x0::dx] = unfilter(raw[pos:pos + n], ph, pw, bpp, subject)
        pos += n
    samples = out.view(">u2").reshape(height, width, channels).astype(np.uint16)
    return samples, info


def _inflate(body: bytes, limit: int, subject: str) -> bytes:
    d = zlib.decompressobj()
    try:
        raw = d.decompress(body, limit)
    except zlib.error as exc:
        raise DataError(f"corrupt PNG (compressed data: {exc})", subject=subject) from None
    return raw


def unfilter(raw: bytes, height: int, width: int, bpp: int, subject: str = "png"):
    """Undo PNG scanline filtering; return uint8 pixels of shape (height, width, bpp)."""
    import numpy as np

    rows = np.frombuffer(raw, dtype=np.uint8, count=height * (1 + width * bpp)).reshape(height, 1 + width * bpp)
    types = rows[:, 0]
    if types.max(initial=0) > 4:
        raise DataError(f"corrupt PNG (unknown filter type {int(types.max())})", subject=subject)
    filtered = rows[:, 1:].reshape(height, width, bpp)
    if not np.any(types >= 3):
        return _unfilter_rows(filtered, types)
    return _unfilter_diagonals(filtered, types)


def _unfilter_rows(filtered, types):
    import numpy as np

    out = np.empty(filtered.shape, dtype=np.uint8)
    previous = np.zeros(filtered.shape[1:], dtype=np.uint8)
    for r, t in enumerate(types.tolist()):
        row = filtered[r]
        if t == 0:
            out[r] = row
        elif t == 1:  # Sub: a running sum along the row, per byte lane, modulo 256
            out[r] = np.cumsum(row, axis=0, dtype=np.uint64) & 0xFF
        else:  # Up
            out[r] = row + previous  # uint8 arithmetic wraps modulo 256, as the filter wants
        previous = out[r]
    return out


def _unfilter_diagonals(filtered, types):
    import numpy as np
    from numpy.lib.stride_tricks import as_strided

    height, width, bpp = filtered.shape
    # Reconstructed pixels with one zero row above and one zero column to the
    # left, so the neighbours a (left), b (up) and c (up-left) always exist.
    rec = np.zeros((height + 1, width + 1, bpp), dtype=np.int16)
    src = filtered.astype(np.int16)
    flat_rec = rec.reshape(-1)
    flat_src = src.reshape(-1)
    t_all = types.astype(np.int16)
    item = rec.itemsize
    for d in range(height + width - 1):
        r0 = max(0, d - width + 1)
        n = min(height - 1, d) - r0 + 1
        c0 = d - r0
        # Along an anti-diagonal, (r, c) -> (r + 1, c - 1): W pixels further in
        # the padded array, W - 1 in the unpadded one.
        start = ((r0 + 1) * (width + 1) + (c0 + 1)) * bpp
        shape, step = (n, bpp), (width * bpp * item, item)
        x = as_strided(flat_rec[start:], shape, step)
        a = as_strided(flat_rec[start - bpp:], shape, step)
        b = as_strided(flat_rec[start - (width + 1) * bpp:], shape, step)
        c = as_strided(flat_rec[start - (width + 2) * bpp:], shape, step)
        f = as_strided(flat_src[(r0 * width + c0) * bpp:], shape, ((width - 1) * bpp * item, item))
        t = t_all[r0:r0 + n, None]
        pa = np.abs(b - c)
        pb = np.abs(a - c)
        pc = np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        pred = np.where(t == 1, a, np.where(t == 2, b, np.where(t == 3, (a + b) >> 1, np.where(t == 4, paeth, 0))))
        x[...] = (f + pred) & 0xFF
    return rec[1:, 1:].astype(np.uint8)


def encode(samples, *, icc_profile: bytes | None = None, dpi=None, compress_level: int | None = None) -> bytes:
    """Encode uint16 samples of shape (H, W) or (H, W, C), C in 1..4, as a 16-bit PNG (see :mod:`convcli.io.png`)."""
    import numpy as np

    from . import png

    return png.encode(np.asarray(samples, dtype=np.uint16), icc_profile=icc_profile, dpi=dpi,
                      compress_level=6 if compress_level is None else int(compress_level))
