"""Files in and out: one read/write interface over arrays, images, audio and volumes.

>>> from convcli import io
>>> sig = io.read("examples/photo.jpg")          # doctest: +SKIP
>>> io.write(sig, "copy.png")                     # doctest: +SKIP

:func:`read` detects the format from the file's content, reads the samples in
their stored type into a :class:`Signal` and keeps in ``meta`` what a writer
needs to put back the same format, sample type and metadata.  :func:`write`
converts the (usually float) samples with :func:`convcli.io.samples.to_samples`
and writes atomically.  Both go through the table of formats
(:mod:`convcli.io.formats`), which imports a format's reader or writer only
when it is needed, and with it its backend (Pillow, soundfile, nibabel).
"""
from __future__ import annotations

from ..errors import DataError, FormatMismatch, OutputError, UsageError, check_choice, shown
from . import formats
from .signal import KINDS, Signal, Written

STREAMED_FORMATS = formats.STREAMED  # read and written in place through a memory map

__all__ = ["read", "open_source", "write", "audio_writer", "derive", "mapped_output", "output_format", "open_rows", "release_rows",
           "memory_budget", "human_size", "check_compress_level", "check_quality", "open_input", "open_image_rows",
           "rows_writable", "row_output", "Signal", "Written", "KINDS"]


def open_input(source, *, memory_budget=None):
    """The input `source` (a path, or ``-``: stdin read now), checked readable, for :func:`read` or :func:`open_image_rows`.

    stdin can be read once only: a caller that may try both opens it here.
    """
    from .files import Source
    from .limits import Limits

    return Source.open_input(source, max_bytes=Limits(memory_budget=memory_budget).memory_budget)


def open_image_rows(source, *, auto_orient=True, max_pixels=None, memory_budget=None):
    """An image to read a band of rows at a time as it decodes, or None when it must be read whole.

    `source` comes from :func:`open_input`.  A baseline JPEG photo (RGB or
    grey, upright) streams; see :mod:`convcli.io.rows`.  The result's
    ``signal`` has the metadata :func:`read` would give and a stand-in for
    ``data`` (the shape only); ``start``, ``allow``, ``rows``, ``release``, ``finish``
    and ``close`` drive the decoder.
    """
    from .rows import open_rows as rows_of

    return rows_of(source, auto_orient=auto_orient, max_pixels=max_pixels, memory_budget=memory_budget)


def rows_writable(like, format=None, *, depth=None, quality=None) -> bool:
    """Whether the result `like` (its ``data`` giving the shape) can be written as its rows come, into `format`."""
    from .rows import rows_writable as writable

    return writable(like, format or like.meta.get("format"), depth=depth, quality=quality)


def row_output(dest, like, *, format=None, range="clip", depth=None, quality=None, compress_level=None):
    """A context manager yielding a sink whose ``write(rows)`` encodes the filtered rows into `dest` as they come.

    The samples are converted exactly as :func:`write` converts the whole
    result; the sink's ``written`` gives the clipped count and the notes.
    """
    from .rows import row_output as output

    return output(dest, like, format=format, range=range, depth=depth, quality=quality,
                  compress_level=compress_level)


def open_source(source, *, memory_budget=None):
    """A path or ``-`` opened as an input (:func:`open_input`), and its format told from its content.

    Returns ``(source, format)``: what :func:`read` takes in place of the
    path, and the row name of the table of formats, for a caller that
    decides by the format how to read it (a video is streamed, not read whole).
    """
    from .detect import detect

    src = open_input(source, memory_budget=memory_budget)
    return src, detect(src)


def read(source, *, kind=None, key=None, auto_orient=True, max_pixels=None, memory_budget=None,
         stream=False) -> Signal:
    """Read a file (or ``-`` for stdin) into a Signal, detecting the format from its content.

    Parameters
    ----------
    source : str or path-like or Source
        The input file, or ``"-"`` to read the bytes of stdin, or a
        :class:`~convcli.io.files.Source` already opened (see :func:`open_input` and :func:`open_source`).
    kind : {"signal", "audio", "image", "volume"}, optional
        How to interpret the samples when the content allows more than one
        reading (a 2-D ``.npy`` as a grey image or as multichannel audio).
    key : str, optional
        The array to take from a ``.npz`` archive holding several.
    auto_orient : bool
        Apply an image's EXIF orientation (the result is upright, the tag dropped).
    max_pixels : int, optional
        Largest image accepted (default: Pillow's bomb threshold, 89 478 485).
    memory_budget : int or str, optional
        Bytes a read may cost, e.g. ``"4G"`` (default: half the available memory).
    stream : bool
        A ``.npy`` file (or an uncompressed float NIfTI volume) over the
        memory budget is memory-mapped read-only instead of refused, and
        ``Signal.streamed`` is set: for a caller that filters it band by
        band into :func:`mapped_output`.  An audio file over the budget is
        opened for reading in blocks (``Signal.blocks``), for a caller that
        writes with :func:`audio_writer`.

    Raises
    ------
    DataError
        Unreadable, corrupt, unsupported or over-limit input (subject: the file).
    UsageError
        A `kind` or `key` that does not fit the file; NIfTI without nibabel.
    """
    from .files import Source
    from .limits import Limits

    if kind is not None:
        check_choice(kind, KINDS, "kind")
    limits = Limits(max_pixels, memory_budget)
    src = source if isinstance(source, Source) else Source.open_input(source, max_bytes=limits.memory_budget)
    from .detect import detect

    fmt = detect(src)
    row = formats.get(fmt)
    reader = row.read_function()
    sig = reader(src, fmt, limits=limits, kind=kind, key=key, auto_orient=auto_orient,
                 stream=stream and (row.streamed or row.family == "audio"))
    sig.meta.setdefault("format", fmt)
    sig.meta["source"] = src.name
    return sig


def open_source(source, *, memory_budget=None):
    """A path or ``-`` opened as an input (stdin read now, within the budget), and its format from its content.

    Returns ``(source, format)``: the :class:`~convcli.io.files.Source` that
    :func:`read` takes in place of the path, and the row name of the table of
    formats, for a caller that decides by the format how to read it (a video
    is streamed, not read whole).
    """
    from .detect import detect
    from .files import Source
    from .limits import Limits

    src = Source.open_input(source, max_bytes=Limits(memory_budget=memory_budget).memory_budget)
    return src, detect(src)


def write(sig: Signal, dest, *, format=None, compress_level=None, range: str = "clip", depth=None,
          quality=None) -> Written:
    """Write a Signal to a file (or ``-`` for stdout), atomically, in the format asked for.

    The format is `format`, else the destination's extension, else (for
    stdout or an unknown extension) the format the signal was read from.
    Samples are converted to the signal's recorded sample type (or to
    `depth`) by :func:`convcli.samples.to_samples` under the range mode
    `range` (clip, abs, offset, rescale); the returned :class:`Written`
    counts clipped samples and notes what the format changed or ignored.

    Parameters
    ----------
    depth : {"1", "8", "16", "24", "32", "32f", "64f"}, optional
        The output's sample type instead of the input's (see
        :mod:`convcli.io.samples` for how values are scaled between types).
    quality : int, optional
        1..100 for lossy formats (JPEG, WebP); default: a JPEG input's own
        quality (its quantisation tables), else 90.
    compress_level : int, optional
        0..9 for the formats that compress losslessly (PNG, TIFF, FLAC, .npz).

    Raises
    ------
    OutputError
        The destination cannot be written, or cannot hold this signal.
    DataError
        NaN or infinity bound for an integer format.
    UsageError
        An unknown `format` name; a bad `depth`, `quality` or `compress_level`.
    """
    from .samples import check_depth

    dest = str(dest)
    fmt = output_format(dest, format) or sig.meta.get("format") or "npy"
    check_compress_level(compress_level)
    check_quality(quality)
    depth = check_depth(depth)
    row = formats.get(fmt)
    if sig.frames and not row.frames and sig.data.shape[0] > 1:
        many = ", ".join(r.name.upper() for r in formats.FORMATS if r.frames and r.family == "image")
        raise FormatMismatch(f"{sig.data.shape[0]} frames cannot be written as {row.description}; use {many} "
                          "(or .npy)", subject=dest)
    writer = row.write_function()
    try:
        written = writer(sig, dest, fmt, compress_level=compress_level, range_mode=range, depth=depth,
                         quality=quality)
    except DataError as exc:
        if exc.subject is None:
            exc.subject = sig.meta.get("source") or dest
        raise
    for option, value in (("compress_level", compress_level), ("quality", quality)):
        if value is not None and option not in row.options:
            flag = "--" + option.replace("_", "-")
            written.notes.append(f"{flag} does not apply to {row.description} output; ignored")
    return written


def audio_writer(like: Signal, dest, *, format=None, channels: int, frames: int | None = None, rate=None,
                 compress_level=None, depth=None, quality=None):
    """An audio file to write a block at a time, atomically: :class:`convcli.io.audio.AudioWriter`.

    The format is chosen as :func:`write` chooses it; `like` is the signal
    whose metadata the output keeps (the input: format, subtype, bits),
    `channels`, `frames` and `rate` describe what will be written.  Notes
    say what the format changed and which options it ignores.
    """
    from .audio import AudioWriter
    from .samples import check_depth

    dest = str(dest)
    fmt = output_format(dest, format) or like.meta.get("format")
    row = formats.get(fmt)
    if row.family != "audio":
        raise UsageError(f"{row.description} is not audio; write the sound as WAV, FLAC, ...", subject=dest)
    check_compress_level(compress_level)
    check_quality(quality)
    writer = AudioWriter(dest, fmt, like=like, channels=channels, frames=frames, rate=rate,
                         compress_level=compress_level, depth=check_depth(depth))
    for option, value in (("compress_level", compress_level), ("quality", quality)):
        if value is not None and option not in row.options:
            writer.notes.append(f"--{option.replace('_', '-')} does not apply to {row.description} output; ignored")
    return writer


def check_compress_level(level) -> None:
    """Refuse a compression level outside zlib's 0..9 (None: each writer's default)."""
    from ..errors import ParameterError

    if level is not None and (isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9):
        raise ParameterError(f"must be 0..9, got {shown(level)}", subject="compress_level")


def check_quality(quality) -> None:
    """Refuse a lossy quality outside 1..100 (None: the input's own, else 90)."""
    from ..errors import ParameterError

    if quality is not None and (isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100):
        raise ParameterError(f"must be a whole number from 1 to 100, got {shown(quality)}", subject="quality")


def memory_budget(value: int | None = None) -> int:
    """The memory budget in bytes: `value`, or by default half the memory available now."""
    from .limits import Limits

    return Limits(memory_budget=value).memory_budget


def human_size(nbytes: int) -> str:
    """A byte count for people: 1.5 GiB, 300 MiB, 12 KiB."""
    from .limits import human

    return human(nbytes)


def output_format(dest, format=None) -> str | None:
    """The format a write to `dest` uses: `format`, else the extension's; None when the signal's own decides."""
    from .files import STDIO

    dest = str(dest)
    if format is not None:
        return formats.format_from_name(format)
    fmt = formats.from_extension(dest) if dest != STDIO else None
    if fmt is None and dest != STDIO and _has_extension(dest):
        raise UsageError("cannot tell the output format from this extension; use a known one or --format", subject=dest)
    return fmt


def mapped_output(dest, like: Signal, dtype, *, format="npy"):
    """A context manager yielding a writable array that becomes the file `dest` when the block succeeds.

    For a streamed filter (see :func:`read`'s ``stream``): `like` describes
    the result (its ``data`` gives only the shape; NIfTI takes the header and
    affine from its ``meta``).  The result is written in place into a
    memory-mapped temporary file beside `dest`, renamed onto `dest` at the
    end; any failure removes it.  A ``.npy`` array is C-ordered, a NIfTI one
    Fortran-ordered (x fastest), as the formats store them.
    """
    if format not in STREAMED_FORMATS:
        raise UsageError(f"a streamed result can be written as {', '.join(STREAMED_FORMATS)} only, not {format}",
                         subject=str(dest))
    if format == "nifti":
        from .nifti import mapped_nifti

        return mapped_nifti(like, str(dest), dtype)
    from .arrays import mapped_npy

    return mapped_npy(str(dest), like.data.shape, dtype)


def open_rows(arr, subject: str):
    """The rows of a streamed input's mapped array, read from its file into buffers (a context manager).

    The streamed filter reads through this and never touches the map: a
    file that shrinks under it is then a :class:`DataError`, not a SIGBUS
    (see :class:`convcli.io.arrays.FileRows`).
    """
    from .arrays import FileRows

    return FileRows.of_map(arr, subject)


def release_rows(arr):
    """A function ``f(rows)`` that drops the resident pages of the first `rows` rows of a mapped array (else a no-op)."""
    from .arrays import PageDropper

    return PageDropper(arr)


def _has_extension(dest: str) -> bool:
    import os

    return bool(os.path.splitext(os.path.basename(dest))[1])


def derive(sig: Signal, data, *, stride=1, origin=None) -> Signal:
    """A new Signal holding `data` (the filtered samples) with `sig`'s metadata, updated for stride.

    Stride changes the sampling grid, so what describes it changes with it:
    an audio sample rate is divided by the stride, voxel spacing and DPI are
    scaled, and a NIfTI affine gets the new voxel sizes.  `origin` gives, per
    spatial axis, the input index (possibly fractional) at which output sample
    0 sits; it moves a NIfTI affine's origin there (default 0).
    """
    import copy

    nd = sig.spatial_ndim
    strides = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    if len(strides) != nd:
        raise ValueError(f"stride needs {nd} entries, got {strides}")
    meta = copy.deepcopy(sig.meta)
    out = Signal(data=data, kind=sig.kind, channel_axis=sig.channel_axis, sample_rate=sig.sample_rate, frames=sig.frames,
                 spacing=sig.spacing, meta=meta)
    if any(s != 1 for s in strides) or origin is not None:
        from .grid import restride

        restride(out, strides, origin)
    return out
