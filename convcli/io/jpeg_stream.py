"""JPEG photos as bands of rows: decoded as the file's bytes arrive, encoded stripe after stripe.

Read whole, a 24-megapixel photo is 72 MB of samples (and Pillow's own copy,
96 MB) before its first row can be filtered, and nothing is encoded before
its last row is.  Here both ends work on rows:

- :class:`JpegRows` runs Pillow's JPEG decoder (libjpeg-turbo, with the
  settings and unpacking ``Image.open(...).load()`` uses, so the samples are
  the same) in a thread of its own, feeding it the file a block at a time.
  It decodes into a buffer whose rows the caller takes as soon as they are
  decoded and lets go of when it is done with them, so only the rows in
  flight are resident.  The decoder runs a few bands ahead of the caller
  at most.
- :class:`JpegStripes` encodes each stripe of rows as a JPEG of its own with
  the same tables and a restart marker after every row of MCUs, and joins
  their entropy-coded data behind the first stripe's headers (the frame's
  height set to the whole image's).  A restart marker resets the entropy
  coder and its DC predictions, so the joined stream is one valid baseline
  JPEG whose coefficients, and so its decoded pixels, are bit for bit those
  of the image encoded at once; the file is a few hundred bytes larger (a
  DRI segment and two bytes per row of MCUs).  Stripes are encoded on the
  shared threads while the caller filters the next band.

Only what streams takes this path: a baseline JPEG, RGB or grey, one frame,
upright as stored.  A progressive file, CMYK, or an EXIF rotation (which
needs every row before the first output row) is read whole, by
:mod:`convcli.io.image`.
"""
from __future__ import annotations

import mmap
import threading

import numpy as np

from ..errors import OutputError

BLOCK = 1 << 16  # bytes handed to the decoder at a time (what Pillow's loader reads)
# Output rows per stripe: 8 rows of MCUs at the tallest MCU (16 rows, 4:2:0), so each stripe holds
# a whole number of restart intervals and the markers' numbers (RST0..RST7) run on across stripes.
STRIPE_ROWS = 128
STRIPES_IN_FLIGHT = 3  # encoded on the shared threads while the caller makes the next ones
OPAQUE = 255  # the fourth byte Pillow's unpacker writes for every decoded pixel


def open_rows(source, fmt: str, *, limits, auto_orient: bool = True) -> "JpegRows | None":
    """A :class:`JpegRows` for a JPEG that streams (see the module docstring), else None (read it whole).

    The header is read and checked as :func:`convcli.io.image.read_image`
    checks it (pixel limit, memory budget); the Signal's metadata is what
    that reader gives, its ``data`` a stand-in of the image's shape.
    """
    if fmt != "jpeg":
        return None
    from PIL import Image

    from .image import _jpeg_meta, _signal_of, pillow_errors

    with pillow_errors(source.name, limits):
        with source.open() as fh, Image.open(fh) as im:
            if (getattr(im, "n_frames", 1) != 1 or im.mode not in ("RGB", "L") or len(im.tile) != 1
                    or im.tile[0][0] != "jpeg"):
                return None
            limits.check_pixels(im.width, im.height, source.name)
            exif = im.getexif()
            if auto_orient and exif.get(0x0112, 1) not in (1, None):
                return None
            jpeg = _jpeg_meta(im)
            if jpeg["jpeg"]["progressive"]:
                return None  # libjpeg holds a progressive file whole before its first row
            channels = 3 if im.mode == "RGB" else 1
            limits.check_samples((im.height, im.width, channels), 4, source.name)
            shape = (im.height, im.width) + ((3,) if channels == 3 else ())
            stand_in = np.broadcast_to(np.zeros((), dtype=np.uint8), shape)
            signal = _signal_of(stand_in, im.mode, {"format": "jpeg"}, dict(im.info), exif, "jpeg", auto_orient)
            tile = im.tile[0]
            decoder = (tile[2], tile[3][1] if len(tile[3]) > 1 else "", tuple(im.decoderconfig))
    signal.meta.update(jpeg)
    signal.meta["source"] = source.name
    return JpegRows(source, signal, limits, *decoder)


class JpegRows:
    """The rows of a JPEG, decoded in a thread of their own: :meth:`rows` waits for them, :meth:`release` frees them.

    Every decoded pixel lands in a 4-byte slot whose last byte the unpacker
    sets to 255 (Pillow's RGBX); the buffer starts as zeros, so a row whose
    first slot ends in 255 is decoded.  The decoder is only asked between
    its calls, in its own thread, when no row is half written.
    """

    def __init__(self, source, signal, limits, offset: int, jpegmode: str, config: tuple) -> None:
        self.signal = signal
        self.height, self.width = signal.data.shape[:2]
        self.channels = 1 if signal.data.ndim == 2 else signal.data.shape[2]
        self._source, self._limits = source, limits
        self._offset, self._jpegmode, self._config = offset, jpegmode, config
        # Anonymous private memory: untouched pages cost nothing, dropped ones are returned.
        self._map = mmap.mmap(-1, self.height * self.width * 4, flags=mmap.MAP_PRIVATE)
        self._pixels = np.frombuffer(self._map, dtype=np.uint8).reshape(self.height, self.width, 4)
        self._ready = 0  # rows decoded
        self._released = 0  # rows given back
        self._ahead = self.height  # rows the decoder may hold beyond those released
        self._error: BaseException | None = None
        self._stop = False
        self._done = threading.Event()
        self._changed = threading.Condition()
        self._thread = None

    def start(self, ahead: int) -> None:
        """Start decoding; the decoder holds at most `ahead` rows beyond those released."""
        from ..parallel import background

        self._ahead = max(1, int(ahead))
        self._thread = background(self._decode, "jpeg-decoder")

    def rows(self, lo: int, hi: int):
        """Rows ``lo..hi`` as a new uint8 array ``(rows, width[, channels])``, once they are decoded."""
        with self._changed:
            while self._ready < hi and self._error is None:
                self._changed.wait()
            if self._ready < hi:
                self._raise()
        return _without_fourth_byte(self._pixels[lo:hi], self.channels)

    def release(self, below: int) -> None:
        """The caller reads no row before `below` again: their memory goes back to the system."""
        page = mmap.PAGESIZE
        start = self._released * self.width * 4 // page * page
        end = below * self.width * 4 // page * page
        if end > start:
            try:
                self._map.madvise(mmap.MADV_DONTNEED, start, end - start)
            except (AttributeError, OSError, ValueError):
                pass  # only an optimisation
        with self._changed:
            self._released = max(self._released, below)
            self._changed.notify_all()

    def finish(self) -> None:
        """Wait for the decoder to reach the end of the file; raise what it found wrong there."""
        self._done.wait()
        if self._error is not None:
            self._raise()

    def close(self) -> None:
        """Stop the decoder (a failed run) and wait until it no longer writes."""
        with self._changed:
            self._stop = True
            self._changed.notify_all()
        if self._thread is not None:
            self._done.wait()

    def _raise(self):
        from .image import pillow_errors

        with pillow_errors(self._source.name, self._limits):
            raise self._error

    def _decode(self) -> None:
        from PIL import Image, ImageFile

        try:
            target = Image.frombuffer("RGBX", (self.width, self.height), self._pixels, "raw", "RGBX", 0, 1)
            # Grey is decoded as RGB (libjpeg copies the grey value into all three): the same samples, and a
            # fourth byte to tell decoded rows by.
            decoder = Image._getdecoder("RGBX", "jpeg", ("RGB", self._jpegmode), self._config)
            try:
                decoder.setimage(target.im, (0, 0, self.width, self.height))
                status = self._feed(decoder)
            finally:
                decoder.cleanup()
            if status < 0:
                raise ImageFile._get_oserror(status, encoder=False)
            if self._ready < self.height and not self._stop:
                raise OSError("image file is truncated")
        except BaseException as exc:  # handed to the caller's thread
            with self._changed:
                self._error = exc
                self._changed.notify_all()
        finally:
            self._done.set()

    def _feed(self, decoder) -> int:
        """Feed the file to the decoder as ImageFile.load does; return the decoder's last status."""
        status = -3
        with self._source.open() as fh:
            fh.seek(self._offset)
            pending = b""
            while not self._stop:
                block = fh.read(BLOCK)
                if not block:
                    raise OSError(f"image file is truncated ({len(pending)} bytes not processed)")
                pending += block
                used, status = decoder.decode(pending)
                self._publish()
                if used < 0:
                    return status
                pending = pending[used:]
                self._wait_for_room()
        return 0

    def _publish(self) -> None:
        marks = self._pixels[:, 0, 3]
        ready = self._ready
        while ready < self.height and marks[ready] == OPAQUE:
            ready += 1
        if ready != self._ready:
            with self._changed:
                self._ready = ready
                self._changed.notify_all()

    def _wait_for_room(self) -> None:
        with self._changed:
            while self._ready - self._released > self._ahead and not self._stop:
                self._changed.wait()


def _without_fourth_byte(pixels, channels: int):
    """RGBX rows as a new RGB (or, for grey, first-channel) array.

    numpy copies three bytes of four at 0.5 GB/s; OpenCV's vector loops are
    15x faster, so they do it once the filter has loaded OpenCV.
    """
    import sys

    cv2 = sys.modules.get("cv2")
    if cv2 is None:
        band = pixels[..., :channels]
        return np.ascontiguousarray(band if channels > 1 else band[..., 0])
    if channels == 1:
        return cv2.extractChannel(pixels, 0)
    return cv2.cvtColor(pixels, cv2.COLOR_RGBA2RGB)


# --------------------------------------------------------------------------- writing
def stripes_write(meta: dict, depth, quality) -> bool:
    """Whether a JPEG written with this metadata and these options can be encoded stripe by stripe.

    Only baseline JPEG can: a progressive one is written as the input was.
    """
    from .image import _jpeg_options

    return depth in (None, "8") and not _jpeg_options(meta, quality).get("progressive")


class JpegStripes:
    """Encode a JPEG stripe after stripe into the open binary file `fh` (see the module docstring).

    ``options`` are Pillow's save options for the whole image (tables,
    subsampling, EXIF, ICC, ...); the headers come from the first stripe,
    the other stripes are encoded with the tables and sampling alone.
    """

    def __init__(self, fh, height: int, width: int, mode: str, options: dict, subject: str) -> None:
        self._fh, self._height, self._width, self._mode, self._subject = fh, height, width, mode, subject
        coding = {key: options[key] for key in ("qtables", "quality", "subsampling") if key in options}
        self._options = [dict(options, restart_marker_rows=1), dict(coding, restart_marker_rows=1)]
        self._pending = []  # encoded stripes (futures) in order
        self._held = []  # rows waiting for a whole stripe
        self._held_rows = 0
        self._stripes = 0  # stripes handed to the encoder
        self._rows = 0  # rows handed to the encoder
        self._intervals = 0  # restart intervals written
        self._mcu_rows = 0  # rows of one MCU, from the first stripe's frame header

    def write(self, samples) -> None:
        """Append rows (uint8, ``(rows, width[, 3])``); whole stripes go to the encoder."""
        self._held.append(samples)
        self._held_rows += samples.shape[0]
        while self._held_rows >= STRIPE_ROWS:
            self._submit(self._take(STRIPE_ROWS))
        self._drain(STRIPES_IN_FLIGHT)

    def close(self) -> None:
        """Encode what is left, write every stripe and the end of the image."""
        if self._held_rows:
            self._submit(self._take(self._held_rows))
        self._drain(0)
        if self._rows != self._height:
            raise AssertionError(f"{self._rows} rows were written to a JPEG of {self._height}")
        self._fh.write(b"\xff\xd9")

    def _take(self, rows: int):
        rows_all = np.concatenate(self._held) if len(self._held) > 1 else self._held[0]
        taken, rest = rows_all[:rows], rows_all[rows:]
        self._held = [rest] if rest.shape[0] else []
        self._held_rows = rest.shape[0]
        return taken

    def _submit(self, samples) -> None:
        from ..parallel import submit

        options = self._options[0 if self._stripes == 0 else 1]
        self._pending.append((submit(lambda: _encode_stripe(samples, self._mode, options)), samples.shape[0]))
        self._stripes += 1
        self._rows += samples.shape[0]

    def _drain(self, keep: int) -> None:
        while len(self._pending) > keep:
            future, rows = self._pending.pop(0)
            try:
                data = future.result()
            except (ValueError, KeyError, TypeError, OSError, RuntimeError) as exc:
                raise OutputError(f"cannot write this image as JPEG: {exc}", subject=self._subject) from None
            self._join(data, rows)

    def _join(self, data: bytes, rows: int) -> None:
        start = _scan_start(data)
        if not self._mcu_rows:
            header = bytearray(data[:start])
            self._mcu_rows = _frame_for_stripes(header, self._height, self._width)
            self._fh.write(header)
        else:
            self._fh.write(bytes((0xFF, 0xD0 + (self._intervals - 1) % 8)))
        if data[-2:] != b"\xff\xd9":
            raise AssertionError("an encoded stripe does not end with EOI")
        self._fh.write(memoryview(data)[start:-2])
        self._intervals += -(-rows // self._mcu_rows)


def _encode_stripe(samples, mode: str, options: dict) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(samples, mode).save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def _segments(data):
    """``(marker, start, end)`` of every marker segment before the first scan's data (SOS included)."""
    i = 2  # after SOI
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise AssertionError("a JPEG header segment does not start with a marker")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        yield marker, i, end
        if marker == 0xDA:
            return
        i = end
    raise AssertionError("an encoded stripe has no scan")


def _scan_start(data) -> int:
    """Where a JPEG's entropy-coded data starts: just past its SOS segment."""
    return [end for marker, _, end in _segments(data) if marker == 0xDA][0]


def _frame_for_stripes(header: bytearray, height: int, width: int) -> int:
    """Give the first stripe's frame header the whole image's height; check its restart interval.

    Returns the rows of one MCU.  Every stripe but the last must hold whole
    restart intervals (rows of MCUs) for the joined markers to be right.
    """
    frame = interval = None
    for marker, start, _end in _segments(header):
        if marker in (0xC0, 0xC1):  # sequential Huffman, 8-bit or extended tables
            frame = start
        elif marker == 0xDD:
            interval = int.from_bytes(header[start + 4:start + 6], "big")
    if frame is None or interval is None:
        raise AssertionError("the stripes are not baseline JPEGs with restart markers (Pillow too old?)")
    header[frame + 5:frame + 7] = height.to_bytes(2, "big")
    count = header[frame + 9]
    factors = [header[frame + 10 + 3 * c + 1] for c in range(count)]
    h_max = max(f >> 4 for f in factors)
    v_max = max(f & 15 for f in factors)
    if count == 1:
        h_max = v_max = 1  # one component: its own 8x8 blocks are the MCUs
    mcus_per_row = -(-width // (8 * h_max))
    if interval != mcus_per_row or STRIPE_ROWS % (8 * v_max * 8):
        raise AssertionError(f"restart interval {interval} is not one row of {mcus_per_row} MCUs")
    return 8 * v_max
