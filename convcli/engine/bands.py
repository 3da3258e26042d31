"""Work in bands: pad, compute and write a slab of output rows at a time, on every core.

A full padded copy of a large signal costs as much memory traffic as a cheap
filter itself, and a full-size temporary breaks the memory budget of a 3-D
volume.  So the band strategies never pad the whole input: each band of
output rows (along the first spatial axis) gathers just the input rows it
needs, padded by the border rule, into a scratch block small enough to stay
in cache, computes a *valid* correlation of that block, and writes straight
into its slice of the result.  Bands run on a small thread pool; numpy
releases the GIL inside its loops, so the cores share the work.

Layout: every array here is ``(lanes, *spatial, trail)``.  ``lanes`` gathers
batch axes and a channel axis that comes before the spatial axes (the CNN's
NCHW); ``trail`` is a channel axis after them (an RGB image's HWC, stereo
audio's frames x channels), or 1.  Channels stay where they are: no
transposing copy of the input or the output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from ..parallel import run_all, thread_count
from .borders import BorderMode
from .geometry import AxisPlan

# Bytes of padded input one band may hold: about half of a core's L2 cache
# here (2 MiB), so a band's input, scratch and output stay close to the core.
BAND_BYTES = 1 << 20
# Below this many multiply-adds, a thread hand-off costs more than it saves.
PARALLEL_WORK = 1 << 21


# --------------------------------------------------------------------------- layout
@dataclass(frozen=True)
class Layout:
    """How the user's array maps onto ``(lanes, *spatial, trail)`` and back."""

    x_shape: tuple[int, ...]
    channel_axis: int | None
    trailing: bool  # channels after the spatial axes (kept in place) rather than lanes
    nb: int  # number of batch axes
    nd: int  # number of spatial axes


def split_shape(x_shape, channel_axis, nd: int) -> tuple[int | None, tuple[int, ...], tuple[int, ...], int]:
    """An input's channel axis (non-negative, or None), batch shape, spatial shape and channel count.

    The spatial axes are the last ``nd`` axes that are not the channel axis;
    the axes before them are batch axes.
    """
    x_shape = tuple(int(n) for n in x_shape)
    if channel_axis is not None:
        if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)) \
                or not -len(x_shape) <= channel_axis < len(x_shape):
            raise ParameterError(f"must be an axis of the input (-{len(x_shape)}..{len(x_shape) - 1}), "
                                 f"got {channel_axis!r}", subject="channel_axis")
        channel_axis = int(channel_axis) % len(x_shape)
    rest = [n for i, n in enumerate(x_shape) if i != channel_axis]
    if len(rest) < nd:
        raise ParameterError(f"has shape {x_shape}: fewer than the {nd} spatial axes the window has", subject="x")
    channels = x_shape[channel_axis] if channel_axis is not None else 1
    return channel_axis, tuple(rest[:len(rest) - nd]), tuple(rest[len(rest) - nd:]), channels


def layout_of(x_shape, channel_axis: int | None, nd: int) -> Layout:
    """Decide where the channels live internally; channels after the first spatial axis trail."""
    nb = len(x_shape) - nd - (channel_axis is not None)
    trailing = channel_axis is not None and channel_axis > nb
    return Layout(tuple(x_shape), channel_axis, trailing, nb, nd)


def to_internal(x: np.ndarray, layout: Layout) -> np.ndarray:
    """A view (a copy only when axes must be merged) of ``x`` as ``(lanes, *spatial, trail)``."""
    nd = layout.nd
    if layout.channel_axis is None:
        return x.reshape((-1,) + x.shape[x.ndim - nd:] + (1,))
    if layout.trailing:
        moved = np.moveaxis(x, layout.channel_axis, -1)
        return moved.reshape((-1,) + moved.shape[moved.ndim - nd - 1:])
    moved = np.moveaxis(x, layout.channel_axis, layout.nb)
    return moved.reshape((-1,) + moved.shape[moved.ndim - nd:] + (1,))


def from_internal(out: np.ndarray, layout: Layout, batch_shape, channels: int) -> np.ndarray:
    """Give ``(lanes, *out_spatial, trail)`` the user's layout back."""
    spatial = out.shape[1:1 + layout.nd]
    if layout.channel_axis is None:
        return out.reshape(tuple(batch_shape) + spatial)
    if layout.trailing:
        shaped = out.reshape(tuple(batch_shape) + spatial + (channels,))
        return np.moveaxis(shaped, -1, layout.channel_axis)
    shaped = out.reshape(tuple(batch_shape) + (channels,) + spatial)
    return np.moveaxis(shaped, layout.nb, layout.channel_axis)


def tap_weights(kernel: np.ndarray, layout: Layout, lanes: int) -> np.ndarray:
    """The kernel ``(1 or C, *taps)`` as ``(*taps, L, T)``-broadcastable weights, one entry per tap.

    Returns an array of shape ``taps + (wl, wt)`` where ``wl`` is 1 or the
    number of lanes and ``wt`` 1 or the number of trailing channels, so that
    ``weights[tap][:, None..., :]`` multiplies a ``(lanes, *spatial, trail)``
    view directly.
    """
    taps = kernel.shape[1:]
    c = kernel.shape[0]
    if c == 1:
        return kernel[0].reshape(taps + (1, 1))
    moved = np.moveaxis(kernel, 0, -1)  # (*taps, C)
    if layout.trailing:
        return moved.reshape(taps + (1, c))
    return np.tile(moved, lanes // c).reshape(taps + (lanes, 1))


def broadcast_weight(w: np.ndarray, nd: int):
    """One tap's ``(wl, wt)`` weights as a scalar or an array that broadcasts over ``(L, *spatial, T)``."""
    if w.size == 1:
        return w.reshape(())[()]
    return w.reshape((w.shape[0],) + (1,) * nd + (w.shape[1],))


# --------------------------------------------------------------------------- borders
def source_index(positions: np.ndarray, n: int, mode: BorderMode) -> np.ndarray:
    """Where each position (relative to the first sample; may be negative or >= n) reads from; -1 for a constant.

    The closed forms of numpy.pad's rules, so wide padding repeats the rule
    exactly as numpy.pad does.
    """
    i = np.asarray(positions, dtype=np.intp)
    kind = mode.numpy_mode
    if kind == "constant":
        return np.where((i >= 0) & (i < n), i, -1)
    if kind == "edge":
        return np.clip(i, 0, n - 1)
    if kind == "wrap":
        return np.mod(i, n)
    if kind == "reflect":  # d c b | a b c d | c b a : period 2(n - 1)
        if n == 1:
            return np.zeros_like(i)
        j = np.mod(i, 2 * n - 2)
        return np.where(j < n, j, 2 * n - 2 - j)
    j = np.mod(i, 2 * n)  # symmetric: c b a | a b c d | d c b : period 2n
    return np.where(j < n, j, 2 * n - 1 - j)


def axis_runs(n: int, before: int, lo: int, hi: int, mode: BorderMode) -> list[tuple[int, int, int, int]]:
    """Runs (see :func:`runs`) of padded positions ``lo..hi`` of an axis, relative to ``lo``.

    The inside of the signal is one run whatever its length; only the
    positions in the padding are mapped one by one.
    """
    start, stop = lo - before, hi - before
    pieces = []
    if start < 0:
        head = np.arange(start, min(stop, 0))
        pieces += runs(source_index(head, n, mode))
    mid_lo, mid_hi = max(start, 0), min(stop, n)
    if mid_lo < mid_hi:
        pieces.append((mid_lo - start, mid_hi - start, mid_lo, 1))
    if stop > n:
        tail = np.arange(max(start, n), stop)
        pieces += [(a + tail[0] - start, b + tail[0] - start, src, step)
                   for a, b, src, step in runs(source_index(tail, n, mode))]
    return pieces


def runs(indices: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Split an index vector into ``(start, stop, source, step)`` runs with step 1, -1 or 0.

    A source of -1 marks a constant run.  Reflections become one reversed
    run each, so wide padding costs a handful of copies, not one per sample.
    """
    import bisect

    indices = np.asarray(indices)
    n = indices.size
    if n == 0:
        return []
    inside = indices >= 0
    step = np.diff(indices)
    link = np.where(inside[1:] & inside[:-1] & (np.abs(step) <= 1), step, 9)
    link[~inside[1:] & ~inside[:-1]] = 0
    changes = (np.flatnonzero(np.diff(link) != 0) + 1).tolist()
    out = []
    start = 0
    while start < n:
        if start == n - 1 or link[start] == 9:
            out.append((start, start + 1, int(indices[start]), 0))
            start += 1
            continue
        pos = bisect.bisect_right(changes, start)
        end = changes[pos] if pos < len(changes) else n - 1
        src = int(indices[start])
        out.append((start, end + 1, src, 0 if src < 0 else int(link[start])))
        start = end + 1
    return out


def source_slice(src: int, step: int, count: int) -> slice:
    """The slice of the source axis that a run reads (a single sample broadcast for step 0)."""
    if step == 1:
        return slice(src, src + count)
    if step == -1:
        stop = src - count
        return slice(src, None if stop < 0 else stop, -1)
    return slice(src, src + 1)


def gather_band(x: np.ndarray, lo: int, hi: int, plans, mode: BorderMode, value: float, dtype) -> np.ndarray:
    """The padded block ``(lanes, hi - lo, *padded_rest, trail)`` of padded rows ``lo..hi``.

    Rows are positions along spatial axis 0 of the padded signal; the other
    spatial axes are padded in full.
    """
    p0 = plans[0]
    rest = tuple(p.padded for p in plans[1:])
    shape = (x.shape[0], hi - lo) + rest + (x.shape[-1],)
    block = np.empty(shape, dtype=dtype)
    inner = tuple(slice(p.before, p.before + p.length) for p in plans[1:])
    for a, b, src, step in axis_runs(p0.length, p0.before, lo, hi, mode):
        target = (slice(None), slice(a, b)) + inner
        if src < 0:
            block[target] = value
        else:
            np.copyto(block[target], x[:, source_slice(src, step, b - a)], casting="unsafe")
    for axis in range(1, len(plans)):
        p = plans[axis]
        ax = axis + 1
        for lo_, hi_ in ((0, p.before), (p.before + p.length, p.padded)):
            for a, b, src, step in axis_runs(p.length, p.before, lo_, hi_, mode):
                target = [slice(None)] * block.ndim
                target[ax] = slice(lo_ + a, lo_ + b)
                if src < 0:
                    block[tuple(target)] = value
                    continue
                origin = [slice(None)] * block.ndim
                origin[ax] = source_slice(p.before + src, step, b - a)
                block[tuple(target)] = block[tuple(origin)]
    return block


# --------------------------------------------------------------------------- running bands
def band_rows(plans: tuple[AxisPlan, ...], lanes: int, trail: int, itemsize: int, per_row_factor: float = 1.0,
              *, streamed: bool = False) -> int:
    """Output rows per band so that a band's padded input stays near ``BAND_BYTES``.

    ``streamed`` bands (see ``on_rows`` in :func:`run_bands`) favour memory
    over speed: they accept re-reading as many halo rows as the band has.
    """
    p0 = plans[0]
    row_bytes = lanes * trail * itemsize * math.prod(p.padded for p in plans[1:])
    row_bytes = max(1, int(row_bytes * per_row_factor))
    input_rows = max(1, BAND_BYTES // row_bytes)
    rows = max(1, (input_rows - p0.span) // p0.stride + 1)
    # Every band gathers span - 1 halo rows again: keep that re-reading under
    # a quarter of the band, even when it leaves the cache.
    rows = max(rows, -(-(1 if streamed else 4) * (p0.span - 1) // p0.stride))
    return min(rows, p0.out)


def streamed_band_bytes(plan, trail: int) -> tuple[int, int]:
    """Bytes a streamed run of ``plan`` (see ``on_rows`` in :func:`run_bands`) holds at once, about; and its band rows.

    Every thread holds a band: its padded input rows, mapped and gathered,
    an intermediate as large for a separable pass, and its output rows,
    computed and mapped.  ``trail`` is the number of channels after the
    spatial axes (1 without).
    """
    p0 = plan.axes[0]
    rows = band_rows(plan.axes, 1, trail, plan.dtype.itemsize, streamed=True)
    padded_row = plan.dtype.itemsize * trail * math.prod(p.padded for p in plan.axes[1:])
    in_rows = (rows - 1) * p0.stride + p0.span
    return thread_count() * (3 * in_rows + 2 * rows) * padded_row, rows


def run_bands(x, out, plans, border: BorderMode, value: float, compute, *, work: float, rows_per_band=None,
              pad_rest: bool = True, on_rows=None):
    """Fill ``out`` (``(lanes, *out_spatial, trail)``) band by band.

    ``compute(block, out_band, band_plans)`` gets the padded input block of a
    band and the plans of a valid correlation of it, and writes ``out_band``.
    With ``pad_rest`` false the block is padded along axis 0 only (a view of
    ``x``, no copy, for a band away from the borders) and ``band_plans``
    keep the other axes' padding for ``compute`` to apply.

    With ``on_rows`` the bands run in order, one wave (a band per thread) at
    a time, and after each wave ``on_rows(input_rows, output_rows)`` gets the
    rows of ``x`` before which no later band reads (border reflections at the
    far end aside) and the rows of ``out`` that are final: a caller whose
    arrays are memory-mapped files drops those pages, so the resident memory
    stays a few bands whatever the signal's size.
    """
    p0 = plans[0]
    rows = rows_per_band or band_rows(plans, x.shape[0], x.shape[-1], out.dtype.itemsize, streamed=on_rows is not None)
    starts = list(range(0, p0.out, rows))
    rest = tuple(p.valid() for p in plans[1:])

    def band(start: int) -> None:
        stop = min(start + rows, p0.out)
        first = start * p0.stride
        last = (stop - 1) * p0.stride + p0.span
        if pad_rest:
            block = gather_band(x, first, last, plans, border, value, out.dtype)
        else:
            pieces = axis_runs(p0.length, p0.before, first, last, border)
            if len(pieces) == 1 and pieces[0][3] == 1 and x.dtype == out.dtype:
                block = x[:, pieces[0][2]:pieces[0][2] + last - first]
            else:
                flat = tuple(AxisPlan.whole(p.length) for p in plans[1:])
                block = gather_band(x, first, last, (p0,) + flat, border, value, out.dtype)
        band_plans = (AxisPlan(last - first, p0.taps, p0.stride, p0.dilation, 0, 0, stop - start),)
        band_plans += rest if pad_rest else tuple(plans[1:])
        compute(block, out[:, start:stop], band_plans)

    if on_rows is not None:
        _in_waves(band, starts, rows, thread_count() if work >= PARALLEL_WORK else 1, p0, on_rows)
        return out
    run_all(band, starts, parallel=work >= PARALLEL_WORK)
    return out


def _in_waves(one, starts, rows: int, threads: int, p0: AxisPlan, on_rows) -> None:
    """Run the bands at ``starts`` in order, ``threads`` at a time, reporting finished rows after each wave."""
    for i in range(0, len(starts), threads):
        wave = starts[i:i + threads]
        run_all(one, wave)
        done = min(wave[-1] + rows, p0.out)
        # The next band's first padded row, as a row of the input.
        needed = done * p0.stride - p0.before
        on_rows(max(0, min(needed, p0.length)), done)


def padded_whole(x, plans, border: BorderMode, value: float, dtype) -> np.ndarray:
    """The whole input padded on every spatial axis, in the internal layout."""
    return gather_band(x, 0, plans[0].padded, plans, border, value, dtype)
