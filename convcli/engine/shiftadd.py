"""Shift-and-add on one padded band: direct, separable passes and low-rank sums of them.

Each function computes the *valid* correlation of a padded block laid out
``(lanes, *spatial, trail)`` and writes it into ``out``; the band runner
(:mod:`convcli.engine.bands`) supplies blocks small enough to stay in cache.
Only the output samples the stride keeps are computed.

:func:`add_scaled`, one tap's view scaled and added, is the step of every
numpy shift-and-add in the engine: these strategies, the depthwise layers'
numpy path (:mod:`.depthwise`) and the volume planes' single-tap slices
(:mod:`.compiled`).
"""
from __future__ import annotations

import itertools
import math

import numpy as np

from .bands import broadcast_weight, gather_band
from .geometry import AxisPlan


def _window(tap, plans) -> tuple:
    return (slice(None),) + tuple(
        slice(t * p.dilation, t * p.dilation + (p.out - 1) * p.stride + 1, p.stride) for t, p in zip(tap, plans)
    ) + (slice(None),)


def add_scaled(out: np.ndarray, view, w, scratch: np.ndarray | None = None, *, first: bool = False):
    """``out += view * w``, or ``out = view * w`` when ``first``; a weight of +-1 costs one pass, not two.

    ``w`` is a Python float or an array that broadcasts over ``view``.  The
    product goes through ``scratch`` (``out``'s shape), made here when it is
    needed and not given; the scratch is returned for the next call.
    """
    one = isinstance(w, float) and w == 1.0
    if first:
        if one:
            np.copyto(out, view)
        else:
            np.multiply(view, w, out=out)
    elif one:
        np.add(out, view, out=out)
    elif isinstance(w, float) and w == -1.0:
        np.subtract(out, view, out=out)
    else:
        if scratch is None:
            scratch = np.empty(out.shape, dtype=out.dtype)
        np.multiply(view, w, out=scratch)
        np.add(out, scratch, out=out)
    return scratch


def direct(block: np.ndarray, out: np.ndarray, plans: tuple[AxisPlan, ...], weights: np.ndarray, *,
           onto: bool = False) -> np.ndarray:
    """One strided view of ``block`` per non-zero tap, scaled and summed into ``out``.

    ``weights`` has shape ``taps + (wl, wt)`` (see :func:`bands.tap_weights`).
    Zero taps are skipped, which keeps a NaN inside its receptive field.
    With ``onto`` the taps are added to what ``out`` holds (a layer's bias).
    """
    nd = len(plans)
    taps, (wl, wt) = weights.shape[:nd], weights.shape[nd:]
    # Slices and weights are made up front, so a tap costs its two ufunc calls and ~1 us
    # of Python (3 us made tap by tap): a CNN's small layers run hundreds of taps of a few
    # thousand samples each.
    count = math.prod(taps)
    live = weights.reshape(count, -1).any(axis=1).tolist()
    if wl * wt == 1:
        scales = weights.reshape(-1).tolist()  # Python floats: +-1 takes the one-pass path
    else:
        scales = weights.reshape((count, wl) + (1,) * nd + (wt,))  # each broadcasts over (L, *spatial, T)
    steps = [[slice(t * p.dilation, t * p.dilation + (p.out - 1) * p.stride + 1, p.stride) for t in range(k)]
             for k, p in zip(taps, plans)]
    every = slice(None)
    scratch = None
    first = not onto
    for i, tap in enumerate(itertools.product(*map(range, taps))):
        if not live[i]:
            continue
        view = block[(every,) + tuple(axis[t] for axis, t in zip(steps, tap)) + (every,)]
        scratch = add_scaled(out, view, scales[i], scratch, first=first)
        first = False
    if first:  # an all-zero kernel
        out[...] = 0
    return out


def one_axis(block, out, axis: int, plan: AxisPlan, weights: np.ndarray) -> np.ndarray:
    """A 1-D correlation along spatial ``axis`` (``weights``: ``(taps, wl, wt)``); other axes untouched."""
    nd = block.ndim - 2
    plans = tuple(plan if a == axis else AxisPlan.whole(block.shape[1 + a]) for a in range(nd))
    k = weights.shape[0]
    if k > 2 and np.array_equal(weights, weights[::-1]) and weights.all():
        return _symmetric(block, out, plans, axis, weights)
    full = weights.reshape((1,) * axis + (k,) + (1,) * (nd - axis - 1) + weights.shape[1:])
    return direct(block, out, plans, full)


def _symmetric(block, out, plans, axis: int, weights: np.ndarray) -> np.ndarray:
    """Mirror-image taps share a weight: add their two views, then scale once (3 passes per pair, not 4)."""
    nd = len(plans)
    k = weights.shape[0]
    tap = [0] * nd
    scratch = np.empty(out.shape, dtype=out.dtype)

    def view(j):
        tap[axis] = j
        return block[_window(tap, plans)]

    for j in range(k // 2):
        w = broadcast_weight(weights[j], nd)
        target = out if j == 0 else scratch
        np.add(view(j), view(k - 1 - j), out=target)
        np.multiply(target, w, out=target)
        if j:
            np.add(out, scratch, out=out)
    if k % 2:
        add_scaled(out, view(k // 2), broadcast_weight(weights[k // 2], nd), scratch)
    return out


# Bytes of samples one pass works on at a time: inside a core's L2 cache (2 MiB here).
CHUNK_BYTES = 1 << 20


def separable(block, out, plans: tuple[AxisPlan, ...], factors: list[np.ndarray], *, border=None,
              value: float = 0.0) -> np.ndarray:
    """One 1-D pass per axis (``factors[a]``: ``(taps_a, wl, wt)``), each applying that axis's stride.

    The axis that shrinks the block most goes first, so later passes see the
    fewest samples; the last pass writes ``out``.  With ``border`` given, the
    block is padded along axis 0 only: the first pass runs along axis 0, in
    chunks of axis 1 that fit the cache, and the other axes are padded after
    it, on the smaller intermediate, again a cache-sized chunk of axis 0 at a
    time (axis 0 needs no more neighbours then).
    """
    nd = len(plans)
    if border is None or nd == 1:
        if border is not None:
            return one_axis(block, out, 0, plans[0], factors[0])
        return _passes(block, out, plans, factors, sorted(range(nd), key=lambda a: plans[a].out / (plans[a].length or 1)))
    first = np.empty((block.shape[0], plans[0].out) + block.shape[2:], dtype=out.dtype)
    per_col = block.itemsize * block.shape[0] * block.shape[1] * int(np.prod(block.shape[3:]))
    step = max(1, CHUNK_BYTES // max(per_col, 1))
    for c0 in range(0, block.shape[2], step):
        cols = (slice(None), slice(None), slice(c0, c0 + step))
        one_axis(block[cols], first[cols], 0, plans[0], factors[0])
    rest = tuple(p.valid() for p in plans[1:])
    order = sorted(range(1, nd), key=lambda a: rest[a - 1].out / (rest[a - 1].length or 1))
    per_row = first.itemsize * first.shape[0] * first.shape[-1] * int(np.prod([p.padded for p in plans[1:]]))
    rows = max(1, CHUNK_BYTES // max(per_row, 1))
    for r0 in range(0, plans[0].out, rows):
        r1 = min(r0 + rows, plans[0].out)
        axis0 = AxisPlan.whole(r1 - r0)
        padded = gather_band(first[:, r0:r1], 0, r1 - r0, (axis0,) + tuple(plans[1:]), border, value, out.dtype)
        _passes(padded, out[:, r0:r1], (axis0,) + rest, factors, order)
    return out


def _passes(block, out, plans, factors, order) -> np.ndarray:
    current = block
    for i, axis in enumerate(order):
        shape = list(current.shape)
        shape[1 + axis] = plans[axis].out
        target = out if i == len(order) - 1 else np.empty(shape, dtype=out.dtype)
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
