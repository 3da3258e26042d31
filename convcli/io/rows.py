"""Images read and written a band of rows at a time, for a filter that never holds the whole picture.

:func:`open_rows` gives the rows of an input as they are decoded
(:class:`convcli.io.jpeg_stream.JpegRows`), or None when the file must be
read whole.  :func:`row_output` takes the filtered rows as they come,
turns them into samples exactly as :func:`convcli.io.write` would (the same
``--range``, ``--depth`` and mode rules, :func:`convcli.io.image.convert`
band by band) and encodes them into the destination, atomically.
"""
from __future__ import annotations

import contextlib

ROW_FORMATS = ("jpeg", "png")  # outputs written as their rows come


def open_rows(source, *, auto_orient: bool = True, max_pixels=None, memory_budget=None):
    """The input's rows as they are decoded, or None when this file is read whole."""
    from .detect import detect
    from .jpeg_stream import open_rows as open_jpeg
    from .limits import Limits

    limits = Limits(max_pixels, memory_budget)
    return open_jpeg(source, detect(source), limits=limits, auto_orient=auto_orient)


def rows_writable(like, fmt: str | None, *, depth=None, quality=None) -> bool:
    """Whether `like` (the result's Signal, its ``data`` giving the shape) can be written row by row as `fmt`."""
    from .image import MAX_SIDE
    from .jpeg_stream import stripes_write

    if fmt not in ROW_FORMATS or like.frames or like.spatial_ndim != 2 or like.meta.get("alpha"):
        return False
    channels = 1 if like.channel_axis is None else like.data.shape[-1]
    height, width = like.spatial_shape
    if channels not in (1, 3) or like.meta.get("mode") not in ("L", "RGB") or depth not in (None, "8"):
        return False
    if fmt == "png":
        return True
    return max(height, width) <= MAX_SIDE[fmt] and stripes_write(like.meta, depth, quality)


class RowSink:
    """Filtered rows in, encoded rows out: :meth:`write` each band in order; ``written`` says what happened."""

    def __init__(self, fh, like, dest: str, fmt: str, *, range_mode: str, depth, quality, compress_level) -> None:
        from . import formats
        from .signal import Written

        self._like, self._fmt, self._range, self._depth = like, fmt, range_mode, depth
        self._channels = 1 if like.channel_axis is None else like.data.shape[-1]
        self.written = Written(path=dest, format=fmt)
        self._noted = False
        self._plain = False  # known from the first band
        self._encoder = _encoder(fh, like, dest, fmt, quality, compress_level, self.written.notes)
        row = formats.get(fmt)
        for option, value in (("compress_level", compress_level), ("quality", quality)):
            if value is not None and option not in row.options:
                self.written.notes.append(f"--{option.replace('_', '-')} does not apply to {row.description} "
                                          "output; ignored")

    def write(self, values) -> None:
        """The next rows of the result (floats in the input's units), converted and encoded."""
        from .image import convert

        if self._plain:
            self.written.clipped += self._write_plain(values)
            return
        notes: list[str] = []
        samples, mode, clipped = convert(values, self._channels, self._like.meta, self._fmt, self._range,
                                         self._depth, notes, False)
        if not self._noted:  # every band says the same
            self.written.notes[:0] = notes
            self._noted = True
            # 8-bit in, 8-bit out in the same mode, clipped: every later band is to_samples(values, uint8, "clip")
            self._plain = (self._range == "clip" and self._depth is None and samples.dtype.name == "uint8"
                           and mode == self._like.meta.get("mode") and self._like.meta.get("dtype") == "uint8")
        self.written.clipped += clipped
        self._encoder.write(samples)

    def _write_plain(self, values) -> int:
        """Rows converted by :func:`~convcli.io.samples.clip_to_uint8`, into the encoder's own memory if it has some."""
        import numpy as np

        from .samples import clip_to_uint8

        fill = getattr(self._encoder, "fill", None)
        if fill is not None:
            return fill(values.shape[0], lambda lo, hi, out: clip_to_uint8(values[lo:hi], out))
        samples = np.empty(values.shape, dtype=np.uint8)
        clipped = clip_to_uint8(values, samples)
        self._encoder.write(samples)
        return clipped

    def close(self) -> None:
        self._encoder.close()

    def abort(self) -> None:
        """A failed run: stop the encoder's helpers (the file is removed by the caller)."""
        stop = getattr(self._encoder, "abort", None)
        if stop is not None:
            stop()


def _encoder(fh, like, dest: str, fmt: str, quality, compress_level, notes: list[str]):
    """The stripe encoder of `fmt`, with the metadata and options the whole-image writer would use."""
    from .image import PNG_COMPRESS_LEVEL, _png_notes, _save_options

    height, width = like.spatial_shape
    meta = like.meta
    if fmt == "png":
        from .png import PngStripes

        _png_notes(meta, notes)
        level = PNG_COMPRESS_LEVEL if compress_level is None else int(compress_level)
        channels = 1 if like.channel_axis is None else like.data.shape[-1]
        return PngStripes(fh, height, width, channels, level, icc_profile=meta.get("icc_profile"),
                          dpi=meta.get("dpi"), exif=meta.get("exif"))
    from . import jpeg_stream

    stripes = jpeg_stream.ForkedStripes if jpeg_stream.FORKED else jpeg_stream.JpegStripes
    return stripes(fh, height, width, meta["mode"], _save_options(fmt, meta, 0, quality, notes), dest)


@contextlib.contextmanager
def row_output(dest, like, *, format=None, range: str = "clip", depth=None, quality=None, compress_level=None):
    """A :class:`RowSink` writing `dest` (``-``: stdout) as the rows come; the file appears only if all went well."""
    from . import output_format
    from .files import atomic_path

    dest = str(dest)
    fmt = output_format(dest, format) or like.meta.get("format")
    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        sink = RowSink(fh, like, dest, fmt, range_mode=range, depth=depth, quality=quality,
                       compress_level=compress_level)
        try:
            yield sink
            sink.close()
        except BaseException:
            sink.abort()
            raise
