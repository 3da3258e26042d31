"""Correlation of a Dask array: a lazy Dask array whose chunks each see exactly the samples they need.

Every output chunk is one task.  It gathers the slivers of the input chunks
its window reaches (the halo), extends them by the engine's own border rule
only where the window passes the array's true edges, and runs the in-memory
engine on the result with ``padding="valid"``.  So a chunked result is the
in-memory one to float rounding for every border mode, padding, stride and
dilation, whatever the chunking: chunks need not be multiples of the stride
and may be thinner than the kernel's reach (a halo then spans several
chunks).  Dask's own ``boundary="reflect"`` is numpy's symmetric, not our
reflect, which is why the border is never left to Dask.

The method is chosen once, on the largest chunk (with a second choice for a
chunk whose window holds NaN or infinity, as in memory), and every chunk
runs on one thread: a chunk's samples do not depend on which worker
computed it, nor on how many cores that worker has.

Dask is imported only here, and only when a Dask array is passed.
"""
from __future__ import annotations

import itertools
import operator

import numpy as np

from ..parallel import one_thread
from .correlation import _as_kernel, make_plan
from .geometry import AxisPlan


def is_dask_array(x) -> bool:
    """Whether ``x`` is a Dask array, without importing Dask."""
    return type(x).__module__.startswith("dask.") and hasattr(x, "chunks") and hasattr(x, "dask")


def lazy_correlate(x, kernel, *, flip=False, stride=1, padding="same", pad_mode="reflect", dilation=1,
                   channel_axis=None, method="auto", precision=None, spatial_ndim=None, read_chunks=None):
    """Correlate (or, with ``flip``, convolve) a Dask array lazily; see :func:`convcli.correlate`.

    ``x`` may also be any array that can be sliced (a ``zarr.Array``, a
    memory map) with ``read_chunks`` (one tuple of chunk lengths per axis):
    then each task reads its own window from ``x`` and holds nothing else,
    so the memory of a run is its tasks' windows, whatever the order they
    run in (a Dask array's chunks wait in memory for their neighbours).
    Output chunks are the input chunks divided by the stride.
    """
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    kernel = _as_kernel(kernel)
    geometry = make_plan(x.shape, kernel, stride=stride, padding=padding, pad_mode=pad_mode, dilation=dilation,
                         channel_axis=channel_axis, method="direct", precision=precision,
                         spatial_ndim=spatial_ndim, x_dtype=x.dtype)
    if flip:
        kernel = np.ascontiguousarray(kernel[(...,) + (slice(None, None, -1),) * geometry.spatial_ndim])
    stored = read_chunks is not None
    grid = list(read_chunks if stored else x.chunks)
    if geometry.per_channel and len(grid[geometry.channel_axis]) > 1:
        # each chunk needs all its channels' weights
        if stored:
            grid[geometry.channel_axis] = (x.shape[geometry.channel_axis],)
        else:
            x = x.rechunk({geometry.channel_axis: -1})
            grid = list(x.chunks)
    plans = axis_plans(geometry, len(x.shape))
    out_chunks = tuple(_output_chunks(p, c) for p, c in zip(plans, grid))
    ndim = len(x.shape)
    mode = geometry.border.numpy_mode
    sources = [_source_index(p, n, mode) for p, n in zip(plans, x.shape)]
    bounds = [np.cumsum((0,) + tuple(c)) for c in grid]
    per_axis = [[_block_axis(sources[a], bounds[a], plans[a], x.shape[a], mode, o0, o1)
                 for o0, o1 in _edges(out_chunks[a])] for a in range(ndim)]
    spatial = [a for a, p in enumerate(plans) if p is not None and a in _spatial_axes(geometry, ndim)]
    args = dict(stride=stride, padding="valid", pad_mode=pad_mode, dilation=dilation, channel_axis=channel_axis,
                precision=str(geometry.dtype), spatial_ndim=geometry.spatial_ndim)
    # As in memory: the cheapest method for the largest chunk, unless a chunk's window holds NaN or
    # infinity and that method would spread it beyond its footprint.  The choice depends on the
    # samples only, never on the worker.
    largest = [max(blocks, key=lambda ax: ax.length) for blocks in per_axis]
    sample = dict(args, padding=tuple(largest[a].pad for a in spatial))
    shape = tuple(ax.length for ax in largest)
    plan = make_plan(shape, kernel, **dict(sample, method=method), x_dtype=x.dtype)
    if method == "auto" and plan.choice.spreads_non_finite:
        args["method_non_finite"] = make_plan(shape, kernel, **dict(sample, method=method), x_dtype=x.dtype,
                                              finite=False).method
    args["method"] = plan.method
    constant = mode == "constant"

    origin = tokenize(x) if stored else x.name
    name = "convcli-correlate-" + tokenize(origin, kernel, args, plans, out_chunks, geometry.border_value)
    dsk = {}
    for index in itertools.product(*(range(len(c)) for c in out_chunks)):
        axes = [per_axis[a][i] for a, i in enumerate(index)]
        window = ([ax.local for ax in axes], [ax.outside for ax in axes] if constant else None,
                  geometry.border_value, tuple(ax.length for ax in axes))
        pads = tuple(axes[a].pad for a in spatial)
        here = args if not any(b or e for b, e in pads) else dict(args, padding=pads)
        if stored:
            dsk[(name,) + index] = (_read_block, x, _runs(axes, bounds), *window, kernel, here)
        else:
            dsk[(name,) + index] = (_compute_block, _slivers(x.name, axes), *window, kernel, here)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[] if stored else [x])
    return da.Array(graph, name, chunks=out_chunks, dtype=geometry.dtype, meta=np.empty((0,) * ndim, geometry.dtype))


def _spatial_axes(plan, ndim: int) -> list[int]:
    rest = [i for i in range(ndim) if i != plan.channel_axis]
    return rest[len(rest) - plan.spatial_ndim:]


def axis_plans(plan, ndim: int) -> list[AxisPlan]:
    """An :class:`AxisPlan` for every axis of the input: the plan's own on spatial axes, whole ones elsewhere."""
    rest = [i for i in range(ndim) if i != plan.channel_axis]
    spatial = rest[len(rest) - plan.spatial_ndim:]
    whole = [AxisPlan.whole(n) for n in plan.output_shape]
    for i, p in zip(spatial, plan.axes):
        whole[i] = p
    return whole


def _output_chunks(plan: AxisPlan, chunks: tuple[int, ...]) -> tuple[int, ...]:
    size = max(1, -(-max(chunks) // plan.stride))
    full, rest = divmod(plan.out, size)
    return (size,) * full + ((rest,) if rest else ())


def _edges(chunks):
    start = 0
    for c in chunks:
        yield start, start + c
        start += c


def _source_index(plan: AxisPlan, n: int, numpy_mode: str) -> np.ndarray:
    """For each sample of the padded axis, the input sample it is (or -1: the constant)."""
    index = np.arange(n, dtype=np.int64)
    if plan.before == 0 and plan.after == 0:
        return index
    if numpy_mode == "constant":
        return np.pad(index, (plan.before, plan.after), mode="constant", constant_values=-1)
    return np.pad(index, (plan.before, plan.after), mode=numpy_mode)


class _BlockAxis:
    """One axis of one output chunk: the input chunks it reads and where its window's samples lie in them."""

    __slots__ = ("parts", "local", "outside", "length", "pad")

    def __init__(self, parts, local, outside, length, pad=(0, 0)):
        self.pad = pad  # samples the engine pads before and after by the border rule itself
        self.length = length  # samples of the window on this axis
        self.parts = parts  # [(input chunk number, slice within the chunk)]
        self.local = local  # slice or index array into the concatenated parts
        self.outside = outside  # positions of the window that are the constant (or None)


def _block_axis(source: np.ndarray, bounds: np.ndarray, plan: AxisPlan, n: int, mode: str, o0: int,
                o1: int) -> _BlockAxis:
    start, stop = o0 * plan.stride - plan.before, (o1 - 1) * plan.stride + plan.span - plan.before
    lo, hi = max(start, 0), min(stop, n)
    pad = (max(0, -start), max(0, stop - n))
    if pad != (0, 0) and _engine_pads_alike(mode, pad, lo, hi, n):
        # The engine extends this window by the border rule as it would the whole axis:
        # OpenCV then pads it itself, and no gathered copy is made.
        block = _block_axis(np.arange(n, dtype=np.int64), bounds, AxisPlan.whole(n), n, mode, lo, hi)
        block.pad = pad
        return block
    wanted = source[o0 * plan.stride:(o1 - 1) * plan.stride + plan.span]
    inside = wanted >= 0
    outside = None if inside.all() else np.flatnonzero(~inside)
    values = wanted[inside]
    parts, offsets = [], {}
    position = 0
    if values.size:
        chunk_of = np.searchsorted(bounds, values, side="right") - 1
        for k in np.unique(chunk_of):
            mine = values[chunk_of == k]
            lo, hi = int(mine.min()), int(mine.max()) + 1
            parts.append((int(k), slice(lo - int(bounds[k]), hi - int(bounds[k]))))
            offsets[int(k)] = position - lo
            position += hi - lo
        local = np.empty(wanted.shape, np.int64)
        local[~inside] = 0
        shift = np.array([offsets[int(k)] for k in chunk_of])
        local[inside] = values + shift
        if outside is None and np.array_equal(local, np.arange(local[0], local[0] + local.size)):
            local = slice(int(local[0]), int(local[0]) + local.size)
    else:
        local = np.zeros(wanted.shape, np.int64)
    return _BlockAxis(parts, local, outside, wanted.size)


def _engine_pads_alike(mode: str, pad, lo: int, hi: int, n: int) -> bool:
    """Whether padding the window [lo, hi) by the border rule gives what the whole axis gives there."""
    inside = hi - lo
    if inside <= 0:
        return False
    if lo == 0 and hi == n or mode in ("edge", "constant"):
        return True
    if mode == "reflect":
        return max(pad) <= inside - 1
    if mode == "symmetric":
        return max(pad) <= inside
    return False  # circular reads the far end


def _slivers(name: str, axes: list[_BlockAxis]):
    """The nested list (one level per axis) of tasks that cut the slivers out of the input chunks."""
    if any(not ax.parts for ax in axes):
        return None  # the window lies wholly in the constant border

    def nest(level: int, chunk: tuple, cut: tuple):
        if level == len(axes):
            return (operator.getitem, (name,) + chunk, cut)
        return [nest(level + 1, chunk + (k,), cut + (s,)) for k, s in axes[level].parts]

    return nest(0, (), ())


def _runs(axes: list[_BlockAxis], bounds) -> list[list[slice]] | None:
    """Per axis, the stretches of the input a window reads: its parts, neighbours merged into one read."""
    if any(not ax.parts for ax in axes):
        return None
    runs = []
    for ax, edges in zip(axes, bounds):
        merged = []
        for k, cut in ax.parts:
            start, stop = int(edges[k]) + cut.start, int(edges[k]) + cut.stop
            if merged and merged[-1].stop == start:
                merged[-1] = slice(merged[-1].start, stop)
            else:
                merged.append(slice(start, stop))
        runs.append(merged)
    return runs


def _read_block(source, runs, local, outside, value, shape, kernel, args):
    if runs is None:
        pieces = None
    else:
        pieces = [np.asarray(source[cut]) for cut in itertools.product(*runs)]
        pieces = _nest(pieces, [len(r) for r in runs])
    return _compute_block(pieces, local, outside, value, shape, kernel, args)


def _nest(flat: list, counts: list[int]):
    """A flat list in row-major order as nested lists (one level per axis) for ``np.block``."""
    if len(counts) == 1:
        return flat
    step = len(flat) // counts[0]
    return [_nest(flat[i * step:(i + 1) * step], counts[1:]) for i in range(counts[0])]


def _compute_block(pieces, local, outside, value, shape, kernel, args):
    from .correlation import _all_finite, correlate

    args = dict(args)
    if pieces is None:
        window = np.full(shape, value, dtype=np.float64)
    else:
        window = np.block(pieces) if isinstance(pieces, list) else pieces
        for axis, index in enumerate(local):
            if not isinstance(index, slice):
                window = np.take(window, index, axis=axis)
            elif index != slice(0, window.shape[axis]):
                window = window[(slice(None),) * axis + (index,)]
        if outside is not None and any(o is not None for o in outside):
            window = window.astype(np.result_type(window.dtype, np.float32), copy=True)
            for axis, where in enumerate(outside):
                if where is not None:
                    window[(slice(None),) * axis + (where,)] = value
    fallback = args.pop("method_non_finite", None)
    if fallback is not None and not _all_finite(window):
        args["method"] = fallback
    with one_thread():
        return correlate(window, kernel, **args)
