"""Running sums: a constant (box) kernel at a cost independent of its size.

The sum of ``k`` samples spaced ``d`` apart is the difference of two
cumulative sums, ``S[m s + k d] - S[m s]``, where ``S[n]`` adds every
``d``-th sample before ``n``.  Sums are accumulated in float64 so the
differences of large partial sums stay exact to float32 precision and
better; a NaN or infinity would spread along the rest of its line, so this
strategy is only chosen for finite input.
"""
from __future__ import annotations

import numpy as np

from .geometry import AxisPlan


def box_weights(kernel: np.ndarray, rtol: float = 0.0) -> np.ndarray | None:
    """The constant of each channel's kernel ``(C, *taps)``, or ``None`` if some channel's taps differ."""
    flat = np.asarray(kernel, dtype=np.float64).reshape(kernel.shape[0], -1)
    first = flat[:, :1]
    if not np.all(np.abs(flat - first) <= rtol * np.abs(first)) or not np.all(first != 0):
        return None
    return first[:, 0]


def _running_pass(src: np.ndarray, axis: int, plan: AxisPlan) -> np.ndarray:
    """Box sums of ``plan.taps`` samples spaced ``plan.dilation`` apart along ``axis``, every ``plan.stride``."""
    ax = 1 + axis
    d, k, s, m = plan.dilation, plan.taps, plan.stride, plan.out
    n = src.shape[ax]
    shape = list(src.shape)
    shape[ax] = n + d
    sums = np.empty(shape, dtype=np.float64)
    head = [slice(None)] * src.ndim
    head[ax] = slice(0, d)
    sums[tuple(head)] = 0.0
    for r in range(d):
        dst = [slice(None)] * src.ndim
        dst[ax] = slice(r + d, None, d)
        part = [slice(None)] * src.ndim
        part[ax] = slice(r, None, d)
        np.cumsum(src[tuple(part)], axis=ax, dtype=np.float64, out=sums[tuple(dst)])
    hi = [slice(None)] * src.ndim
    lo = [slice(None)] * src.ndim
    hi[ax] = slice(k * d, k * d + (m - 1) * s + 1, s)
    lo[ax] = slice(0, (m - 1) * s + 1, s)
    return np.subtract(sums[tuple(hi)], sums[tuple(lo)])


def box(block: np.ndarray, out: np.ndarray, plans: tuple[AxisPlan, ...], constants: np.ndarray) -> np.ndarray:
    """Valid box correlation of a padded block: running sums per axis, then the constant.

    ``constants`` broadcasts over ``(lanes, *spatial, trail)``.
    """
    nd = len(plans)
    # The axis that shrinks the block most goes first.
    order = sorted(range(nd), key=lambda a: plans[a].out / (plans[a].length or 1))
    current = block
    for axis in order:
        current = _running_pass(current, axis, plans[axis])
    np.multiply(current, constants, out=out, casting="unsafe")
    return out
