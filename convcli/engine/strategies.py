"""The ways to compute a padded, strided, dilated correlation, and the choice between them.

``METHODS`` names every strategy; all agree to float tolerance and are held
to each other and to a literal loop definition by the tests:

- ``direct``: shift-and-add, one strided view per non-zero tap, the
  reference (:mod:`.shiftadd`, run in cache-sized bands on every core by
  :mod:`.bands`);
- ``separable``: a rank-1 kernel as one 1-D pass per axis;
- ``lowrank``: a sum of separable terms (repeated SVD, exact to tolerance);
- ``box``: a constant kernel by running sums (:mod:`.running`);
- ``toeplitz``: a 1-D kernel as one BLAS matrix product per cache-sized
  band (:mod:`.toeplitz`);
- ``fft``: images and volumes as one real transform on every core, signals
  as overlap-save blocks on the band threads (:mod:`.spectral`);
- ``opencv``: OpenCV's compiled filters for images, and volumes plane by
  plane (:mod:`.compiled`).

:func:`choose_method` is the pure cost model behind ``auto``; the kernel
factorisations it weighs (rank 1, low rank) are here too, for the strategies
that use them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .geometry import AxisPlan
from . import compiled
from .toeplitz import row_outputs

METHODS = ("auto", "direct", "separable", "lowrank", "box", "toeplitz", "fft", "opencv")

# Methods whose result is not local around a NaN or infinity of the input
# (transforms, running sums, matrix products over whole rows, OpenCV's DFT):
# auto picks them only for finite input.
SPREADS_NON_FINITE = frozenset({"lowrank", "box", "toeplitz", "fft", "opencv"})

# Relative tolerance under which a kernel counts as exactly rank 1.
SEPARABLE_RTOL = 1e-7
# Relative tolerance of a low-rank (sum of separable terms) factorisation.
LOWRANK_RTOL = 1e-9
# Multiply-adds of SVD a plan may spend on factoring a kernel (about m * n * min(m, n) for
# an m x n unfolding; 1-2.5 ns each here, so about 80 ms).  Beyond it an SVD would stall the
# run, uninterruptibly inside LAPACK (a 4096x8192 kernel: minutes): rank 1 is then tested
# through the largest weight instead (linear in the kernel's size), and low rank not at all.
SVD_MAX_WORK = 1 << 25

# Cost model, in nanoseconds on the 2-core benchmark machine (AVX-512 Xeon,
# 2 MiB L2 per core), measured with bench/bench_engine.py on 3840x2160 RGB,
# 180 s stereo and 256^3 float32 (fastest of 5 runs: the machine is shared)
# and on small inputs for the fixed costs.  E.g. random 7x7 on 4K RGB:
# direct 745 ms = 25M outputs x (49 x 0.6 + 1); OpenCV 88 ms, sobel 37 ms.
# numpy shift-and-add in cache-sized bands on every core: per output and tap,
# plus per output for gathering the band and writing the result; every tap
# of every band is a few ufunc calls.
DIRECT_NS_PER_TAP = 0.6
DIRECT_NS_PER_OUTPUT = 1.0
NS_PER_UFUNC = 1500.0
# Every weight, zero or not, is looked at in Python once a band (a 2^25-weight kernel of
# zeros: 15 s on a 64x48 image, which costs nothing else).
DIRECT_NS_PER_WEIGHT = 0.45e3
# Running sums: two float64 passes per axis.
BOX_NS_PER_SAMPLE_AXIS = 2.5
# scipy.fft, real transforms on every core: per sample and log2 of the size,
# forward and back together; plus the planning and small-call overhead.
FFT_NS_PER_LOG = 0.65
FFT_FIXED_NS = 1.0e5
# BLAS matrix products (1-D Toeplitz, one BLAS thread per band thread): per
# multiply-add, and per sample for gathering the bands.
TOEPLITZ_NS_PER_MAC = 0.017
TOEPLITZ_NS_PER_SAMPLE = 2.4
# 1-D overlap-save FFT (OpenCV's dft on the band threads): per sample and
# log2 of the block size, plus OpenCV's import.
FFT_1D_NS_PER_LOG = 0.4
FFT_1D_FIXED_NS = 2.0e7
# OpenCV: per output and tap (filter2D/sepFilter2D), per output (box, and the
# write of every result), per call; plus a fixed cost standing for its import
# (25 ms, once per process) spread over a dozen calls, so a small one-shot
# filter stays in numpy and never pays for loading OpenCV.
OPENCV_NS_PER_TAP = 0.047
OPENCV_NS_PER_OUTPUT = 1.2
OPENCV_NS_PER_CALL = 2.0e4
OPENCV_FIXED_NS = 2.0e6
# OpenCV on a volume, plane by plane (256^3 float32, fresh output, fitted to the laplacian, a z-only
# [1, -2, 1], dense 3x3x3, 3x3x1 and 5x5x5 kernels: 27-55 ms and 142 ms for the 5x5x5): per output,
# writing it (its page's first touch included) and reading its input; per output and every further
# plane-sized pass (the add of a z slice, a scratch plane); per output for each OpenCV call and per
# tap of it; per call, Python and OpenCV's set-up.
PLANE_NS_PER_OUTPUT = 1.0
PLANE_NS_PER_PASS = 0.3
PLANE_NS_PER_FILTER = 0.1
PLANE_NS_PER_TAP = 0.025
PLANE_NS_PER_CALL = 1500.0


# --------------------------------------------------------------------------- rank 1
def svd_work(shape) -> int:
    """Multiply-adds of the repeated SVD that factors a kernel of ``shape``: one unfolding per axis but the last."""
    shape = [int(n) for n in shape]
    work = 0
    for axis in range(len(shape) - 1):
        m, n = shape[axis], math.prod(shape[axis + 1:])
        work += m * n * min(m, n)
    return work


def rank1_factors(kernel: np.ndarray, rtol: float = SEPARABLE_RTOL) -> list[np.ndarray] | None:
    """Factor an N-D kernel into one 1-D vector per axis, or ``None`` if it is not rank 1.

    Works by repeated SVD of the unfolding along the first axis, or, for a
    kernel whose SVD would cost more than :data:`SVD_MAX_WORK`, through the
    row and column of its largest weight; either result is accepted only if
    its outer product reproduces the kernel to ``rtol`` times the kernel's
    norm.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    scale = float(np.abs(kernel).max()) if kernel.size else 0.0
    if scale == 0 or kernel.ndim == 0:
        return None
    # Factor the kernel scaled to a largest weight of 1: tiny or huge weights
    # would otherwise underflow or overflow inside the SVD and the norms.
    unit = kernel / scale
    factors = _svd_factors(unit, rtol) if svd_work(kernel.shape) <= SVD_MAX_WORK else _pivot_factors(unit)
    if factors is None or not _reproduces(factors, unit, rtol):
        return None
    factors[0] = factors[0] * scale
    return factors


def _svd_factors(kernel: np.ndarray, rtol: float) -> list[np.ndarray] | None:
    factors = []
    rest = kernel
    while rest.ndim > 1:
        u, s, vt = np.linalg.svd(rest.reshape(rest.shape[0], -1), full_matrices=False)
        if s.size > 1 and s[1] > rtol * s[0]:
            return None
        factors.append(u[:, 0] * s[0])
        rest = vt[0].reshape(rest.shape[1:])
    factors.append(rest)
    return factors


def _pivot_factors(kernel: np.ndarray) -> list[np.ndarray]:
    """The rank-1 candidate through the largest weight: its column (scaled to 1 there), then its row, per axis.

    If the kernel is rank 1, column times row is the kernel; if not, the
    check that follows refuses the candidate.
    """
    factors = []
    rest = kernel
    while rest.ndim > 1:
        flat = rest.reshape(rest.shape[0], -1)
        i, j = np.unravel_index(int(np.argmax(np.abs(flat))), flat.shape)
        factors.append(flat[:, j] / flat[i, j])
        rest = flat[i].reshape(rest.shape[1:])
    factors.append(rest)
    return factors


def _reproduces(factors: list[np.ndarray], kernel: np.ndarray, rtol: float) -> bool:
    """Whether the outer product of ``factors`` is ``kernel`` to ``rtol`` times its norm (a slice at a time)."""
    if len(factors) == 1:
        return True  # a 1-D kernel is its own factor
    tail = factors[1]
    for f in factors[2:]:
        tail = np.multiply.outer(tail, f)
    squared = 0.0
    for i, weight in enumerate(factors[0]):
        squared += float(np.sum(np.square(kernel[i] - weight * tail)))
    return math.sqrt(squared) <= rtol * float(np.linalg.norm(kernel))


def channel_factors(kernel: np.ndarray) -> list[np.ndarray] | None:
    """Rank-1 factors of a ``(channels, *taps)`` kernel: one ``(channels, taps_a)`` array per axis."""
    per_channel = [rank1_factors(k) for k in kernel]
    if any(f is None for f in per_channel):
        return None
    return [np.stack([f[axis] for f in per_channel]) for axis in range(kernel.ndim - 1)]


# --------------------------------------------------------------------------- low rank
def lowrank_terms(kernel: np.ndarray, rtol: float = LOWRANK_RTOL) -> list[list[np.ndarray]]:
    """Write an N-D kernel as a sum of separable terms, each a list of one 1-D vector per axis.

    Repeated SVD of the unfolding along the first axis keeps every singular
    value above ``rtol`` times the largest; the sum reproduces the kernel to
    ``rtol`` times its norm times the number of terms (an all-zero kernel
    has no terms).
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.ndim == 1:
        return [[kernel]] if kernel.any() else []
    u, s, vt = np.linalg.svd(kernel.reshape(kernel.shape[0], -1), full_matrices=False)
    terms = []
    for i in np.flatnonzero(s > rtol * (s[0] if s.size else 0)):
        for rest in lowrank_terms(vt[i].reshape(kernel.shape[1:]), rtol):
            terms.append([u[:, i] * s[i]] + rest)
    return terms


def lowrank_affordable(shape) -> bool:
    """Whether a ``(channels, *taps)`` kernel can be split into low-rank terms within :data:`SVD_MAX_WORK`.

    Each axis may bring up to a row's worth of terms, each factored again,
    so the work is counted for every first-axis row of the kernel too.
    """
    channels, taps = int(shape[0]), tuple(shape[1:])
    return channels * (1 + taps[0] * (len(taps) > 2)) * svd_work(taps) <= SVD_MAX_WORK


def channel_terms(kernel: np.ndarray) -> list[list[np.ndarray]]:
    """Low-rank terms of a ``(channels, *taps)`` kernel: each term one ``(channels, taps_a)`` array per axis.

    Channels with fewer terms get all-zero terms, so every channel has the
    same count.
    """
    per_channel = [lowrank_terms(k) for k in kernel]
    count = max(len(t) for t in per_channel)
    taps = kernel.shape[1:]
    out = []
    for i in range(count):
        out.append([
            np.stack([t[i][axis] if i < len(t) else np.zeros(taps[axis]) for t in per_channel])
            for axis in range(len(taps))
        ])
    return out


# --------------------------------------------------------------------------- choice
@dataclass(frozen=True)
class Choice:
    """The method picked for a correlation, and the estimated cost of each candidate."""

    method: str
    costs: dict[str, float]
    separable: bool
    spreads_non_finite: bool = False  # the method would carry a NaN or infinity beyond its footprint
    forced: bool = False  # --method named it, whatever the costs

    def reason(self) -> str:
        """The method and why: forced, and/or the estimated milliseconds of every candidate, cheapest first."""
        if not self.costs:
            return f"{self.method} (forced)"
        ranked = ", ".join(f"{m} {c / 1e6:.3g}" for m, c in sorted(self.costs.items(), key=lambda kv: kv[1]))
        return f"{self.method} ({'forced; ' if self.forced else ''}estimated ms: {ranked})"


def choose_method(
    lanes: int, kernel: np.ndarray, plans: tuple[AxisPlan, ...], *, finite: bool = True, opencv: bool = False
) -> Choice:
    """Pick the cheapest strategy for ``lanes`` independent (batch x channel) signals.

    A pure function of shapes, weights and what is installed (``opencv``),
    so it can be tested and shown by ``--explain`` without touching data.
    Methods that spread a NaN or infinity beyond its neighbourhood (FFT,
    running sums, matrix products, OpenCV) are never picked when ``finite``
    is false.  The costs are estimated nanoseconds on the benchmark machine.
    """
    taps = kernel.shape[1:]
    nd = len(plans)
    outputs = lanes * math.prod(p.out for p in plans)
    padded = lanes * math.prod(p.padded for p in plans)
    support = np.any(kernel != 0, axis=0)
    nonzero = max(int(np.count_nonzero(support)), 1)
    bands = max(1, padded * 4 // (1 << 20))
    costs = {"direct": outputs * (DIRECT_NS_PER_TAP * nonzero + DIRECT_NS_PER_OUTPUT)
             + (NS_PER_UFUNC * 2 * nonzero + DIRECT_NS_PER_WEIGHT * math.prod(taps)) * bands}
    factors = channel_factors(kernel) if nd > 1 else None
    if factors is not None and not _is_one_tap(taps):
        work = lanes * _separable_work(plans)
        costs["separable"] = work * DIRECT_NS_PER_TAP + outputs * DIRECT_NS_PER_OUTPUT + NS_PER_UFUNC * 2 * sum(taps) * bands
    if finite:
        if nd > 1 and factors is None and nonzero > 2 * sum(taps) and lowrank_affordable(kernel.shape):
            terms = len(channel_terms(kernel))
            if terms * sum(taps) < nonzero:
                work = lanes * _separable_work(plans)
                costs["lowrank"] = terms * (work * DIRECT_NS_PER_TAP + outputs * DIRECT_NS_PER_OUTPUT
                                            + NS_PER_UFUNC * 2 * sum(taps) * bands)
        if _is_constant(kernel) and not _is_one_tap(taps):
            costs["box"] = padded * nd * BOX_NS_PER_SAMPLE_AXIS + outputs * DIRECT_NS_PER_OUTPUT
        if nd == 1 and taps[0] > 1:
            p = plans[0]
            rows = row_outputs(p) * p.stride
            costs["toeplitz"] = outputs * (rows + p.span - 1) * TOEPLITZ_NS_PER_MAC + padded * TOEPLITZ_NS_PER_SAMPLE
        costs["fft"] = _fft_cost(padded, plans)
    local = set()
    if opencv and nd >= 2:  # 1-D through OpenCV is a one-sample-wide image: slow, so only when forced
        op = compiled.operation(kernel, plans, factors is not None)
        if nd == 3 and op in ("box", "dft"):
            op = "filter" if nd == 3 and factors is None else "separable"
        if compiled.keeps_non_finite_local(op, factors):
            local.add("opencv")
        if finite or "opencv" in local:
            costs["opencv"] = _opencv_cost(lanes, outputs, padded, kernel, plans, op, nonzero)
    best = min(costs, key=costs.get)
    spreads = best in SPREADS_NON_FINITE and best not in local
    return Choice(best, costs, factors is not None, spreads)


def _fft_cost(padded: int, plans: tuple[AxisPlan, ...]) -> float:
    size = math.prod(p.padded for p in plans)
    if len(plans) == 1:
        from .spectral import block_size

        size = min(size, block_size(plans[0].span))  # overlap-save blocks of a few spans
        return padded * FFT_1D_NS_PER_LOG * math.log2(max(size, 2)) + FFT_1D_FIXED_NS
    return padded * FFT_NS_PER_LOG * math.log2(max(size, 2)) * 2 + FFT_FIXED_NS


def _opencv_cost(lanes, outputs, padded, kernel, plans, op, nonzero) -> float:
    taps = kernel.shape[1:]
    if len(plans) == 3:  # plane by plane: a column filter and a separable call, or a call per z slice
        planes = lanes * plans[0].out
        if op == "separable":
            work = outputs * (sum(taps) * OPENCV_NS_PER_TAP + 2 * OPENCV_NS_PER_OUTPUT)
            return OPENCV_FIXED_NS + work + planes * OPENCV_NS_PER_CALL
        # Non-zero taps of each z slice: a single tap is an in-place add of its plane, more an OpenCV
        # call (the first writes the output plane, each further one a scratch plane then added).
        slices = [int(n) for n in kernel.reshape(kernel.shape[0], taps[0], -1).any(axis=0).sum(axis=1) if n]
        calls = [n for n in slices if n > 1]
        per_output = (PLANE_NS_PER_OUTPUT + PLANE_NS_PER_PASS * (len(slices) - 1 + max(0, len(calls) - 1))
                      + sum(PLANE_NS_PER_FILTER + n * PLANE_NS_PER_TAP for n in calls))
        return OPENCV_FIXED_NS + outputs * per_output + planes * len(slices) * PLANE_NS_PER_CALL
    native = all(p.stride == 1 and p.dilation == 1 and p.before + p.after == p.taps - 1 for p in plans)
    if compiled.full_then_subsample(plans, nonzero):
        # one native call at full resolution, then every stride-th sample
        full = padded / max(1, math.prod(p.padded for p in plans)) * math.prod(
            p.length for p in plans)
        return OPENCV_FIXED_NS + full * (nonzero * OPENCV_NS_PER_TAP + OPENCV_NS_PER_OUTPUT) + outputs + (
            lanes * OPENCV_NS_PER_CALL)
    # Strides split the work into phases (a quarter each for stride 2 in 2-D); dilation only regroups it.
    phases = math.prod(min(p.taps, p.stride) if p.stride > 1 else 1 for p in plans)
    if op == "box":
        work = outputs * phases * OPENCV_NS_PER_OUTPUT * 2
    elif op == "separable":
        work = outputs * (sum(taps) * OPENCV_NS_PER_TAP + phases * OPENCV_NS_PER_OUTPUT)
    elif op == "dft":
        work = _fft_cost(padded, plans) * 1.5
    else:
        per_phase = nonzero / max(1, math.prod(p.stride for p in plans))
        work = outputs * phases * (per_phase * OPENCV_NS_PER_TAP + OPENCV_NS_PER_OUTPUT)
    copies = 0 if native else padded * DIRECT_NS_PER_OUTPUT * (2 if phases > 1 or not native else 1)
    calls = lanes * phases * math.prod(p.dilation for p in plans)
    return OPENCV_FIXED_NS + work + copies + calls * OPENCV_NS_PER_CALL


def _is_constant(kernel: np.ndarray) -> bool:
    flat = kernel.reshape(kernel.shape[0], -1)
    return bool(np.all(flat == flat[:, :1]) and np.all(flat[:, 0] != 0))


def _is_one_tap(taps) -> bool:
    return math.prod(taps) == 1


def _separable_work(plans: tuple[AxisPlan, ...]) -> int:
    shape = [p.padded for p in plans]
    work = 0
    for axis in _pass_order(plans):
        shape[axis] = plans[axis].out
        work += plans[axis].taps * math.prod(shape)
    return work


def _pass_order(plans: tuple[AxisPlan, ...]) -> list[int]:
    # Shrink first: the axis with the largest stride reduces the work of every later pass.
    return sorted(range(len(plans)), key=lambda a: -plans[a].stride)
