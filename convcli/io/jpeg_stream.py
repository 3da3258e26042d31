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

Pillow's decoder and encoder hold the GIL while they code, so where the
system forks safely (Linux, :data:`FORKED`) each runs in a forked copy of the process
instead of a thread (:class:`ForkedJpegRows`, :class:`ForkedStripes`): the
rows and stripes pass through shared memory, short messages through pipes,
and the filter's threads keep the interpreter to themselves.  The bytes
written are the same either way.

Only what streams takes this path: a baseline JPEG, RGB or grey, one frame,
upright as stored.  A progressive file, CMYK, or an EXIF rotation (which
needs every row before the first output row) is read whole, by
:mod:`convcli.io.image`.
"""
from __future__ import annotations

import mmap
import os
import struct
import sys
import threading

import numpy as np

from ..errors import ConvcliError, OutputError

BLOCK = 1 << 16  # bytes handed to the decoder at a time (what Pillow's loader reads)
# Output rows per stripe: 8 rows of MCUs at the tallest MCU (16 rows, 4:2:0), so each stripe holds
# a whole number of restart intervals and the markers' numbers (RST0..RST7) run on across stripes.
STRIPE_ROWS = 128
STRIPES_IN_FLIGHT = 3  # encoded on the shared threads while the caller makes the next ones
OPAQUE = 255  # the fourth byte Pillow's unpacker writes for every decoded pixel
# Decode and encode in forked processes (ForkedJpegRows, ForkedStripes) on Linux: Pillow's decoder and
# encoder hold the GIL while they work.  (macOS forks, but its system libraries may not survive a fork
# once threads have run.)
FORKED = hasattr(os, "fork") and sys.platform.startswith("linux")
SLOTS = 4  # stripes in shared memory on their way to the encoder: one being filled, others waiting or encoded
# Messages between a forked decoder or encoder and the caller: two integers, a kind (or a buffer number) and a value.
_MESSAGE = struct.Struct("<ii")
FINISHED, FAILED, DECODED, RELEASED, AHEAD = -1, -2, -3, -4, -5  # kinds, beside buffer numbers (0 and up)


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
    return (ForkedJpegRows if FORKED else JpegRows)(source, signal, limits, *decoder)


class JpegRows:
    """The rows of a JPEG, decoded in a thread of their own: :meth:`rows` waits for them, :meth:`release` frees them.

    Every decoded pixel lands in a 4-byte slot whose last byte the unpacker
    sets to 255 (Pillow's RGBX); the buffer starts as zeros, so a row whose
    first slot ends in 255 is decoded.  The decoder is only asked between
    its calls, in its own thread, when no row is half written.
    """

    _SHARED = False
    _FREE = getattr(mmap, "MADV_DONTNEED", None)  # how released rows' memory goes back to the system

    def __init__(self, source, signal, limits, offset: int, jpegmode: str, config: tuple) -> None:
        self.signal = signal
        self.height, self.width = signal.data.shape[:2]
        self.channels = 1 if signal.data.ndim == 2 else signal.data.shape[2]
        self._source, self._limits = source, limits
        self._offset, self._jpegmode, self._config = offset, jpegmode, config
        # Anonymous memory: untouched pages cost nothing, dropped ones are returned.  Private here,
        # shared with the process that decodes into it for ForkedJpegRows.
        flags = mmap.MAP_SHARED if self._SHARED else mmap.MAP_PRIVATE
        self._map = mmap.mmap(-1, self.height * self.width * 4, flags=flags)
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

    def allow(self, ahead: int) -> None:
        """From now on the decoder may hold `ahead` rows beyond those released (the plan knows its halo)."""
        with self._changed:
            self._ahead = max(1, int(ahead))
            self._changed.notify_all()

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
            self._give_back(start, end)
        self._mark_released(below)

    def _mark_released(self, below: int) -> None:
        with self._changed:
            self._released = max(self._released, below)
            self._changed.notify_all()

    def _give_back(self, start: int, end: int) -> None:
        try:
            self._map.madvise(self._FREE, start, end - start)
        except (TypeError, OSError, ValueError):
            pass  # only an optimisation

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
        """Make the rows the decoder has completed since the last call readable."""
        marks = self._pixels[:, 0, 3]
        ready = self._ready
        while ready < self.height and marks[ready] == OPAQUE:
            ready += 1
        if ready != self._ready:
            self._mark_decoded(ready)

    def _mark_decoded(self, ready: int) -> None:
        with self._changed:
            self._ready = ready
            self._changed.notify_all()

    def _wait_for_room(self) -> None:
        with self._changed:
            while self._ready - self._released > self._ahead and not self._stop:
                self._changed.wait()


class ForkedJpegRows(JpegRows):
    """:class:`JpegRows` decoded in a forked process: the decoder no longer takes turns with the filter for the GIL.

    Pillow's decoder holds the interpreter while it decodes a block, and the
    filter, which gives the interpreter up around each OpenCV call, waited
    for it to come back after nearly every one (a third of its time).  Here
    the decoder runs the same loop in a forked copy of the process
    (:class:`convcli.parallel.Forked`) into memory shared with it; it says
    on one pipe how many rows are decoded, and learns on another how many
    the caller has let go of.  The samples are those of the thread.
    """

    _SHARED = True
    _FREE = getattr(mmap, "MADV_REMOVE", None)  # shared memory's pages stay until removed

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self._child = None
        self._news = self._told = -1  # the pipe of decoded counts (from the child), of released ones (to it)
        self._finished = False

    def start(self, ahead: int) -> None:
        """Start decoding; the decoder holds at most `ahead` rows beyond those released."""
        from ..parallel import Forked

        self._ahead = max(1, int(ahead))
        news_read, news_write = os.pipe()
        told_read, told_write = os.pipe()
        try:
            self._child = Forked(lambda: self._serve(news_write, told_read, (news_read, told_write)))
        except BaseException:
            for fd in (news_read, told_write):
                os.close(fd)
            raise
        finally:
            os.close(news_write)
            os.close(told_read)
        self._news, self._told = news_read, told_write

    def allow(self, ahead: int) -> None:
        """From now on the decoder may hold `ahead` rows beyond those released (the plan knows its halo)."""
        self._ahead = max(1, int(ahead))
        self._tell(AHEAD, self._ahead)

    def rows(self, lo: int, hi: int):
        """Rows ``lo..hi`` as a new uint8 array ``(rows, width[, channels])``, once they are decoded."""
        while self._ready < hi and self._error is None and not self._finished:
            self._receive()
        if self._ready < hi:
            self._raise()
        return _without_fourth_byte(self._pixels[lo:hi], self.channels)

    def _mark_released(self, below: int) -> None:
        self._released = max(self._released, below)
        self._tell(RELEASED, self._released)  # the decoder may now fill the rows given back

    def _tell(self, kind: int, value: int) -> None:
        try:
            os.write(self._told, _MESSAGE.pack(kind, value))
        except OSError:
            pass  # the decoder has finished (or failed: rows() or finish() says so)

    def finish(self) -> None:
        """Wait for the decoder to reach the end of the file; raise what it found wrong there."""
        while not self._finished and self._error is None:
            self._receive()
        if self._error is not None:
            self._raise()

    def close(self) -> None:
        """Stop the decoder (if it still runs) and wait until it is gone."""
        if self._child is not None:
            self._child.kill()
        for fd in (self._news, self._told):
            if fd >= 0:
                os.close(fd)
        self._news = self._told = -1

    def _receive(self) -> None:
        """Take the decoder's next news: rows decoded, the end of the file, or what went wrong."""
        import pickle

        message = _read_exactly(self._news, _MESSAGE.size)
        if not message:  # not the file's fault: told as it is, not as a decoding error
            self._error = ConvcliError(f"the JPEG decoder process {self._child.why()}", subject=self._source.name)
            return
        kind, value = _MESSAGE.unpack(message)
        if kind == DECODED:
            self._ready = value
        elif kind == FINISHED:
            self._finished = True
        else:
            self._error = pickle.loads(_read_exactly(self._news, value))

    # ---- in the child
    def _serve(self, news: int, told: int, parent_ends) -> None:
        import pickle

        for end in parent_ends:
            os.close(end)
        self._news, self._told = news, told
        self._decode()
        if self._error is None:
            os.write(news, _MESSAGE.pack(FINISHED, 0))
            return
        try:
            report = pickle.dumps(self._error)
        except Exception:  # an exception that does not pickle: its words
            report = pickle.dumps(OSError(str(self._error)))
        os.write(news, _MESSAGE.pack(FAILED, len(report)) + report)

    def _mark_decoded(self, ready: int) -> None:
        self._ready = ready
        os.write(self._news, _MESSAGE.pack(DECODED, ready))  # in the decoder's process: the parent is told

    def _wait_for_room(self) -> None:
        while self._ready - self._released > self._ahead:
            message = _read_exactly(self._told, _MESSAGE.size)
            if not message:
                raise EOFError("the filter stopped reading")
            kind, value = _MESSAGE.unpack(message)
            if kind == AHEAD:
                self._ahead = value
            else:
                self._released = max(self._released, value)


def _without_fourth_byte(pixels, channels: int):
    """RGBX rows as a new RGB (or, for grey, first-channel) array.

    numpy copies three bytes of four at 0.5 GB/s; OpenCV's vector loops are
    15x faster, so they do it once the filter has loaded OpenCV.
    """
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

    def __init__(self, fh, height: int, width: int, mode: str, options: dict, subject: str, *,
                 in_flight: int = STRIPES_IN_FLIGHT) -> None:
        self._fh, self._height, self._width, self._mode, self._subject = fh, height, width, mode, subject
        self._in_flight = in_flight  # 0: each stripe is encoded before write() returns
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
        self._drain(self._in_flight)

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
        from concurrent.futures import Future

        from ..parallel import submit

        options = self._options[0 if self._stripes == 0 else 1]
        encode = lambda: _encode_stripe(samples, self._mode, options)  # noqa: E731
        if self._in_flight:
            future = submit(encode)
        else:
            future = Future()
            try:
                future.set_result(encode())
            except BaseException as exc:  # handed over by _drain, as from a thread
                future.set_exception(exc)
        self._pending.append((future, samples.shape[0]))
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


class ForkedStripes:
    """:class:`JpegStripes` run in a forked process: the encoder no longer takes turns with the filter for the GIL.

    Pillow's encoder holds the interpreter while it codes (a fifth of the
    work for a photo), so in a thread it stalls the filter and the decoder.
    In a forked copy of the process (:class:`convcli.parallel.Forked`) it
    takes stripes of samples from a ring of :data:`SLOTS` buffers in shared
    memory, one message on a pipe per stripe, and writes the joined JPEG
    into the output file itself; it answers on a second pipe as each buffer
    is free again, then with the outcome.  The bytes are those
    :class:`JpegStripes` writes in this process.
    """

    def __init__(self, fh, height: int, width: int, mode: str, options: dict, subject: str) -> None:
        from ..parallel import Forked

        self._subject = subject
        channels = 3 if mode == "RGB" else 1
        shape = (STRIPE_ROWS, width) + ((channels,) if channels > 1 else ())
        size = STRIPE_ROWS * width * channels
        # Anonymous memory is shared with the child (MAP_SHARED): the samples are never copied through a pipe.
        self._ring = mmap.mmap(-1, SLOTS * size)
        self._slots = [np.frombuffer(self._ring, np.uint8, size, i * size).reshape(shape) for i in range(SLOTS)]
        fh.flush()
        todo_read, self._todo = os.pipe()
        self._done, done_write = os.pipe()
        parent_ends = (self._todo, self._done)
        try:
            self._child = Forked(lambda: _serve_stripes(
                self._slots, todo_read, done_write, parent_ends, fh.fileno(),
                (height, width, mode, options, subject)))
        except BaseException:
            for fd in parent_ends:
                os.close(fd)
            raise
        finally:
            os.close(todo_read)
            os.close(done_write)
        self._free = list(range(SLOTS))
        self._slot: int | None = None  # the buffer being filled
        self._filled = 0

    def write(self, samples) -> None:
        """Append rows (uint8, ``(rows, width[, 3])``); each whole stripe goes to the encoder."""
        def copy(lo, hi, out):
            out[...] = samples[lo:hi]
            return 0
        self.fill(samples.shape[0], copy)

    def fill(self, count: int, fill) -> int:
        """Append `count` rows that ``fill(lo, hi, out)`` writes (rows ``lo..hi`` into the uint8 array `out`).

        The rows go straight into the shared buffers: a conversion writes
        there without a copy of its own.  Returns the sum of what ``fill``
        returned (a clipped count).
        """
        done = total = 0
        while done < count:
            if self._slot is None:
                self._slot = self._free.pop() if self._free else self._wait_for_slot()
            rows = min(STRIPE_ROWS - self._filled, count - done)
            total += fill(done, done + rows, self._slots[self._slot][self._filled:self._filled + rows])
            self._filled += rows
            done += rows
            if self._filled == STRIPE_ROWS:
                self._send(self._slot, STRIPE_ROWS)
                self._slot, self._filled = None, 0
        return total

    def close(self) -> None:
        """Send what is left, wait for the encoder to write the end of the image; raise what went wrong."""
        try:
            if self._filled:
                self._send(self._slot, self._filled)
            self._send(FINISHED, 0)
            while self._receive() != FINISHED:
                pass
            if self._child.wait() != 0:
                self._lost()
        finally:
            self.abort()

    def abort(self) -> None:
        """End the encoder at once (a failed or interrupted run: the caller removes the file)."""
        self._child.kill()
        for fd in (self._todo, self._done):
            if fd >= 0:
                os.close(fd)
        self._todo = self._done = -1

    def _send(self, slot: int, rows: int) -> None:
        try:
            os.write(self._todo, _MESSAGE.pack(slot, rows))
        except BrokenPipeError:
            self._wait_for_slot()  # the encoder failed or died: what it said, or how it died
            self._lost()

    def _wait_for_slot(self) -> int:
        slot = self._receive()
        if slot == FINISHED:
            raise AssertionError("the JPEG encoder finished before its last stripe")
        return slot

    def _receive(self) -> int:
        """The encoder's next answer: a free buffer or FINISHED; its error raised as OutputError."""
        slot, length = _MESSAGE.unpack(_read_exactly(self._done, _MESSAGE.size) or self._lost())
        if slot == FAILED:
            message = _read_exactly(self._done, length) or self._lost()
            raise OutputError(message.decode("utf-8", "replace"), subject=self._subject)
        return slot

    def _lost(self):
        raise OutputError(f"cannot write this image as JPEG: the encoder process {self._child.why()}",
                          subject=self._subject)




def _read_exactly(fd: int, size: int) -> bytes:
    """`size` bytes from the pipe `fd`, or b"" if it ends first (the writer died)."""
    data = b""
    while len(data) < size:
        block = os.read(fd, size - len(data))
        if not block:
            return b""
        data += block
    return data


def _serve_stripes(slots, todo: int, done: int, parent_ends, fd: int, stripes_args) -> None:
    """The forked encoder: every stripe named on `todo` encoded and written to `fd`, each buffer freed on `done`."""
    for end in parent_ends:
        os.close(end)  # only the parent's death, not ours, may end these pipes
    with open(fd, "wb", buffering=1 << 20, closefd=False) as out:
        try:
            stripes = JpegStripes(out, *stripes_args, in_flight=0)
            while True:
                message = _read_exactly(todo, _MESSAGE.size)
                if not message:
                    raise EOFError("the filter ended without finishing")
                slot, rows = _MESSAGE.unpack(message)
                if slot == FINISHED:
                    break
                stripes.write(slots[slot][:rows])
                os.write(done, _MESSAGE.pack(slot, 0))
            stripes.close()
            out.flush()
        except OutputError as exc:
            text = exc.message.encode("utf-8")
            os.write(done, _MESSAGE.pack(FAILED, len(text)) + text)
            raise
    os.write(done, _MESSAGE.pack(FINISHED, 0))


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
