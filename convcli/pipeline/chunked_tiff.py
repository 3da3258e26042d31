"""A chunked result written as a tiled BigTIFF: computed a band of rows at a time, encoded tile by tile.

The lazy result of :mod:`.chunked` is computed band by band, top to bottom
(each band a few rows of its chunks, on this machine's threads), converted
to the output's samples and cut into tiles by :func:`convcli.io.tiff_chunked.write_tiles`
while the next band is being computed: memory holds about two bands, never
the image.  The file is written beside the destination and moved into place
when complete.
"""
from __future__ import annotations

from ..errors import UsageError

# A band's float chunks, its samples and the encoder's tiles: its share of the budget.
BAND_COPIES = 8


def store_tiff(y, image, dest: str, dtype, convert, strides: dict[int, int], options,
               progress) -> tuple[int, list[str]]:
    """Write ``y`` (a Dask array in ``image``'s axis order) to ``dest`` as a tiled BigTIFF; (samples clipped, notes).

    ``dtype`` and ``convert`` are the output's sample type and the function
    making a chunk its samples (:func:`.chunked.samples_of`: ``--depth`` and
    ``--range`` as in memory).
    """
    from .. import io
    from ..io import tiff_chunked
    from ..parallel import stream_ahead

    if options.resume:
        raise UsageError("completes a Zarr output's partial store; a TIFF output is written in one run",
                         subject="--resume")
    y, roles = _one_time_point(y, image.axes)
    spatial = [i for i, r in enumerate(roles) if r == "s"]
    channel = [i for i, r in enumerate(roles) if r == "c"]
    if len(spatial) not in (2, 3):
        raise UsageError(f"a TIFF holds images and volumes, not {len(spatial)}-D signals; name the output "
                         "NAME.zarr", subject="--output")
    y = y.transpose(spatial + channel)  # slices, rows, columns, channels
    layout = tiff_chunked.tiled_layout(image, y.shape, dtype, [strides.get(a, 1) for a in image.spatial],
                                       compress_level=options.compress_level, quality=options.quality)
    nd = len(spatial)
    if layout.planar:
        y = y.transpose(list(range(nd - 2)) + [nd] + [nd - 2, nd - 1])  # planes before rows and columns
    budget = io.memory_budget(options.memory_budget)
    bands = _bands(y, nd - 2 + int(layout.planar), layout.tile[0], budget)
    clipped = _Clipped()
    samples = y.map_blocks(_to_samples, convert, clipped, dtype=dtype)  # each chunk converted where computed
    if progress is not None:
        progress(0, len(bands))

    def computed():
        for cut in bands:
            yield _compute(samples[cut])

    def counted(items):
        for item in items:
            yield item
            if progress is not None:
                progress(1, 0)

    ahead = stream_ahead(computed(), depth=1, name="tiff-bands")
    try:
        tiff_chunked.write_tiles(dest, layout, counted(ahead), buffer=budget // BAND_COPIES)
    finally:
        ahead.close()
    return sum(clipped.counts), layout.notes


class _Clipped:
    """The samples clipped, one count per chunk, added by the task that converted the chunk."""

    def __init__(self):
        self.counts: list[int] = []  # list.append is atomic: tasks on several threads add without a lock


def _to_samples(values, convert, clipped: _Clipped):
    out, count = convert(values)
    clipped.counts.append(int(count))
    return out


def refuse_alpha(image, options) -> None:
    """A TIFF with alpha: chunks filter alpha like a colour, so only ``--alpha channel`` gives what memory would."""
    if (getattr(image, "meta", None) or {}).get("alpha") and options.alpha != "channel":
        raise UsageError(f"a TIFF over the memory budget is filtered in chunks, which filter alpha like a colour; "
                         f"pass --alpha channel (or raise --memory-budget for --alpha {options.alpha})",
                         subject="--alpha")


def _one_time_point(y, axes):
    """``y`` without its time axis (a TIFF output holds one time point) and the roles of the axes left."""
    roles = list(axes)
    if "t" in roles:
        t = roles.index("t")
        if y.shape[t] != 1:
            raise UsageError(f"a TIFF output holds one time point, and the input has {y.shape[t]}; name the output "
                             "NAME.zarr", subject="--output")
        y = y[(slice(None),) * t + (0,)]
        del roles[t]
    return y, roles


def _bands(y, row_axis: int, tile_rows: int, budget: int) -> list[tuple]:
    """The cuts of ``y`` to compute in turn: for each page or plane, bands of whole chunk rows, top to bottom.

    A band is a row of tiles or a row of chunks, or as many rows of chunks
    as there are threads where one row has fewer chunks (so that every core
    computes) and the budget allows; bands end on chunk boundaries, so no
    chunk is computed twice.
    """
    import itertools

    from ..parallel import thread_count

    row_bytes, across = 4, 1
    for axis, chunks in enumerate(y.chunks):
        if axis > row_axis:
            row_bytes *= sum(chunks)
            across *= len(chunks)
    chunk_rows = max(y.chunks[row_axis])
    # One row of chunks where it gives every thread a task (channels are chunks of their own), else several.
    wanted = max(tile_rows, chunk_rows * (1 if across >= thread_count() else thread_count()))
    if wanted * row_bytes * BAND_COPIES > budget:
        wanted = chunk_rows  # the writer keeps the rows of an unfinished row of tiles
    edges, start, top = [], 0, 0
    for rows in y.chunks[row_axis]:
        top += rows
        if top - start >= wanted or top == y.shape[row_axis]:
            edges.append(slice(start, top))
            start = top
    leading = itertools.product(*(range(n) for n in y.shape[:row_axis]))
    return [lead + (rows,) for lead in leading for rows in edges]


def _compute(block):
    """A band's samples, on this machine's threads."""
    import numpy as np

    from ..parallel import thread_count

    return np.asarray(block.compute(scheduler="threads", num_workers=thread_count()))
