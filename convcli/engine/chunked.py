"""Correlation, rank filters, morphology and pooling of a Dask array: lazy, each chunk seeing exactly what it needs.

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

Rank filters, morphology and pooling (:func:`lazy_operator`) take the same
windows and run the operator's in-memory plan on each, with the window's
own padding: their chunks are the in-memory samples exactly.

Dask is imported only here, and only when a Dask array is passed.
"""
from __future__ import annotations

import functools
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
    mode = geometry.border.numpy_mode
    out_chunks, per_axis = _windows(x.shape, plans, grid, mode)
    spatial = [a for a, p in enumerate(plans) if p is not None and a in _spatial_axes(geometry, len(x.shape))]
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
    compute = functools.partial(_correlate_window, kernel, args)
    fill = (np.dtype(np.float32), np.dtype(np.float64))
    token = ("correlate", kernel, args, plans, out_chunks, geometry.border_value)
    return _lazy(x, stored, grid, out_chunks, per_axis, spatial, geometry.border_value, fill, compute, token,
                 geometry.dtype)


def lazy_operator(x, plan, *, read_chunks=None):
    """A rank filter, morphology or pooling (a plan of :mod:`.rank`, :mod:`.morphology` or :mod:`.pooling`), lazily.

    ``plan`` is the operator's plan for the whole of ``x`` (the geometry,
    border and algorithm of the in-memory run); every chunk runs that plan
    on its window with the window's own padding, so a chunk's samples are
    the in-memory ones exactly (a selection, or the same sums divided by the
    same counts).  ``read_chunks`` as in :func:`lazy_correlate`.  A two-step
    morphology (open, close, tophat, blackhat) is two lazy rank filters, the
    second taking its halo from the first's chunks: at the array's true
    edges its border rule then extends the first step's result, as in memory.
    """
    kind = type(plan).__name__
    if kind == "RankPlan":
        return _lazy_rank(x, plan, read_chunks)
    if kind == "PoolPlan":
        return _lazy_pool(x, plan, read_chunks)
    if kind == "MorphologyPlan":
        return _lazy_morphology(x, plan, read_chunks)
    raise TypeError(f"not an operator's plan: {kind}")


def _lazy_rank(x, plan, read_chunks):
    fill = (plan.work_dtype, plan.work_dtype)
    return _lazy_plan(x, plan, read_chunks, plan.border.numpy_mode, plan.border_value, fill,
                      functools.partial(_rank_window, plan), ("rank", plan.footprint, plan.rank, plan.method, plan.algorithm))


def _lazy_pool(x, plan, read_chunks):
    from .pooling import _counts, _lowest

    work = plan.dtype if plan.kind == "avg" or plan.dtype.kind == "f" else np.dtype(x.dtype)
    value = float(_lowest(work)) if plan.kind == "max" else 0.0
    counts = _counts(plan) if plan.kind == "avg" else None
    return _lazy_plan(x, plan, read_chunks, "constant", value, (np.dtype(x.dtype), np.dtype(x.dtype)),
                      functools.partial(_pool_window, plan, counts), ("pool", plan.kind, plan.count_include_pad, plan.padding_each))


def _lazy_morphology(x, plan, read_chunks):
    import dask.array as da

    from .morphology import _difference
    from .rank import execute_rank  # noqa: F401 (the chunks' own import, made once here)

    op = plan.operation
    if op == "gradient":
        return da.map_blocks(_difference, _lazy_rank(x, plan.outer, read_chunks),
                             _lazy_rank(x, plan.grid, read_chunks), plan.dtype, dtype=plan.dtype)
    first = x if plan.inner is None else _lazy_rank(x, plan.inner, read_chunks)
    second = _lazy_rank(first, plan.outer, read_chunks if plan.inner is None else None)
    if op in ("erode", "dilate", "open", "close"):
        return second if second.dtype == plan.dtype else second.astype(plan.dtype)
    centre = _lazy_rank(x, _centre_plan(plan.grid), read_chunks)
    pair = (centre, second) if op == "tophat" else (second, centre)
    return da.map_blocks(_difference, *pair, plan.dtype, dtype=plan.dtype)


def _centre_plan(plan):
    """The rank plan that takes each window's centre tap: ``x`` on the plan's output grid (as centre_samples)."""
    from dataclasses import replace

    centre = np.zeros(plan.footprint.shape, dtype=bool)
    centre[tuple((k - 1) // 2 for k in plan.footprint.shape)] = True
    return replace(plan, footprint=centre, rank=0, method="direct", algorithm="extrema")


def _lazy_plan(x, plan, read_chunks, mode, value, fill, compute, token):
    stored = read_chunks is not None
    grid = list(read_chunks if stored else x.chunks)
    ndim = len(x.shape)
    plans = axis_plans(plan, ndim)
    out_chunks, per_axis = _windows(x.shape, plans, grid, mode)
    spatial = _spatial_axes(plan, ndim)
    return _lazy(x, stored, grid, out_chunks, per_axis, spatial, value, fill, compute,
                 token + (plans, out_chunks, mode, value), plan.dtype)


def _windows(shape, plans, grid, mode):
    """Output chunks (the input's divided by the stride) and, per axis and output chunk, the window it reads."""
    out_chunks = tuple(_output_chunks(p, c) for p, c in zip(plans, grid))
    sources = [_source_index(p, n, mode) for p, n in zip(plans, shape)]
    bounds = [np.cumsum((0,) + tuple(c)) for c in grid]
    per_axis = [[_block_axis(sources[a], bounds[a], plans[a], shape[a], mode, o0, o1)
                 for o0, o1 in _edges(out_chunks[a])] for a in range(len(shape))]
    return out_chunks, per_axis


def _lazy(x, stored, grid, out_chunks, per_axis, spatial, value, fill, compute, token, dtype):
    """The Dask array whose every chunk is ``compute`` on the window its ``per_axis`` entries describe."""
    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    ndim = len(x.shape)
    bounds = [np.cumsum((0,) + tuple(c)) for c in grid]
    constant = any(ax.outside is not None for blocks in per_axis for ax in blocks)
    origin = tokenize(x) if stored else x.name
    name = f"convcli-{token[0]}-" + tokenize(origin, token)
    starts = [np.cumsum((0,) + tuple(c)) for c in out_chunks]
    dsk = {}
    for index in itertools.product(*(range(len(c)) for c in out_chunks)):
        axes = [per_axis[a][i] for a, i in enumerate(index)]
        outs = tuple((int(starts[a][index[a]]), int(starts[a][index[a] + 1])) for a in spatial)
        window = ([ax.local for ax in axes], [ax.outside for ax in axes] if constant else None, value,
                  tuple(ax.length for ax in axes), fill)
        pads = tuple(axes[a].pad for a in spatial)
        if stored:
            dsk[(name,) + index] = (_read_block, x, _runs(axes, bounds), *window, compute, pads, outs)
        else:
            dsk[(name,) + index] = (_compute_block, _slivers(x.name, axes), *window, compute, pads, outs)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[] if stored else [x])
    return da.Array(graph, name, chunks=out_chunks, dtype=dtype, meta=np.empty((0,) * ndim, dtype))


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


def _read_block(source, runs, local, outside, value, shape, fill, compute, pads, outs):
    if runs is None:
        pieces = None
    else:
        pieces = [np.asarray(source[cut]) for cut in itertools.product(*runs)]
        pieces = _nest(pieces, [len(r) for r in runs])
    return _compute_block(pieces, local, outside, value, shape, fill, compute, pads, outs)


def _nest(flat: list, counts: list[int]):
    """A flat list in row-major order as nested lists (one level per axis) for ``np.block``."""
    if len(counts) == 1:
        return flat
    step = len(flat) // counts[0]
    return [_nest(flat[i * step:(i + 1) * step], counts[1:]) for i in range(counts[0])]


def _compute_block(pieces, local, outside, value, shape, fill, compute, pads, outs):
    """The window of one output chunk, gathered and extended where the engine does not pad it, then computed.

    ``fill`` is the type of a window extended by a constant (from the
    input's and the first type) and of a window wholly in the constant (the
    second); ``compute`` is called with the window, the padding the engine
    adds on each spatial axis and the output chunk's range on each spatial
    axis.
    """
    if pieces is None:
        window = np.full(shape, value, dtype=fill[1])
    else:
        window = np.block(pieces) if isinstance(pieces, list) else pieces
        for axis, index in enumerate(local):
            if not isinstance(index, slice):
                window = np.take(window, index, axis=axis)
            elif index != slice(0, window.shape[axis]):
                window = window[(slice(None),) * axis + (index,)]
        if outside is not None and any(o is not None for o in outside):
            window = window.astype(np.result_type(window.dtype, fill[0]), copy=True)
            for axis, where in enumerate(outside):
                if where is not None:
                    window[(slice(None),) * axis + (where,)] = value
    with one_thread():
        return compute(window, pads, outs)


def _correlate_window(kernel, args, window, pads, outs):
    from .correlation import _all_finite, correlate

    args = dict(args)
    if any(b or e for b, e in pads):
        args["padding"] = pads
    fallback = args.pop("method_non_finite", None)
    if fallback is not None and not _all_finite(window):
        args["method"] = fallback
    return correlate(window, kernel, **args)


def _chunk_plan(plan, shape, pads, outs):
    """``plan`` (an operator's, for the whole array) for one chunk's window: its own padding and outputs."""
    from dataclasses import replace

    from .bands import split_shape

    _, batch, spatial, channels = split_shape(shape, plan.channel_axis, plan.spatial_ndim)
    axes = tuple(replace(p, length=n, before=b, after=a, out=o1 - o0)
                 for p, n, (b, a), (o0, o1) in zip(plan.axes, spatial, pads, outs))
    return replace(plan, batch_shape=batch, channels=channels, axes=axes)


def _rank_window(plan, window, pads, outs):
    from .rank import execute_rank

    return execute_rank(_chunk_plan(plan, window.shape, pads, outs), window)


def _pool_window(plan, counts, window, pads, outs):
    from .pooling import execute_pool

    if counts is not None:  # a mean divides by the counts of its place in the whole array
        constant, varying = counts
        counts = (constant, [(axis, c[outs[axis][0]:outs[axis][1]]) for axis, c in varying])
    return execute_pool(_chunk_plan(plan, window.shape, pads, outs), window, counts=counts)
