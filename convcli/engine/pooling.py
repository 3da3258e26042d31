"""Pooling: the maximum or the mean over a window, by PyTorch's ``max_pool*d`` and ``avg_pool*d`` rules exactly.

A pooling window is a box of ``window`` samples per axis, ``dilation``
apart (max only), moved ``stride`` samples (the window, by default), over
the input padded by ``padding`` samples at each end: -infinity for the
maximum (the padding never wins), zeros for the mean.  Output length, as
PyTorch's ``pooling_output_shape``::

    out = floor_or_ceil((n + 2p - d(k - 1) - 1) / s) + 1
    # ceil_mode: the last window must start inside the input or its left padding
    if ceil_mode and (out - 1) s >= n + p: out -= 1

The windows ``ceil_mode`` adds run past the padding; the samples there
count for nothing.  The mean divides by the window's samples inside the
input and its padding (``count_include_pad=True``, PyTorch's default) or
inside the input only.  PyTorch's limits hold too: ``padding`` at most
half the window (``k // 2``) and at least one output sample.

The maximum keeps the input's type (and NaN, as PyTorch does: a window
holding NaN gives NaN); the mean is float32, or float64 for float64 input.
Both run in bands on every core, one pass per axis over strided views; with
no padding the bands are views of the input, not copies.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from . import bands, selection
from .borders import parse_pad_mode
from .geometry import AxisPlan, output_shape, per_axis

KINDS = ("max", "avg")
_CONSTANT = parse_pad_mode("zeros")[0]


@dataclass(frozen=True)
class PoolPlan:
    """A pooling decided: layout, the window's geometry per axis (padding as PyTorch's), the result's type."""

    kind: str  # max | avg
    spatial_ndim: int
    channel_axis: int | None
    batch_shape: tuple[int, ...]
    channels: int
    axes: tuple[AxisPlan, ...]  # ``after`` includes what ceil_mode adds past the padding
    padding_each: tuple[int, ...]  # PyTorch's padding per axis (before, and after for the divisor)
    count_include_pad: bool
    dtype: np.dtype

    @property
    def output_shape(self) -> tuple[int, ...]:
        return output_shape(self.batch_shape, self.axes, self.channel_axis, self.channels)

    @property
    def method(self) -> str:
        return "direct"

    def padding(self) -> tuple[tuple[int, int], ...]:
        return tuple((p.before, p.after) for p in self.axes)

    def reason(self) -> str:
        window = "x".join(str(p.taps) for p in self.axes)
        stride = ",".join(str(p.stride) for p in self.axes)
        what = "maximum (padding -inf)" if self.kind == "max" else (
            "mean (padding counted)" if self.count_include_pad else "mean (padding not counted)")
        return f"direct: {what} over {window} windows at stride {stride}, PyTorch's pooling, one pass per axis"


def pool_axes(spatial_shape, window, *, stride=None, padding=0, dilation=1, ceil_mode=False) -> tuple[AxisPlan, ...]:
    """Per-axis plans of a pooling window, PyTorch's output lengths and limits included."""
    nd = len(spatial_shape)
    windows = per_axis(window, nd, "window", minimum=1)
    strides = windows if stride is None else per_axis(stride, nd, "stride", minimum=1)
    pads = per_axis(padding, nd, "padding", minimum=0)
    dilations = per_axis(dilation, nd, "dilation", minimum=1)
    plans = []
    for axis, (n, k, s, p, d) in enumerate(zip(spatial_shape, windows, strides, pads, dilations)):
        if p > k // 2:
            raise ParameterError(f"{p} on axis {axis} is more than half the pooling window {k} "
                                 "(PyTorch's limit)", subject="padding")
        span = d * (k - 1) + 1
        reach = n + 2 * p - span + (s - 1 if ceil_mode else 0)
        out = reach // s + 1
        if ceil_mode and (out - 1) * s >= n + p:
            out -= 1
        if reach < 0 or out < 1:
            raise ParameterError(f"gives no output samples on axis {axis}: input length {n}, window span {span}, "
                                 f"padding {p}", subject="padding")
        after = max(p, (out - 1) * s + span - n - p)
        plans.append(AxisPlan(n, k, s, d, p, after, out))
    return tuple(plans)


def plan_pool(x_shape, kind: str, window, *, stride=None, padding=0, dilation=1, ceil_mode=False,
              count_include_pad=True, channel_axis=None, precision=None, spatial_ndim=None,
              x_dtype=np.float32) -> PoolPlan:
    """Decide layout and geometry of a pooling of an array of ``x_shape``, computing nothing.

    The spatial axes are the last ``spatial_ndim`` axes (the window's length,
    when it is a sequence; else every axis) that are not ``channel_axis``.
    """
    if kind not in KINDS:
        raise ParameterError(f"must be one of {', '.join(KINDS)}, got {kind!r}", subject="kind")
    nd = spatial_ndim or (len(window) if isinstance(window, (list, tuple)) else
                          len(x_shape) - (channel_axis is not None))
    axis, batch_shape, spatial_shape, channels = bands.split_shape(x_shape, channel_axis, nd)
    if kind == "avg" and any(d != 1 for d in per_axis(dilation, nd, "dilation", minimum=1)):
        raise ParameterError("applies to the maximum only: PyTorch's avg_pool has no dilation", subject="dilation")
    axes = pool_axes(spatial_shape, window, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    x_dtype = np.dtype(x_dtype)
    if x_dtype.kind not in "biuf":
        raise ParameterError(f"must hold real numbers, got dtype {x_dtype}", subject="x")
    if precision not in (None, "float32", "float64"):
        raise ParameterError(f"must be float32 or float64, got {precision!r}", subject="precision")
    if precision is not None:
        dtype = np.dtype(precision)
    elif kind == "max":
        dtype = x_dtype
    else:
        dtype = np.dtype(np.float64 if x_dtype == np.float64 else np.float32)
    return PoolPlan(kind, nd, axis, batch_shape, channels, axes, tuple(p.before for p in axes),
                    bool(count_include_pad), dtype)


def max_pool(x, window, *, stride=None, padding=0, dilation=1, ceil_mode=False, channel_axis=None,
             precision=None, spatial_ndim=None) -> np.ndarray:
    """The maximum over every pooling window: ``torch.nn.functional.max_pool{1,2,3}d`` for any layout.

    Examples
    --------
    >>> max_pool(np.array([[1, 5, 2, 0], [3, 4, 8, 6]]), 2)
    array([[5, 8]])
    """
    x = np.asarray(x)
    plan = plan_pool(x.shape, "max", window, stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode,
                     channel_axis=channel_axis, precision=precision, spatial_ndim=spatial_ndim, x_dtype=x.dtype)
    return execute_pool(plan, x)


def avg_pool(x, window, *, stride=None, padding=0, ceil_mode=False, count_include_pad=True, channel_axis=None,
             precision=None, spatial_ndim=None) -> np.ndarray:
    """The mean over every pooling window: ``torch.nn.functional.avg_pool{1,2,3}d`` for any layout.

    Examples
    --------
    >>> avg_pool(np.array([1.0, 2, 3, 4, 5]), 2, padding=1, count_include_pad=False)
    array([1. , 2.5, 4.5])
    """
    x = np.asarray(x)
    plan = plan_pool(x.shape, "avg", window, stride=stride, padding=padding, ceil_mode=ceil_mode,
                     count_include_pad=count_include_pad, channel_axis=channel_axis, precision=precision,
                     spatial_ndim=spatial_ndim, x_dtype=x.dtype)
    return execute_pool(plan, x)


def execute_pool(plan: PoolPlan, x: np.ndarray, *, counts=None) -> np.ndarray:
    """Run a plan made by :func:`plan_pool` on ``x``.

    ``counts`` replaces the divisors of a mean (as ``_counts`` gives them)
    for a window cut from a larger array: those of its place in the whole.
    """
    if x.size == 0:
        raise ParameterError(f"is empty (shape {x.shape})", subject="x")
    layout = bands.layout_of(x.shape, plan.channel_axis, plan.spatial_ndim)
    xi = bands.to_internal(x, layout)
    if plan.kind == "max":
        work = plan.dtype if plan.dtype.kind == "f" else xi.dtype
        fill = _lowest(work)
    else:
        work, fill = plan.dtype, 0.0
    out = np.empty((xi.shape[0],) + tuple(p.out for p in plan.axes) + (xi.shape[-1],), dtype=work)
    unpadded = all(p.before == 0 and p.after == 0 for p in plan.axes)
    with np.errstate(invalid="ignore", over="ignore"):
        if plan.kind == "max":
            compute = lambda block, target, plans: selection.box_extreme(block, plans, np.maximum, target)  # noqa: E731
        else:
            constant, varying = _counts(plan) if counts is None else counts
            compute = _window_sums(np.dtype(work), constant)
        # Without padding a band is a view of the input (no copy): the other axes' plans stay as they are.
        bands.run_bands(xi, out, plan.axes, _CONSTANT, fill, compute, work=float(xi.size),
                        pad_rest=not unpadded or xi.dtype != work)
        if plan.kind == "avg":
            _divide(out, varying)
    result = np.ascontiguousarray(bands.from_internal(out, layout, plan.batch_shape, plan.channels))
    return result if result.dtype == plan.dtype else result.astype(plan.dtype)


def _lowest(dtype):
    """What padding holds for a maximum: -infinity, or the type's least value (False for bool)."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return -np.inf
    if dtype.kind == "b":
        return False
    return np.iinfo(dtype).min


def _window_sums(work, count: float):
    """The band computation of a mean: the window's sum, one axis at a time, divided by ``count``."""

    def compute(block, target, band_plans):
        current = block
        for axis, p in enumerate(band_plans):
            current = _window_sum(current, axis + 1, p, work)
        np.divide(current, work.type(count), out=target, casting="unsafe")

    return compute


def _counts(plan: PoolPlan) -> tuple[float, list]:
    """How many samples each mean divides by: one number for the axes where every window counts alike,
    and ``(axis, counts)`` for the others (the count is a product over the axes)."""
    constant, varying = 1.0, []
    for axis, p in enumerate(plan.axes):
        counts = divisors(p, plan.padding_each[axis], plan.count_include_pad)
        if np.all(counts == counts[0]):
            constant *= counts[0]
        else:
            varying.append((axis, counts))
    return constant, varying


def _divide(out: np.ndarray, varying: list) -> None:
    """Divide the means along the axes whose windows count differently (``(lanes, *spatial, trail)``)."""
    for axis, counts in varying:
        shape = [1] * out.ndim
        shape[axis + 1] = counts.size
        np.divide(out, counts.astype(out.dtype).reshape(shape), out=out)


def _window_sum(x: np.ndarray, axis: int, p: AxisPlan, work) -> np.ndarray:
    first = selection.take(x, axis, 0, p.out, p.stride)
    if x.dtype == work and p.taps > 1:  # the first two taps straight into the sum, no copy of the first
        total = selection.pairwise(np.add, first, selection.take(x, axis, p.dilation, p.out, p.stride))
        start = 2
    else:  # integers and booleans are summed as floats (numpy adds booleans as a logical or)
        total, start = first.astype(work), 1
    for j in range(start, p.taps):
        selection.pairwise(np.add, total, selection.take(x, axis, j * p.dilation, p.out, p.stride), out=total)
    return total


def divisors(p: AxisPlan, pad: int, count_include_pad: bool) -> np.ndarray:
    """Per output sample of one axis, how many of its window's samples the mean divides by (PyTorch's rule)."""
    start = np.arange(p.out) * p.stride - pad
    end = np.minimum(start + p.taps, p.length + pad)
    if count_include_pad:
        return (end - start).astype(np.float64)
    return (np.minimum(end, p.length) - np.maximum(start, 0)).astype(np.float64)
