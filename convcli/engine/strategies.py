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

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from ..parallel import thread_count
from . import compiled
from .geometry import AxisPlan

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


# A kernel's factorisations are asked for again and again: by the cost model and then the strategy, by
# every band of a photo, by every call of a loop over frames or files.  The last few are kept, keyed by
# the weights themselves (larger kernels are factored afresh: their bytes would make a costly key).
FACTOR_CACHE_SIZE = 64
FACTOR_CACHE_WEIGHTS = 1 << 16
_FACTOR_CACHE: dict = {}


def _cached(factor):
    """``factor(kernel)`` remembered for the last FACTOR_CACHE_SIZE kernels (results read-only)."""
    import functools

    @functools.wraps(factor)
    def lookup(kernel):
        kernel = np.asarray(kernel, dtype=np.float64)
        if kernel.size > FACTOR_CACHE_WEIGHTS:
            return factor(kernel)
        key = (factor.__name__, kernel.shape, kernel.tobytes())
        found = _FACTOR_CACHE.get(key, _FACTOR_CACHE)
        if found is _FACTOR_CACHE:
            found = _read_only(factor(kernel))
            if len(_FACTOR_CACHE) >= FACTOR_CACHE_SIZE:
                _FACTOR_CACHE.pop(next(iter(_FACTOR_CACHE)), None)  # the oldest
            _FACTOR_CACHE[key] = found
        return None if found is None else list(found)
    return lookup


def _read_only(found):
    if isinstance(found, np.ndarray):
        found.setflags(write=False)
    elif isinstance(found, list):
        for item in found:
            _read_only(item)
    return found


@_cached
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


@_cached
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
    work: object = field(default=None, repr=False)  # what the estimates read (a costs.Work), for bench/fit_costs.py
    # The library a faster method would have imported, and the ns it would have saved on this call (its import
    # left out): what the caller adds to that library's credit (costs.import_cost).
    forgone: tuple[str, float] | None = None

    def reason(self) -> str:
        """The method and why: forced, and/or the estimated milliseconds of every candidate, cheapest first."""
        if not self.costs:
            return f"{self.method} (forced)"
        ranked = ", ".join(f"{m} {c / 1e6:.3g}" for m, c in sorted(self.costs.items(), key=lambda kv: kv[1]))
        paid = "" if self.forced or min(self.costs, key=self.costs.get) == self.method else (
            "; its library's import paid by what earlier calls gave up without it")
        return f"{self.method} ({'forced; ' if self.forced else ''}estimated ms: {ranked}{paid})"


def choose_method(
    lanes: int, kernel: np.ndarray, plans: tuple[AxisPlan, ...], *, finite: bool = True, opencv: bool = False,
    trail: int = 1, x_dtype="float32", itemsize: int = 4, border_native: bool = True,
    imported: frozenset = frozenset(), credit: dict | None = None,
) -> Choice:
    """Pick the cheapest strategy for ``lanes`` independent (batch x channel) signals.

    A pure function of shapes, weights, types and what is installed
    (``opencv``) or already imported (``imported``: OpenCV's and scipy.fft's
    import costs count only before their first use, less the ``credit`` of
    nanoseconds earlier calls gave up by not importing them:
    :func:`convcli.engine.costs.import_cost`), so it can be tested and
    shown by ``--explain`` without touching data.  ``trail`` of the
    lanes are channels laid after the spatial axes, ``x_dtype`` the
    samples' type, ``itemsize`` the compute type's, ``border_native``
    whether OpenCV pads this border itself.  Methods that spread a NaN or
    infinity beyond its neighbourhood (FFT, running sums, matrix products,
    OpenCV's box filter and DFT) are never picked when ``finite`` is false.
    The costs are estimated nanoseconds (:mod:`.costs`).
    """
    from .costs import Work, estimate

    taps = kernel.shape[1:]
    nd = len(plans)
    support = np.any(kernel != 0, axis=0)
    nonzero = max(int(np.count_nonzero(support)), 1)
    factors = channel_factors(kernel) if nd > 1 else None
    constant = _is_constant(kernel)
    terms = 0
    if finite and nd > 1 and factors is None and nonzero > 2 * sum(taps) and lowrank_affordable(kernel.shape):
        terms = len(channel_terms(kernel))
    slices = tuple(int(n) for n in support.reshape(taps[0], -1).sum(axis=1)) if nd == 3 else ()
    work = Work(lanes=lanes, trail=max(1, trail), plans=tuple(plans), taps=tuple(taps), nonzero=nonzero,
                itemsize=itemsize, x_dtype=np.dtype(x_dtype).name, separable=factors is not None, terms=terms,
                constant=constant, shared=kernel.shape[0] == 1, border_native=border_native,
                threads=thread_count(), slices=slices, loaded=frozenset(imported),
                credit=tuple(sorted((credit or {}).items())))
    candidates = ["direct"]
    if factors is not None and not _is_one_tap(taps):
        candidates.append("separable")
    if finite:
        if terms and terms * sum(taps) < nonzero:
            candidates.append("lowrank")
        if constant and not _is_one_tap(taps):
            candidates.append("box")
        if nd == 1 and taps[0] > 1:
            candidates.append("toeplitz")
        candidates.append("fft")
    local = set()
    if opencv and nd >= 2:  # 1-D through OpenCV is a one-sample-wide image: slow, so only when forced
        compute = np.float32 if itemsize == 4 else np.float64
        op = compiled.operation(kernel, plans, factors is not None, compute)
        if nd == 3 and op in ("box", "dft"):
            op = "filter" if factors is None else "separable"
        if nd == 3 and op == "filter" and taps[1] * taps[2] >= compiled.dft_taps(compute):
            op = "dft"  # each z slice goes through filter2D, which takes a DFT for slices this large
        if compiled.keeps_non_finite_local(op, factors):
            local.add("opencv")
        if finite or "opencv" in local:
            candidates.append("opencv")
    # Decided with the credit; shown at the full price of the imports, which depends on what is loaded
    # only (not on the calls this process made before): a batch's records read the same on any worker.
    paid = {method: estimate(method, work) for method in candidates}
    best = min(paid, key=paid.get)
    costs = paid if not work.credit else {
        method: estimate(method, dataclasses.replace(work, credit=())) for method in candidates}
    spreads = best in SPREADS_NON_FINITE and best not in local
    return Choice(best, costs, factors is not None, spreads, work=work, forgone=_forgone(best, paid, work))


def _forgone(best: str, costs: dict, work) -> tuple[str, float] | None:
    """The library whose import kept a faster method out of this choice, and what it would have saved."""
    from .costs import LIBRARIES, estimate, features

    if len(work.loaded) == len(LIBRARIES):
        return None
    everything = dataclasses.replace(work, loaded=frozenset(LIBRARIES.values()))
    loaded = {method: estimate(method, everything) for method in costs}
    fastest = min(loaded, key=loaded.get)
    if fastest == best:
        return None
    library = next(LIBRARIES[u] for u, n in features(fastest, work).items() if u in LIBRARIES and n)
    return library, costs[best] - loaded[fastest]


def _is_constant(kernel: np.ndarray) -> bool:
    flat = kernel.reshape(kernel.shape[0], -1)
    return bool(np.all(flat == flat[:, :1]) and np.all(flat[:, 0] != 0))


def _is_one_tap(taps) -> bool:
    return math.prod(taps) == 1
