"""PNG writing at 8 and 16 bits (numpy row filtering, bands of rows deflated in parallel), and 8-bit reading via OpenCV.

A whole-process filter of a 3840x2160 photo spends most of its time in the
PNG encoder: Pillow filters and deflates on one core (0.5 s at level 1).
Here the Up filter (each row minus the row above, one vector operation) is
applied with numpy, and the filtered rows are cut into bands that threads
deflate at the same time (zlib and numpy release the GIL), pigz-style:

- every band is a raw deflate stream primed with the 32 KiB of filtered bytes
  before it (so back-references across the seam still find their match);
- every band but the last ends with a sync flush: an empty stored block that
  byte-aligns the stream without ending it, so the bands concatenate into one
  valid deflate stream; the last band finishes it;
- one zlib header goes in front and the Adler-32 of all the filtered bytes
  (combined from the bands' checksums) behind.

Each band is written as its own IDAT chunk (a PNG's IDAT chunks concatenate
into the one zlib stream), so nothing is joined in memory.  The decoded
pixels are exactly the samples given, at any compression level; only the
bytes differ from Pillow's (Pillow picks filters per row).  Deflate is
zlib-ng's when it is installed (2-3x faster than zlib at the same level).

Reading: :func:`pixel_stream` decides whether OpenCV (libpng) can decode an
8-bit PNG exactly as Pillow would, and :func:`decode_with_opencv` does it;
:mod:`convcli.io.image` still opens the file with Pillow for its metadata.
"""
from __future__ import annotations

import contextlib
import os
import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
COLOUR_TYPES = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> PNG colour type (grey, grey+alpha, RGB, RGBA)
ADLER_BASE = 65521
WINDOW = 32768  # deflate's window: a band is primed with this much of what precedes it
BAND_BYTES = 1 << 20  # below about this many filtered bytes a second thread costs more than it saves
MAX_CHUNK = 1 << 30  # IDAT chunks stay well under the PNG limit of 2**31 - 1 bytes


def chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk: length, type, body, CRC of type and body."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def header_chunks(width: int, height: int, bit_depth: int, channels: int, *, icc_profile=None, dpi=None,
                  exif=None, extra=()) -> list[bytes]:
    """Signature, IHDR and the metadata chunks (iCCP, pHYs, eXIf, then `extra`'s) as Pillow writes them.

    `extra` holds (type, body) pairs of other chunks that go before the pixels.
    """
    parts = [SIGNATURE, chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth,
                                                   COLOUR_TYPES[channels], 0, 0, 0))]
    if icc_profile:
        parts.append(chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile)))
    if dpi:
        ppm = [int(float(v) / 0.0254 + 0.5) for v in dpi]
        parts.append(chunk(b"pHYs", struct.pack(">IIB", ppm[0], ppm[1], 1)))
    if exif:
        exif = bytes(exif)
        parts.append(chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    parts += [chunk(bytes(kind), bytes(body)) for kind, body in extra]
    return parts


def adler32_combine(first: int, second: int, second_len: int) -> int:
    """The Adler-32 of A + B from those of A and B and the length of B (zlib's adler32_combine)."""
    a1, b1 = first & 0xFFFF, first >> 16
    a2, b2 = second & 0xFFFF, second >> 16
    a = (a1 + a2 - 1) % ADLER_BASE
    b = (b1 + b2 + second_len * (a1 - 1)) % ADLER_BASE
    return (b << 16) | a


def zlib_header(level: int) -> bytes:
    """The two zlib header bytes for a 32 KiB window at compression `level` (FLEVEL as zlib sets it)."""
    flevel = 0 if level < 2 else 1 if level < 6 else 2 if level == 6 else 3
    cmf = 0x78
    flg = flevel << 6
    flg += 31 - (cmf * 256 + flg) % 31
    return bytes((cmf, flg))


def _row_bytes(samples, bit_depth: int = 8):
    """Samples (H, W[, C]) as rows of big-endian bytes, shape (H, W * C * bytes per sample).

    At bit depth 1 the samples are 0/255 grey, packed eight pixels to a byte.
    """
    import numpy as np

    arr = samples if samples.ndim == 3 else samples[:, :, None]
    height = arr.shape[0]
    if bit_depth == 1:
        return np.packbits(arr[:, :, 0] >= 128, axis=1)
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr).reshape(height, -1)
    big = arr.astype(">u2", copy=False)
    return np.ascontiguousarray(big).view(np.uint8).reshape(height, -1)


def _filter_band(pixels, start: int, stop: int, out=None):
    """Rows start..stop filtered with Up (the image's first row with None), each led by its filter byte."""
    import numpy as np

    if out is None:
        out = np.empty((stop - start, 1 + pixels.shape[1]), dtype=np.uint8)
    out[:, 0] = 2
    first = start
    if start == 0:
        out[0, 0] = 0
        out[0, 1:] = pixels[0]
        first = 1
    # uint8 subtraction wraps modulo 256, which is what the Up filter stores.
    np.subtract(pixels[first:stop], pixels[first - 1:stop - 1], out=out[first - start:, 1:])
    return out


# Filtered bytes made and deflated at a time: the buffer is reused (no page
# faults on fresh memory) and still in cache when zlib reads it.
STEP_BYTES = 1 << 18


def _deflate_band(pixels, start: int, stop: int, level: int, last: bool):
    """Filter and deflate one band: (raw deflate bytes, Adler-32 of the filtered bytes, their length)."""
    import numpy as np

    z = deflater()
    row = 1 + pixels.shape[1]
    if start > 0:
        # The tail of the previous band's filtered bytes, rebuilt from the
        # pixels (cheap: at most 32 KiB), primes the window across the seam.
        rows = -(-WINDOW // row)
        before = _filter_band(pixels, max(0, start - rows), start).tobytes()[-WINDOW:]
        comp = z.compressobj(level, z.DEFLATED, -15, 9, z.Z_DEFAULT_STRATEGY, before)
    else:
        comp = z.compressobj(level, z.DEFLATED, -15, 9)
    step = max(1, STEP_BYTES // row)
    buffer = np.empty((min(step, stop - start), row), dtype=np.uint8)
    pieces, adler = [], 1
    for r0 in range(start, stop, step):
        r1 = min(r0 + step, stop)
        filtered = _filter_band(pixels, r0, r1, buffer[:r1 - r0])
        data = memoryview(filtered).cast("B")
        pieces.append(comp.compress(data))
        adler = z.adler32(data, adler)
    pieces.append(comp.flush(z.Z_FINISH if last else z.Z_SYNC_FLUSH))
    return b"".join(pieces), adler, (stop - start) * row


def deflater():
    """The deflate implementation: zlib-ng when installed, else the standard library's zlib.

    Same format and levels; zlib-ng deflates the filtered rows of a 4K photo
    2-3x faster here (level 1: 0.07 s vs 0.18 s; level 6: 0.49 s and 2 % smaller
    vs 1.02 s), though its level 1 trades size for that speed (5.9 MB vs 4.2 MB;
    its level 2 is 3.7 MB in 0.11 s).
    """
    global _DEFLATER
    if _DEFLATER is None:
        try:
            from zlib_ng import zlib_ng as module
        except ImportError:
            module = zlib
        _DEFLATER = module
    return _DEFLATER


_DEFLATER = None


def idat_stream(samples, level: int, threads: int | None = None, bit_depth: int = 8):
    """The zlib stream of the Up-filtered samples, as a list of byte strings in order."""
    pixels = _row_bytes(samples, bit_depth)
    height, row = pixels.shape
    total = height * (row + 1)
    from ..parallel import map_ordered, thread_count

    threads = thread_count() if threads is None else max(1, int(threads))
    bands = min(height, threads, max(1, total // BAND_BYTES))
    if bands <= 1:
        body, adler, _ = _deflate_band(pixels, 0, height, level, True)
        return [zlib_header(level) + body + struct.pack(">I", adler)]
    edges = [height * i // bands for i in range(bands + 1)]
    results = map_ordered(lambda i: _deflate_band(pixels, edges[i], edges[i + 1], level, i == bands - 1), range(bands))
    adler = results[0][1]
    for _, band_adler, length in results[1:]:
        adler = adler32_combine(adler, band_adler, length)
    pieces = [body for body, _, _ in results]
    pieces[0] = zlib_header(level) + pieces[0]
    pieces[-1] = pieces[-1] + struct.pack(">I", adler)
    return pieces


def write(fh, samples, *, compress_level: int = 6, icc_profile=None, dpi=None, exif=None,
          threads: int | None = None, bilevel: bool = False, chunks=()) -> None:
    """Write uint8 or uint16 samples of shape (H, W) or (H, W, C), C in 1..4, to `fh` as a PNG.

    `bilevel` writes 0/255 grey samples at bit depth 1; `chunks` are other
    chunks to keep, (type, body, after_pixels) triples.
    """
    import numpy as np

    arr = np.asarray(samples)
    if arr.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"PNG samples must be uint8 or uint16, got {arr.dtype}")
    height, width = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    depth = 1 if bilevel and channels == 1 and arr.dtype == np.uint8 else 8 if arr.dtype == np.uint8 else 16
    before = [(kind, body) for kind, body, after in chunks if not after]
    for part in header_chunks(width, height, depth, channels, icc_profile=icc_profile, dpi=dpi, exif=exif,
                              extra=before):
        fh.write(part)
    pieces = idat_stream(arr, int(compress_level), threads, depth)
    for piece in pieces:
        for at in range(0, max(len(piece), 1), MAX_CHUNK):
            fh.write(chunk(b"IDAT", piece[at:at + MAX_CHUNK]))
    for kind, body, after in chunks:
        if after:
            fh.write(chunk(bytes(kind), bytes(body)))
    fh.write(chunk(b"IEND", b""))


def _intact(kind: bytes, body: bytes, crc: bytes) -> bool:
    """A chunk's type is four ASCII letters and its CRC matches: else it is damage, not copied."""
    return kind.isalpha() and zlib.crc32(body, zlib.crc32(kind)) == struct.unpack(">I", crc)[0]


# Chunks convcli writes from the samples and ``meta`` (or, for an animation, Pillow does).
OWN_CHUNKS = {b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"iCCP", b"pHYs", b"eXIf", b"acTL", b"fcTL", b"fdAT"}
# Colour-space chunks: what the samples mean, which filtering does not change (the spec calls them
# unsafe to copy only because an editor might change the colour space).
COLOUR_CHUNKS = {b"gAMA", b"cHRM", b"sRGB", b"cICP", b"mDCV", b"cLLI"}


def other_chunks(fh):
    """The chunks of a PNG that convcli does not write itself: (kept, dropped names, animated).

    Kept are the chunks the PNG specification calls safe to copy (text,
    XMP, ...: the fourth letter is lower case) and the colour-space chunks,
    as (type, body, after_pixels); dropped are the names of the others
    (tIME, bKGD, sBIT, hIST, sPLT: they describe the original samples).  Only
    chunk headers are read on the way: the pixels are skipped.  A damaged
    chunk is left out.
    """
    head = fh.read(8)
    if head != SIGNATURE:
        return [], [], False
    kept, dropped, after, animated = [], [], False, False
    while True:
        header = fh.read(8)
        if len(header) < 8:
            break
        (length,) = struct.unpack(">I", header[:4])
        kind = header[4:]
        if length > 0x7FFFFFFF:
            break
        if kind in (b"IDAT", b"fdAT"):
            after = True
            fh.seek(length + 4, 1)
            continue
        if kind == b"IEND":
            break
        body = fh.read(length)
        crc = fh.read(4)
        if len(body) < length or len(crc) < 4:
            break
        if kind == b"acTL":
            animated = True
        elif kind in OWN_CHUNKS or not _intact(kind, body, crc):
            continue
        elif kind in COLOUR_CHUNKS or kind[3:4].islower():
            kept.append((kind, body, after))
        elif kind.decode("latin1") not in dropped:
            dropped.append(kind.decode("latin1"))
    return kept, dropped, animated


def encode(samples, **options) -> bytes:
    """The bytes of :func:`write`'s PNG."""
    import io

    buffer = io.BytesIO()
    write(buffer, samples, **options)
    return buffer.getvalue()


# ---- reading 8-bit PNGs through OpenCV ------------------------------------------------------

# Chunks that may precede the pixels of a PNG read by OpenCV: all are parsed by
# Pillow when it opens the file (metadata) and none changes the stored samples.
# tRNS, PLTE and the APNG chunks are not here: such files go through Pillow.
BEFORE_PIXELS = {b"IHDR", b"iCCP", b"pHYs", b"eXIf", b"gAMA", b"cHRM", b"sRGB", b"sBIT", b"bKGD", b"tIME",
                 b"tEXt", b"zTXt", b"iTXt", b"cICP", b"mDCV", b"cLLI"}
OPENCV_CHANNELS = {0: 1, 2: 3, 6: 4}  # 8-bit colour types OpenCV returns as stored (grey, BGR, BGRA)


def pixel_stream(raw: bytes) -> bytes | None:
    """The PNG reduced to IHDR, IDAT and IEND when OpenCV decodes it exactly as Pillow would, else None.

    That is: 8-bit grey, RGB or RGBA, every chunk's CRC correct, no chunk that
    changes the samples, and nothing but pixels after the first IDAT (so the
    metadata Pillow reads on opening is complete).  Ancillary chunks are left
    out so that libpng has nothing to warn about on a good file.
    """
    if len(raw) < 33 or not raw.startswith(SIGNATURE) or raw[12:16] != b"IHDR":
        return None
    depth, ctype = raw[24], raw[25]
    if depth != 8 or ctype not in OPENCV_CHANNELS:
        return None
    keep, pos, seen_pixels = [SIGNATURE], len(SIGNATURE), False
    while pos + 12 <= len(raw):
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        kind = raw[pos + 4:pos + 8]
        end = pos + 12 + length
        if length > 0x7FFFFFFF or end > len(raw):
            return None
        (crc,) = struct.unpack(">I", raw[end - 4:end])
        if zlib.crc32(raw[pos + 4:end - 4]) != crc:
            return None
        if kind == b"IDAT":
            seen_pixels = True
            keep.append(raw[pos:end])
        elif kind == b"IEND":
            keep.append(raw[pos:end])
            return b"".join(keep) if seen_pixels else None
        elif seen_pixels or kind not in BEFORE_PIXELS:
            return None
        elif kind == b"IHDR":
            keep.append(raw[pos:end])
        pos = end
    return None


def decode_with_opencv(stream: bytes, width: int, height: int):
    """Pixels of a :func:`pixel_stream` as (H, W[, C]) uint8 in RGB(A) order, or None if OpenCV refuses them.

    A large non-interlaced image is decoded by :class:`_BandDecoder` (inflate
    and unfilter on two cores); the rest in one libpng call.  libpng prints
    its complaints about a corrupt stream to the standard error itself; they
    are silenced here (the caller falls back to Pillow, which raises the
    error convcli reports).
    """
    channels = OPENCV_CHANNELS[stream[25]]
    if stream[28] == 0 and height >= 2 * BAND_ROWS_MIN and height * width * channels >= PIPELINE_BYTES:
        decoder = _BandDecoder(stream, width, height, channels)
        decoder.start()  # inflating while OpenCV is imported
        try:
            import cv2
        except ImportError:  # a broken OpenCV install: Pillow reads every PNG
            decoder.stop()
            return None
        return decoder.pixels(cv2)
    import numpy as np

    try:
        import cv2
    except ImportError:
        return None
    with _quiet_stderr():
        try:
            pixels = cv2.imdecode(np.frombuffer(stream, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        except cv2.error:
            return None
    expected = (height, width) if channels == 1 else (height, width, channels)
    if pixels is None or pixels.dtype != np.uint8 or pixels.shape != expected:
        return None
    return _to_rgb(cv2, pixels, channels)


def _to_rgb(cv2, pixels, channels: int, dst=None):
    """OpenCV's BGR(A) order as RGB(A) (grey as it is), into ``dst`` when given."""
    if channels == 1:
        if dst is None:
            return pixels
        dst[...] = pixels
        return dst
    code = cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGBA
    if dst is None:
        return cv2.cvtColor(pixels, code)
    import numpy as np

    result = cv2.cvtColor(pixels, code, dst=dst)
    if not np.shares_memory(result, dst):  # OpenCV made an array of its own
        dst[...] = result
    return dst


# From about this many samples (a 1.4-megapixel RGB photo) decoding in bands pays for its thread.
PIPELINE_BYTES = 1 << 22
BAND_ROWS_MIN = 16
INFLATE_STEP = 1 << 18  # inflated bytes handed over at a time


class _BandDecoder:
    """Decode an 8-bit non-interlaced PNG on two cores: one thread inflates, the caller unfilters.

    Inflating (zlib-ng) and undoing the row filters (libpng, through
    OpenCV) each take about half of a 4K photo's decoding time, and each
    depends only on what comes before it.  So one thread inflates the IDAT
    stream into the filtered rows while the caller hands each band of
    finished rows to libpng as a small PNG of its own, its zlib stream
    stored (not compressed) and led by the band's previous row, already
    decoded, filtered with None: every filter of the band's first row then
    finds the row above it.  The pixels are those libpng would give for the
    whole file.  Anything unusual in the stream (corrupt, short or long data)
    gives ``None``, and the caller falls back to Pillow, which reports it.
    """

    def __init__(self, stream: bytes, width: int, height: int, channels: int):
        import threading

        import numpy as np

        self.stream, self.width, self.height, self.channels = stream, width, height, channels
        self.row = 1 + width * channels
        self.filtered = np.empty(height * self.row, dtype=np.uint8)
        self.done = 0  # filtered bytes inflated so far
        self.failed = False
        self.finished = False
        self.cancelled = False
        self.ready = threading.Condition()
        self.thread = None

    def start(self) -> None:
        from ..parallel import background

        self.thread = background(self._inflate, "png-inflate")

    def stop(self) -> None:
        with self.ready:
            self.cancelled = True
        if self.thread is not None:
            self.thread.join()

    def _payloads(self):
        """The IDAT chunks' bodies, in order (their CRCs were checked by :func:`pixel_stream`)."""
        stream, pos = memoryview(self.stream), len(SIGNATURE)
        while pos + 12 <= len(stream):
            (length,) = struct.unpack(">I", stream[pos:pos + 4])
            if bytes(stream[pos + 4:pos + 8]) == b"IDAT":
                yield stream[pos + 8:pos + 8 + length]
            pos += 12 + length

    def _inflate(self) -> None:
        z = deflater()
        total = len(self.filtered)
        ok = True
        try:
            inflater = z.decompressobj()
            for body in self._payloads():
                pending = body
                while pending and ok and not self.cancelled:
                    piece = inflater.decompress(pending, INFLATE_STEP)
                    pending = inflater.unconsumed_tail
                    ok = self._store(piece, total) and not (inflater.eof and pending)
                    if inflater.eof:
                        break
                if not ok or self.cancelled:
                    break
            if ok and not self.cancelled:
                ok = self._store(inflater.flush(), total) and inflater.eof and self.done == total
        except (z.error, ValueError, MemoryError):
            ok = False
        with self.ready:
            self.failed = not ok
            self.finished = True
            self.ready.notify_all()

    def _store(self, piece: bytes, total: int) -> bool:
        """Append inflated bytes (False if there are more than the image holds) and say so."""
        import numpy as np

        if not piece:
            return True
        end = self.done + len(piece)
        if end > total:
            return False
        self.filtered[self.done:end] = np.frombuffer(piece, dtype=np.uint8)
        with self.ready:
            self.done = end
            self.ready.notify_all()
        return True

    def _rows_ready(self, start: int, want: int) -> int:
        """Wait until rows up to ``start + want`` (or all there will be) are inflated; how many past ``start``."""
        with self.ready:
            while not self.finished and self.done // self.row < min(start + want, self.height):
                self.ready.wait()
            if self.failed:
                return 0
            return min(self.done // self.row, self.height) - start

    def pixels(self, cv2):
        import numpy as np

        shape = (self.height, self.width) if self.channels == 1 else (self.height, self.width, self.channels)
        out = np.empty(shape, dtype=np.uint8)
        ihdr = bytearray(self.stream[16:29])
        z = deflater()
        band = max(BAND_ROWS_MIN, INFLATE_STEP // self.row)
        start = 0
        try:
            while start < self.height:
                rows = min(self._rows_ready(start, band), band)
                if rows <= 0:
                    return None
                lead = 1 if start > 0 else 0
                scratch = np.empty((lead + rows, self.row), dtype=np.uint8)
                if lead:
                    scratch[0, 0] = 0  # filter None: the row as decoded
                    scratch[0, 1:] = out[start - 1].reshape(-1)
                scratch[lead:] = self.filtered[start * self.row:(start + rows) * self.row].reshape(rows, self.row)
                ihdr[4:8] = struct.pack(">I", lead + rows)
                body = z.compress(scratch, 0)
                mini = b"".join((SIGNATURE, _chunk_fast(z, b"IHDR", bytes(ihdr)), _chunk_fast(z, b"IDAT", body),
                                 _chunk_fast(z, b"IEND", b"")))
                with _quiet_stderr():
                    try:
                        decoded = cv2.imdecode(np.frombuffer(mini, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
                    except cv2.error:
                        return None
                expected = (lead + rows,) + shape[1:]
                if decoded is None or decoded.dtype != np.uint8 or decoded.shape != expected:
                    return None
                _to_rgb(cv2, decoded[lead:], self.channels, dst=out[start:start + rows])
                start += rows
        finally:
            self.stop()
        return out


def _chunk_fast(z, kind: bytes, body) -> bytes:
    """:func:`chunk` with the CRC of ``z`` (zlib-ng's is several times faster on megabytes)."""
    return struct.pack(">I", len(body)) + kind + bytes(body) + struct.pack(">I", z.crc32(body, z.crc32(kind)))


@contextlib.contextmanager
def _quiet_stderr():
    """Point file descriptor 2 at /dev/null for the duration (C libraries write there directly)."""
    import sys

    try:
        sys.stderr.flush()
    except (AttributeError, OSError, ValueError):
        pass
    try:
        saved = os.dup(2)
    except OSError:  # no standard error at all: nothing to silence
        yield
        return
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
        finally:
            os.close(null)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
