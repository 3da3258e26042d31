"""Order statistics of the samples under a footprint, in numpy, one padded block at a time.

Each tap of the footprint is a strided view of the block (no window is
copied out, except by the partial sort), and three algorithms cover every
footprint and rank:

- a **selection network**: compare-exchange steps (``np.minimum`` and
  ``np.maximum`` of whole views) that bring the r-th smallest of n values
  to one wire.  It is Batcher's odd-even merge sort of n wires, pruned of
  every step that cannot reach wire r (and of the half of a step whose
  output is not needed): 24 steps for the median of 9, 126 for the median
  of 27.  Its cost grows as n log^2 n;
- **running extrema** (rank 0 or n - 1): along one axis, the extreme of L
  samples by doubling (pairs, then fours, ..., then one overlapping step),
  about log2(L) whole-array operations per sample whatever L, or straight
  through the L strided taps when the stride skips most positions (pooling).
  A box is one such pass per axis; any other footprint is cut into runs
  along its last axis, and each run length's running extreme is computed
  once;
- a **partial sort** (``np.partition``) of the gathered window values,
  O(n) per output sample: for windows too large for a network.

NaN is not handled here (:mod:`.rank` takes NaN out before and puts it
back after); ``np.minimum`` and ``np.maximum`` would spread it unevenly.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .geometry import AxisPlan

# Output samples a chunk of work holds per wire: wires of 64K float32 samples (256 KB) measured
# fastest for the median of 27 on a 256^3 volume (0.45 s against 1.7 s for 8K-sample wires): fewer
# numpy calls, while the data still streams from the outer caches.
CHUNK = 1 << 16
# Values a partial sort gathers at once (16 MB of float32).
PARTITION_VALUES = 1 << 22


# --------------------------------------------------------------------------- networks
def batcher_sort(n: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort of ``n`` wires: compare-exchange pairs ``(i, j)``, ``i < j``, in order.

    Built for the next power of two and cut to ``n`` wires: the missing
    wires would hold +infinity, which no step moves, so their steps go.

    >>> batcher_sort(3)
    ((0, 1), (0, 2), (1, 2))
    """
    size = 1
    while size < n:
        size *= 2
    steps = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        steps.append((a, b))
            k //= 2
        p *= 2
    return tuple(steps)


@lru_cache(maxsize=256)
def network(n: int, rank: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """The steps ``(i, j, low, high)`` that bring the ``rank``-th smallest of ``n`` values to wire ``rank``.

    ``low`` and ``high`` say whether the step's minimum (to wire i) and
    maximum (to wire j) are needed later; a step needing neither is gone.

    >>> len(network(9, 4)), len(network(27, 13))
    (24, 126)
    """
    needed = {rank}
    kept = []
    for a, b in reversed(batcher_sort(n)):
        low, high = a in needed, b in needed
        if low or high:
            kept.append((a, b, low, high))
            needed.update((a, b))
    return tuple(reversed(kept))


def network_operations(n: int, rank: int) -> int:
    """Whole-array minima and maxima the network for ``rank`` of ``n`` takes per output sample."""
    return sum(low + high for _, _, low, high in network(n, rank))


def run_network(wires: list, rank: int, out: np.ndarray) -> None:
    """Write the ``rank``-th smallest of the ``wires`` (arrays or views of one shape) into ``out``.

    A wire's first result gets a buffer of its own, reused by its later
    results; a step's minimum goes to a spare buffer and the wire's old
    buffer becomes the spare, so a network of n wires holds n + 1 buffers.
    """
    wires = list(wires)
    owned: list = [None] * len(wires)
    spare = None

    def fresh(buffer):
        return buffer if buffer is not None else np.empty(out.shape, dtype=out.dtype)

    for a, b, low, high in network(len(wires), rank):
        first, second = wires[a], wires[b]
        if low and high:
            lo = fresh(spare)
            np.minimum(first, second, out=lo)
            hi = fresh(owned[b])
            np.maximum(first, second, out=hi)
            spare, owned[a], owned[b] = owned[a], lo, hi
            wires[a], wires[b] = lo, hi
        elif low:
            owned[a] = wires[a] = np.minimum(first, second, out=fresh(owned[a]))
        else:
            owned[b] = wires[b] = np.maximum(first, second, out=fresh(owned[b]))
    np.copyto(out, wires[rank], casting="unsafe")


def partial_sort(wires: list, rank: int, out: np.ndarray) -> None:
    """Write the ``rank``-th smallest of the ``wires`` into ``out`` by a partial sort of their gathered values."""
    values = np.stack(wires, axis=-1)
    np.copyto(out, np.partition(values, rank, axis=-1)[..., rank], casting="unsafe")


# --------------------------------------------------------------------------- running extrema
def pairwise(op, a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``op(a, b, out=out)`` for ``(..., n, channels)`` views, a channel at a time when that is faster.

    A view strided along ``n`` (every s-th sample, a pooling step) with a few
    channels after it leaves numpy an inner loop as short as the channel
    count; one call per channel walks ``n`` instead: 2.4x faster for the
    2x2 max pool of an RGB image.
    """
    channels = a.shape[-1] if a.ndim >= 2 else 1
    if not 1 < channels <= 8 or all(_merged(v) for v in (a, b) + (() if out is None else (out,))):
        return op(a, b, out=out)
    if out is None:
        out = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=np.result_type(a, b))
    for c in range(channels):
        op(a[..., c], b[..., c], out=out[..., c])
    return out


def _merged(v: np.ndarray) -> bool:
    """Whether numpy sees the last two axes as one (samples and their channels laid end to end)."""
    return v.shape[-2] == 1 or v.strides[-2] == v.shape[-1] * v.strides[-1]


def take(x: np.ndarray, axis: int, start: int, count: int, step: int = 1) -> np.ndarray:
    """``count`` samples of ``x`` along ``axis`` from ``start``, ``step`` apart (a view)."""
    index = [slice(None)] * x.ndim
    index[axis] = slice(start, start + (count - 1) * step + 1, step)
    return x[tuple(index)]


def running(x: np.ndarray, axis: int, taps: int, spacing: int, stride: int, count: int, op, out=None) -> np.ndarray:
    """The extreme (``op``: np.minimum or np.maximum) of ``taps`` samples ``spacing`` apart along ``axis``,
    at ``count`` positions ``stride`` apart (into ``out`` when given).

    ``x`` holds at least ``(count - 1) * stride + (taps - 1) * spacing + 1``
    samples along ``axis``.  Doubling costs about log2(taps) operations on
    every position, the strided taps ``taps - 1`` on the kept positions
    only: the cheaper is taken.
    """
    if taps == 1:
        result = take(x, axis, 0, count, stride)
        return result if out is None else _copied(out, result)
    doubling = (taps - 1).bit_length() * ((count - 1) * stride + 1)
    if (taps - 1) * count <= doubling:
        result = pairwise(op, take(x, axis, 0, count, stride), take(x, axis, spacing, count, stride), out=out)
        for j in range(2, taps):
            pairwise(op, result, take(x, axis, j * spacing, count, stride), out=result)
        return result
    need = (count - 1) * stride + 1
    current, have = x, 1
    while have < taps:
        # Windows of ``have`` taps at i and i + reach: ``have + reach`` taps (overlapping at the last step).
        reach = min(have, taps - have)
        length = need + (taps - have - reach) * spacing
        current = pairwise(op, take(current, axis, 0, length), take(current, axis, reach * spacing, length))
        have += reach
    result = take(current, axis, 0, count, stride)
    return result if out is None else _copied(out, result)


def _copied(out: np.ndarray, values: np.ndarray) -> np.ndarray:
    np.copyto(out, values, casting="unsafe")
    return out


def box_extreme(block: np.ndarray, plans: tuple[AxisPlan, ...], op, out: np.ndarray) -> None:
    """The extreme over a full box, one running pass per spatial axis: ``out`` from the padded ``block``.

    ``block`` is ``(lanes, *padded, trail)`` and ``plans`` are valid plans of it.
    """
    current = block
    last = len(plans) - 1
    for axis, p in enumerate(plans):
        into = out if axis == last and out.dtype == block.dtype else None
        current = running(current, axis + 1, p.taps, p.dilation, p.stride, p.out, op, out=into)
    if current is not out:
        np.copyto(out, current, casting="unsafe")


def row_runs(footprint: np.ndarray) -> list[tuple[tuple[int, ...], int, int]]:
    """The footprint as runs along its last axis: ``(leading index, start, length)`` for every run of taps.

    >>> row_runs(np.array([[0, 1, 0], [1, 1, 1]], dtype=bool))
    [((0,), 1, 1), ((1,), 0, 3)]
    """
    runs = []
    for lead in np.ndindex(footprint.shape[:-1]):
        row = np.concatenate(([False], footprint[lead], [False]))
        edges = np.flatnonzero(row[1:] != row[:-1])
        runs += [(lead, int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2])]
    return runs


def footprint_extreme(block: np.ndarray, plans: tuple[AxisPlan, ...], footprint: np.ndarray, op,
                      out: np.ndarray) -> None:
    """The extreme over any footprint: runs along the last axis, their running extremes shared by length."""
    last = plans[-1]
    axis = block.ndim - 2
    by_length = {}
    first = True
    for lead, start, length in row_runs(footprint):
        if length not in by_length:
            positions = (last.out - 1) * last.stride + 1 + (last.taps - length) * last.dilation
            by_length[length] = running(block, axis, length, last.dilation, 1, positions, op)
        index = [slice(None)]
        for p, t in zip(plans[:-1], lead):
            index.append(slice(t * p.dilation, t * p.dilation + (p.out - 1) * p.stride + 1, p.stride))
        index.append(slice(start * last.dilation, start * last.dilation + (last.out - 1) * last.stride + 1,
                           last.stride))
        view = by_length[length][tuple(index)]
        if first:
            np.copyto(out, view, casting="unsafe")
            first = False
        else:
            op(out, view, out=out)


# --------------------------------------------------------------------------- taps and chunks
def tap_views(block: np.ndarray, plans: tuple[AxisPlan, ...], footprint: np.ndarray) -> list[np.ndarray]:
    """One strided view of ``block`` per tap of the footprint: the samples that tap meets at every output."""
    views = []
    for offset in np.argwhere(footprint):
        index = [slice(None)]
        for p, o in zip(plans, offset):
            start = int(o) * p.dilation
            index.append(slice(start, start + (p.out - 1) * p.stride + 1, p.stride))
        index.append(slice(None))
        views.append(block[tuple(index)])
    return views


def chunks(block: np.ndarray, out: np.ndarray, plans: tuple[AxisPlan, ...], per_chunk: int):
    """Cut a band into pieces of about ``per_chunk`` output samples along lanes and the first spatial axis.

    Yields ``(block piece, out piece, plans of the piece)``.
    """
    p0 = plans[0]
    lanes = out.shape[0]
    row = int(np.prod(out.shape[2:], dtype=np.int64))
    lane_groups = [slice(0, lanes)] if lanes * row <= per_chunk else [slice(i, i + 1) for i in range(lanes)]
    per_row = row * (lanes if len(lane_groups) == 1 else 1)
    rows = max(1, per_chunk // max(1, per_row))
    for lanes_ in lane_groups:
        for r0 in range(0, p0.out, rows):
            r1 = min(p0.out, r0 + rows)
            first = r0 * p0.stride
            last = (r1 - 1) * p0.stride + p0.span
            piece = (AxisPlan(last - first, p0.taps, p0.stride, p0.dilation, 0, 0, r1 - r0),) + tuple(plans[1:])
            yield block[lanes_, first:last], out[lanes_, r0:r1], piece
