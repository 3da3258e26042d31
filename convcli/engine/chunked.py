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

The method is chosen once, on the largest chunk, and every chunk runs it on
one thread: a chunk's samples do not depend on which worker computed it,
nor on how many cores that worker has.

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
                   channel_axis=None, method="auto", precision=None, spatial_ndim=None, chunk_outputs=None):
    """Correlate (or, with ``flip``, convolve) a Dask array lazily; see :func:`convcli.correlate`.

    ``chunk_outputs`` gives the output chunk length per axis (by default each
    input chunk length divided by the axis' stride).
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
    if geometry.per_channel and len(x.chunks[geometry.channel_axis]) > 1:
        x = x.rechunk({geometry.channel_axis: -1})  # each chunk needs all its channels' weights
    plans = axis_plans(geometry, x.ndim)
    out_chunks = tuple(_output_chunks(p, c, None if chunk_outputs is None else chunk_outputs[i])
                       for i, (p, c) in enumerate(zip(plans, x.chunks)))
    block = tuple(max(c) for c in out_chunks)
    block_in = tuple((b - 1) * p.stride + p.span for b, p in zip(block, plans))
    args = dict(stride=stride, padding="valid", pad_mode=pad_mode, dilation=dilation, channel_axis=channel_axis,
                precision=str(geometry.dtype), spatial_ndim=geometry.spatial_ndim)
    # finite=False: a chunk cannot afford a scan for NaN, so only methods that keep it local are weighed.
    chosen = make_plan(block_in, kernel, method=method, x_dtype=x.dtype, finite=False, **args).method
    args["method"] = chosen
    constant = geometry.border.numpy_mode == "constant"
    sources = [_source_index(p, n, geometry.border.numpy_mode) for p, n in zip(plans, x.shape)]
    bounds = [np.cumsum((0,) + c) for c in x.chunks]

    name = "convcli-correlate-" + tokenize(x.name, kernel, args, plans, out_chunks, geometry.border_value)
    dsk = {}
    per_axis = [[_block_axis(sources[a], bounds[a], plans[a], o0, o1) for o0, o1 in _edges(out_chunks[a])]
                for a in range(x.ndim)]
    for index in itertools.product(*(range(len(c)) for c in out_chunks)):
        axes = [per_axis[a][i] for a, i in enumerate(index)]
        pieces = _slivers(x.name, axes)
        dsk[(name,) + index] = (_compute_block, pieces, [ax.local for ax in axes],
                                [ax.outside for ax in axes] if constant else None, geometry.border_value,
                                tuple(ax.length for ax in axes), kernel, args)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[x])
    return da.Array(graph, name, chunks=out_chunks, dtype=geometry.dtype, meta=np.empty((0,) * x.ndim, geometry.dtype))


def axis_plans(plan, ndim: int) -> list[AxisPlan]:
    """An :class:`AxisPlan` for every axis of the input: the plan's own on spatial axes, whole ones elsewhere."""
    rest = [i for i in range(ndim) if i != plan.channel_axis]
    spatial = rest[len(rest) - plan.spatial_ndim:]
    whole = [AxisPlan.whole(n) for n in plan.output_shape]
    for i, p in zip(spatial, plan.axes):
        whole[i] = p
    return whole


def _output_chunks(plan: AxisPlan, chunks: tuple[int, ...], size: int | None) -> tuple[int, ...]:
    if size is None:
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

    __slots__ = ("parts", "local", "outside", "length")

    def __init__(self, parts, local, outside, length):
        self.length = length  # samples of the window on this axis
        self.parts = parts  # [(input chunk number, slice within the chunk)]
        self.local = local  # slice or index array into the concatenated parts
        self.outside = outside  # positions of the window that are the constant (or None)


def _block_axis(source: np.ndarray, bounds: np.ndarray, plan: AxisPlan, o0: int, o1: int) -> _BlockAxis:
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


def _slivers(name: str, axes: list[_BlockAxis]):
    """The nested list (one level per axis) of tasks that cut the slivers out of the input chunks."""
    if any(not ax.parts for ax in axes):
        return None  # the window lies wholly in the constant border

    def nest(level: int, chunk: tuple, cut: tuple):
        if level == len(axes):
            return (operator.getitem, (name,) + chunk, cut)
        return [nest(level + 1, chunk + (k,), cut + (s,)) for k, s in axes[level].parts]

    return nest(0, (), ())


def _compute_block(pieces, local, outside, value, shape, kernel, args):
    from .correlation import correlate

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
    with one_thread():
        return correlate(window, kernel, **args)
