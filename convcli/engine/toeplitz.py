"""1-D correlation as matrix products, so BLAS does the multiply-adds.

Cut the output into rows of ``b`` samples.  Row ``q`` reads the ``width =
(b - 1) * stride + span`` input samples from ``q * b * stride`` on, a fixed
linear map: one banded (Toeplitz) matrix ``T (width x b)``.  Stack the rows'
inputs (overlapping windows of the padded signal) as a matrix ``X`` and the
whole output is ``X @ T``.  A few zeros of the band are multiplied too
(``width`` multiply-adds per output instead of ``taps``), but at BLAS speed
(AVX-512), several times faster than a shift-and-add pass per tap for FIR
filters of tens to hundreds of taps.

The work runs in cache-sized bands (:mod:`.bands`) on every core: each band
gathers its padded input (converting integer samples on the way), builds its
``X`` in cache and multiplies it with BLAS held to one thread, so nothing
the size of the signal is allocated besides the result, and the cores split
the bands instead of waking BLAS threads for every small product.
"""
from __future__ import annotations

import threading

import numpy as np

from ..parallel import blas_limited
from . import bands
from .borders import BorderMode
from .geometry import AxisPlan
from .spectral import scratch_array

# Outputs per matrix row, by kernel span (single-core ns per output measured
# on 4M float32 samples: span 101: b=32 3.6, 64 3.4, 128 3.9; span 301:
# 64 7.2, 128 7.0; span 11: 32 1.5, 64 1.7).  Wider rows waste more
# multiply-adds on the band's zeros; narrower ones run BLAS below its speed.
MIN_ROW = 32
MAX_ROW = 256


def row_outputs(plan: AxisPlan) -> int:
    """Outputs per matrix row ``b``: about half the kernel span as a power of two, in 32..256."""
    half = 1 << max(0, round(np.log2(max(plan.span, 1))) - 1)
    return int(min(MAX_ROW, max(MIN_ROW, half)))


def row_width(plan: AxisPlan, b: int) -> int:
    """Input samples one row of ``b`` outputs reads."""
    return (b - 1) * plan.stride + plan.span


def matrix(taps: np.ndarray, plan: AxisPlan, b: int, dtype) -> np.ndarray:
    """``T`` (``width x b``) for one lane's taps: column ``p`` holds the taps from row ``stride * p`` on."""
    s, d = plan.stride, plan.dilation
    t = np.zeros((row_width(plan, b), b), dtype=dtype)
    p = np.arange(b)
    for j, tap in enumerate(taps):
        t[s * p + d * j, p] = tap
    return t


def band_outputs(plan: AxisPlan, lanes: int, trail: int, itemsize: int) -> int:
    """Outputs per band: whole matrix rows of :func:`row_outputs` each, bands starting at output 0.

    Every output is one row of a band times one column of ``T``, so a piece
    of the signal whose outputs start at a multiple of this (:mod:`.stream`)
    gets exactly the numbers the whole signal gets there.
    """
    b = row_outputs(plan)
    return -(-bands.band_rows((plan,), lanes, trail, itemsize) // b) * b


def correlate_1d(x: np.ndarray, out: np.ndarray, plan: AxisPlan, weights: np.ndarray, border: BorderMode, value: float):
    """Fill ``out`` (``(lanes, m, trail)``) from the unpadded ``x`` (``(lanes, n, trail)``).

    ``weights`` is ``(taps, wl, wt)``.
    """
    b = row_outputs(plan)
    width = row_width(plan, b)
    cache: dict[tuple[int, int], np.ndarray] = {}
    for lane in range(weights.shape[1]):
        for t in range(weights.shape[2]):
            cache[lane, t] = matrix(weights[:, lane, t], plan, b, out.dtype)

    band = band_outputs(plan, x.shape[0], x.shape[-1], out.dtype.itemsize) // b  # matrix rows per band
    scratch: dict[int, dict] = {}

    def compute(block: np.ndarray, target: np.ndarray, band_plans) -> None:
        # block: (lanes, padded rows, trail) of this band; target: (lanes, outputs, trail).
        count = target.shape[1]
        rows = -(-count // b)
        step = b * plan.stride
        avail = block.shape[1]
        whole = min(rows, (avail - width) // step + 1) if avail >= width else 0
        own = scratch.setdefault(threading.get_ident(), {})
        stacked = scratch_array(own, "stacked", (band, width), out.dtype)[:rows]
        result = scratch_array(own, "result", (band, b), out.dtype)[:rows]
        for lane in range(block.shape[0]):
            for t in range(block.shape[2]):
                line = block[lane, :, t]
                # Overlapping windows of the band: a strided view, copied once into BLAS's layout.
                stacked[:whole] = np.lib.stride_tricks.as_strided(
                    line, (whole, width), (step * line.strides[0], line.strides[0]), writeable=False)
                for r in range(whole, rows):  # the band's last row may reach past its input
                    take = min(width, avail - r * step)
                    stacked[r, :take] = line[r * step:r * step + take]
                    # Only discarded outputs read past the input, but every output multiplies
                    # the whole row (by zeros): stale NaN from np.empty would leak into them.
                    stacked[r, take:] = 0
                np.matmul(stacked, cache[min(lane, weights.shape[1] - 1), min(t, weights.shape[2] - 1)], out=result)
                target[lane, :, t] = result.reshape(-1)[:count]

    work = float(out.size) * width
    with blas_limited() as limited:
        # Whole matrix rows per band: only the last band has a short one.
        bands.run_bands(x, out, (plan,), border, value, compute, work=work if limited else 0.0,
                        rows_per_band=band * b)
    return out
