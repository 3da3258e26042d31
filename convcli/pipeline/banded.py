"""Filter a photo band by band: decoding, filtering and encoding overlap, and memory holds bands, not the image.

A 24-megapixel JPEG filtered whole is decoded (72 MB of samples), filtered
(a 288 MB float32 result), converted and encoded one step after the other:
561 MiB and 2.5 times vips' time.  Here the decoder runs beside the filter
(:func:`convcli.io.open_image_rows`: a forked process where the system has
one), from before the chain is planned; each band of output rows is
filtered from the input rows it needs (its halo included) as soon as they
are decoded, two bands at a time on the shared threads, and converted to
samples straight into the buffers of an encoder that writes stripes beside
it (:func:`convcli.io.row_output`).

The result is the whole-image path's bit for bit: every kernel runs with
the method planned for the whole image, and only where that method
computes each output row from its own window of rows the same way
whatever surrounds it (:func:`convcli.engine.rows_independent`).  A band's
output row ``j`` is the whole image's row ``lo + j`` (at stride 1 the
padding before the first sample does not depend on the length), and the
rows a band's cut edges spoil are never kept.  Whatever does not fit that
(a stride, a circular border, an operator kernel, alpha, a colour space,
``--range rescale``, FFT-planned kernels, EXIF rotation, progressive or
non-JPEG files, small images) takes the whole-image path.
"""
from __future__ import annotations

from .options import FilterOptions

# Smaller photos take the whole-image path: its fixed costs are lower and it holds little memory anyway.
MIN_PIXELS = 1 << 22
# float32 bytes of one band's result (rounded to whole encoder stripes): a few MB stays in the
# caches' reach and keeps the rows in flight (decoded, filtered, encoding) to a few dozen MB.
BAND_BYTES = 6 << 20
BANDS_AHEAD = 3  # bands of input rows the decoder may hold beyond those the filter released
BANDS_IN_FLIGHT = 2  # bands filtered at once (one per core), the oldest converted as soon as it is done


def filter_in_bands(src, dest: str, options: FilterOptions):
    """Filter the input `src` (from ``io.open_input``) into `dest` band by band, or return None to read it whole.

    Returns the :class:`~convcli.pipeline.filter.FilterReport` of the run
    (its ``input`` and ``seconds`` are the caller's to fill in).
    """
    from .. import io

    if not _options_stream(options):
        return None
    reader = io.open_image_rows(src, auto_orient=options.auto_orient, max_pixels=options.max_pixels,
                          memory_budget=options.memory_budget)
    if reader is None:
        return None
    if reader.height * reader.width < MIN_PIXELS:
        return None
    # Decoding starts before the plan (OpenCV's import, the kernels): the cores are otherwise idle then.
    reader.start(ahead=BANDS_AHEAD * band_rows(reader.width, reader.channels))
    try:
        bands = _plan(reader.signal, dest, options)
        if bands is None:
            return None
        return _run(reader, bands, src, dest, options)
    finally:
        reader.close()


def _options_stream(options: FilterOptions) -> bool:
    """What the options alone decide: stride 1, a border that does not wrap, no colour space or rescale."""
    from ..engine import BORDER_MODES

    head = str(options.geometry.pad_mode).strip().lower().partition(":")[0]
    wraps = any(m.name == "circular" and (head == m.name or head in m.aliases) for m in BORDER_MODES)
    strides = options.geometry.stride if isinstance(options.geometry.stride, tuple) else (options.geometry.stride,)
    return (not wraps and all(s == 1 for s in strides) and options.colorspace == "stored"
            and options.range != "rescale" and options.depth in (None, "8"))


class _Bands:
    """How the output is cut: the run, each kernel's pinned methods, the row reach, the result's Signal."""

    def __init__(self, run, methods, before: int, extent: int, like, range_mode: str):
        self.run, self.methods, self.like, self.range = run, methods, like, range_mode
        self.before = before  # input rows above an output row's window, all kernels together
        self.extent = extent  # input rows in that window
        self.height = like.spatial_shape[0]

    def inputs(self, o0: int, o1: int, height: int) -> tuple[int, int]:
        """The input rows output rows ``o0..o1`` read (clipped to the image; the border supplies the rest)."""
        return max(0, o0 - self.before), min(height, o1 - 1 - self.before + self.extent)


def _plan(signal, dest: str, options: FilterOptions):
    """Plan the chain for the whole image; None if it cannot run in bands (see the module docstring)."""
    import numpy as np

    from .. import io
    from ..engine import make_plan, rows_independent
    from .chain import kernel_args, prepare, resolve_kernels

    kernels = resolve_kernels(options, signal)
    run = prepare(signal, kernels, options)
    chain = run.chain
    if run.alpha is not None or chain.axes.moved or any(k.operator is not None for k in kernels):
        return None
    range_mode = options.range or kernels[-1].range_default
    if range_mode == "rescale":
        return None
    shape, dtype = chain.axes.engine_shape(signal.data.shape), signal.data.dtype
    methods, before, extent = [], 0, 1
    for i, (kernel, step) in enumerate(zip(kernels, run.steps)):
        channels = chain.signal.channel_axis is not None
        spatial = shape[len(shape) - chain.axes.ndim - channels:len(shape) - channels]
        args = kernel_args(kernel, chain.args(i == len(kernels) - 1, chain.pad_mode), spatial)
        plans = [make_plan(shape, w, x_dtype=dtype, **dict(args, method=m))
                 for w, m in zip(kernel.weights, step["methods"])]
        if not all(rows_independent(p, w, dtype) for p, w in zip(plans, kernel.weights)):
            return None
        rows = plans[0].axes[0]
        if rows.stride != 1:
            return None
        methods.append(tuple(p.method for p in plans))
        before += rows.before
        extent += rows.span - 1
        shape, dtype = plans[0].output_shape, plans[0].dtype
    out_shape = chain.axes.signal_shape(shape)
    like = io.derive(signal, np.broadcast_to(np.zeros((), dtype=np.float32), out_shape),
                     stride=chain.strides(run.steps), origin=chain.origin(run.steps))
    if not io.rows_writable(like, io.output_format(dest, options.out_format), depth=options.depth,
                            quality=options.quality):
        return None
    return _Bands(run, methods, before, extent, like, range_mode)


def band_rows(width: int, channels: int) -> int:
    """Output rows per band: about ``BAND_BYTES`` of float32 result, in whole encoder stripes."""
    from ..io.jpeg_stream import STRIPE_ROWS

    per_row = max(1, width * channels * 4)
    return max(1, BAND_BYTES // (per_row * STRIPE_ROWS)) * STRIPE_ROWS


def _run(reader, bands: _Bands, src, dest: str, options: FilterOptions):
    import contextlib

    from .. import io
    from ..parallel import opencv_threads
    from .filter import FilterReport, input_notes

    rows = band_rows(bands.like.spatial_shape[1], reader.channels)
    # OpenCV on one thread: the decoder, the filter and the encoder already share the cores, and a band's
    # small calls waking OpenCV's threads would fight them (OpenCV loads while the first rows decode).
    uses_opencv = any("opencv" in methods for methods in bands.methods)
    with contextlib.ExitStack() as stack:
        if uses_opencv:
            stack.enter_context(opencv_threads(1))
        sink = stack.enter_context(io.row_output(
            dest, bands.like, format=options.out_format, range=bands.range, depth=options.depth,
            quality=options.quality, compress_level=options.compress_level))
        reader.allow(BANDS_AHEAD * rows + bands.extent)
        _filter_bands(reader, bands, sink, rows)
    signal = reader.signal
    return FilterReport(
        input=src.name, output=str(dest), input_shape=tuple(signal.data.shape),
        output_shape=tuple(bands.like.data.shape), kernels=bands.run.steps, clipped=sink.written.clipped,
        notes=input_notes(signal) + sink.written.notes)


def _filter_bands(reader, bands: _Bands, sink, rows: int) -> None:
    """Every band of output rows, in order: its input rows as they decode, filtered, handed to the sink.

    Two bands are filtered at a time on the shared threads (OpenCV gives the
    GIL up while it computes) while this thread takes the next band's rows
    and converts the finished one into the encoder's buffers, in order.
    """
    from collections import deque

    from ..parallel import floats_as_data, submit

    chain = bands.run.chain

    def filtered(band, o0: int, o1: int, lo: int):
        with floats_as_data():
            # No clamp at zero: the integer samples made of the result clip there, and round-off
            # (|v| << 0.5) below zero rounds to 0 without counting as clipped.
            out = chain.run(band, owned=True, methods=bands.methods, clamp=False)
        return out[o0 - lo:o1 - lo]

    pending: deque = deque()
    try:
        for o0 in range(0, bands.height, rows):
            o1 = min(bands.height, o0 + rows)
            lo, hi = bands.inputs(o0, o1, reader.height)
            band = reader.rows(lo, hi)  # a copy: the decoder may reuse what the next band does not read
            reader.release(bands.inputs(o1, o1 + 1, reader.height)[0])
            pending.append(submit(lambda band=band, o0=o0, o1=o1, lo=lo: filtered(band, o0, o1, lo)))
            while len(pending) >= BANDS_IN_FLIGHT:
                sink.write(pending.popleft().result())
        while pending:
            sink.write(pending.popleft().result())
    finally:
        for future in pending:  # a failed run: nothing more is written
            future.cancel()
    reader.finish()
