"""A weighted sum of same-shaped arrays: the taps along an axis that is streamed rather than held.

A video's frames arrive one at a time, so a kernel over (t, y, x) cannot see
the clip as one array.  Its taps along t become a weighted sum of the frames
its window covers, and the spatial part of the kernel then runs on that sum
(:mod:`convcli.pipeline.video` splits the kernel so).  This is the sum:
cache-sized bands of rows, on every core, computed in the compute type
whatever the frames' sample type, zero weights skipped (a NaN stays within
the taps that reach it, as in the engine's other strategies).
"""
from __future__ import annotations

import numpy as np

from ..parallel import run_all
from .shiftadd import add_scaled

# Rows of a band: a band's sum and scratch (float32) stay within a core's L2 cache.
BAND_BYTES = 1 << 18
# Below this many samples a thread hand-off costs more than it saves.
PARALLEL_SAMPLES = 1 << 18


def weighted_sum(arrays, weights, *, dtype=np.float32, out: np.ndarray | None = None) -> np.ndarray:
    """``sum(w * a for a, w in zip(arrays, weights))`` in ``dtype``, band by band on the shared threads.

    Parameters
    ----------
    arrays : sequence of numpy.ndarray
        Same-shaped arrays (at least one axis) of any real type; uint8 frames are read as they are.
    weights : sequence of float
        One weight per array; arrays with a zero weight are not read.
    dtype : numpy dtype
        The compute and result type (float32 or float64).
    out : numpy.ndarray, optional
        A C-ordered array of the arrays' shape and ``dtype`` to fill.

    Examples
    --------
    >>> weighted_sum([np.array([1, 2], np.uint8), np.array([3, 4], np.uint8)], [0.5, 0.5])
    array([2., 3.], dtype=float32)
    """
    shape = np.shape(arrays[0])
    if out is None:
        out = np.empty(shape, dtype=dtype)
    scalar = out.dtype.type  # a weight of the compute type keeps uint8 * weight in it (not float64)
    # A weight of +-1 stays a Python float, which add_scaled takes in one pass (a copy, an add or a subtraction).
    terms = [(a, float(w) if abs(w) == 1 else scalar(w)) for a, w in zip(arrays, weights) if w != 0]
    if not terms:
        out[...] = 0
        return out
    rows = shape[0]
    per_row = max(1, out.size // max(rows, 1)) * out.itemsize
    step = max(1, BAND_BYTES // per_row)
    starts = range(0, rows, step)

    def band(start: int) -> None:
        part = slice(start, start + step)
        acc = out[part]
        scratch = None
        for i, (a, w) in enumerate(terms):
            scratch = add_scaled(acc, a[part], w, scratch, first=i == 0)

    run_all(band, starts, parallel=out.size >= PARALLEL_SAMPLES)
    return out
