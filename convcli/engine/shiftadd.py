"""Shift-and-add on one padded band: direct, separable passes and low-rank sums of them.

Each function computes the *valid* correlation of a padded block laid out
``(lanes, *spatial, trail)`` and writes it into ``out``; the band runner
(:mod:`convcli.engine.bands`) supplies blocks small enough to stay in cache.
Only the output samples the stride keeps are computed.
"""
from __future__ import annotations

import numpy as np

from .bands import broadcast_weight
from .geometry import AxisPlan


def _window(tap, plans) -> tuple:
    return (slice(None),) + tuple(
        slice(t * p.dilation, t * p.dilation + (p.out - 1) * p.stride + 1, p.stride) for t, p in zip(tap, plans)
    ) + (slice(None),)


def _accumulate(out, view, w, scratch, first: bool):
    """``out = view * w`` (first) or ``out += view * w``, with +-1 weights costing one pass."""
    if first:
        if isinstance(w, float) and w == 1.0:
            np.copyto(out, view)
        else:
            np.multiply(view, w, out=out)
        return
    if isinstance(w, float) and w == 1.0:
        np.add(out, view, out=out)
    elif isinstance(w, float) and w == -1.0:
        np.subtract(out, view, out=out)
    else:
        np.multiply(view, w, out=scratch)
        np.add(out, scratch, out=out)


def direct(block: np.ndarray, out: np.ndarray, plans: tuple[AxisPlan, ...], weights: np.ndarray) -> np.ndarray:
    """One strided view of ``block`` per non-zero tap, scaled and summed into ``out``.

    ``weights`` has shape ``taps + (wl, wt)`` (see :func:`bands.tap_weights`).
    Zero taps are skipped, which keeps a NaN inside its receptive field.
    """
    nd = len(plans)
    scratch = None
    first = True
    for tap in np.ndindex(*weights.shape[:nd]):
        w = weights[tap]
        if not w.any():
            continue
        bw = broadcast_weight(w, nd)
        bw = float(bw) if np.ndim(bw) == 0 else bw
        if scratch is None and not first:
            scratch = np.empty(out.shape, dtype=out.dtype)
        _accumulate(out, block[_window(tap, plans)], bw, scratch, first)
        first = False
    if first:  # an all-zero kernel
        out[...] = 0
    return out


def one_axis(block, out, axis: int, plan: AxisPlan, weights: np.ndarray) -> np.ndarray:
    """A 1-D correlation along spatial ``axis`` (``weights``: ``(taps, wl, wt)``); other axes untouched."""
    nd = block.ndim - 2
    plans = tuple(
        plan if a == axis else AxisPlan(block.shape[1 + a], 1, 1, 1, 0, 0, block.shape[1 + a]) for a in range(nd)
    )
    full = weights.reshape((1,) * axis + (weights.shape[0],) + (1,) * (nd - axis - 1) + weights.shape[1:])
    return direct(block, out, plans, full)


def separable(block, out, plans: tuple[AxisPlan, ...], factors: list[np.ndarray]) -> np.ndarray:
    """One 1-D pass per axis (``factors[a]``: ``(taps_a, wl, wt)``), each applying that axis's stride.

    The axis that shrinks the block most goes first, so later passes see the
    fewest samples; the last pass writes ``out``.
    """
    nd = len(plans)
    order = sorted(range(nd), key=lambda a: plans[a].out / (plans[a].length or 1))
    current = block
    for i, axis in enumerate(order):
        shape = list(current.shape)
        shape[1 + axis] = plans[axis].out
        target = out if i == nd - 1 else np.empty(shape, dtype=out.dtype)
        current = one_axis(current, target, axis, plans[axis], factors[axis])
    return out


def lowrank(block, out, plans: tuple[AxisPlan, ...], terms: list[list[np.ndarray]]) -> np.ndarray:
    """A sum of separable terms: each term's passes, added into ``out``."""
    scratch = None
    for i, factors in enumerate(terms):
        if i == 0:
            separable(block, out, plans, factors)
            continue
        if scratch is None:
            scratch = np.empty(out.shape, dtype=out.dtype)
        separable(block, scratch, plans, factors)
        out += scratch
    return out
