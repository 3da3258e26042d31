"""The ways to compute a padded, strided, dilated correlation, and the choice between them.

Every strategy takes the already padded input ``xp`` laid out as
``(batch, channels, *spatial)``, a kernel ``(1 or channels, *taps)`` and the
per-axis plans, and returns ``(batch, channels, *out)``: the valid
correlation sampled every ``stride`` samples.  They agree to float tolerance
and test each other.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .geometry import AxisPlan

METHODS = ("auto", "direct", "separable", "fft")

# Relative tolerance under which a kernel counts as exactly rank 1.
SEPARABLE_RTOL = 1e-7

# Cost-model weights, in units of one multiply-add of the direct method
# (numpy's vectorised shift-and-add).  An FFT sample costs about this many
# multiply-adds per log2 of the transform size, forward and back together.
FFT_COST_PER_LOG = 1.0
FFT_FIXED_COST = 2.0e5


# --------------------------------------------------------------------------- direct
def direct(xp: np.ndarray, kernel: np.ndarray, plans: tuple[AxisPlan, ...]) -> np.ndarray:
    """Shift-and-add: one strided view of ``xp`` per non-zero tap.

    Only the output samples the stride keeps are ever computed.
    """
    batch, channels = xp.shape[:2]
    out_shape = (batch, channels) + tuple(p.out for p in plans)
    per_channel = kernel.shape[0] > 1
    out = None
    scratch = None
    for tap in np.ndindex(*kernel.shape[1:]):
        weights = kernel[(slice(None),) + tap]
        if not weights.any():
            continue  # skipping zero taps keeps a NaN inside its receptive field
        window = tuple(
            slice(t * p.dilation, t * p.dilation + (p.out - 1) * p.stride + 1, p.stride)
            for t, p in zip(tap, plans)
        )
        view = xp[(slice(None), slice(None)) + window]
        w = weights.reshape((1, channels) + (1,) * len(plans)) if per_channel else weights[0]
        if out is None:
            out = np.multiply(view, w, dtype=xp.dtype)
            continue
        if scratch is None:
            scratch = np.empty(out_shape, dtype=xp.dtype)
        np.multiply(view, w, out=scratch)
        out += scratch
    if out is None:  # an all-zero kernel
        out = np.zeros(out_shape, dtype=xp.dtype)
    return out


# --------------------------------------------------------------------------- separable
def rank1_factors(kernel: np.ndarray, rtol: float = SEPARABLE_RTOL) -> list[np.ndarray] | None:
    """Factor an N-D kernel into one 1-D vector per axis, or ``None`` if it is not rank 1.

    Works by repeated SVD of the unfolding along the first axis; the result is
    accepted only if its outer product reproduces the kernel to ``rtol`` times
    the kernel's norm.
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    norm = np.linalg.norm(kernel)
    if norm == 0 or kernel.ndim == 0:
        return None
    factors = []
    rest = kernel
    while rest.ndim > 1:
        u, s, vt = np.linalg.svd(rest.reshape(rest.shape[0], -1), full_matrices=False)
        if s.size > 1 and s[1] > rtol * s[0]:
            return None
        factors.append(u[:, 0] * s[0])
        rest = vt[0].reshape(rest.shape[1:])
    factors.append(rest)
    rebuilt = factors[0]
    for f in factors[1:]:
        rebuilt = np.multiply.outer(rebuilt, f)
    if np.linalg.norm(rebuilt - kernel) > rtol * norm:
        return None
    return factors


def channel_factors(kernel: np.ndarray) -> list[np.ndarray] | None:
    """Rank-1 factors of a ``(channels, *taps)`` kernel: one ``(channels, taps_a)`` array per axis."""
    per_channel = [rank1_factors(k) for k in kernel]
    if any(f is None for f in per_channel):
        return None
    return [np.stack([f[axis] for f in per_channel]) for axis in range(kernel.ndim - 1)]


def separable(xp: np.ndarray, factors: list[np.ndarray], plans: tuple[AxisPlan, ...]) -> np.ndarray:
    """One 1-D direct pass per axis, each already applying that axis's stride."""
    current = xp
    ndim = len(plans)
    for axis in _pass_order(plans):
        shape = current.shape[2:]
        pass_plans = tuple(
            plans[a] if a == axis else AxisPlan(shape[a], 1, 1, 1, 0, 0, shape[a]) for a in range(ndim)
        )
        taps = factors[axis]
        kernel = taps.reshape((taps.shape[0],) + tuple(taps.shape[1] if a == axis else 1 for a in range(ndim)))
        current = direct(current, kernel.astype(xp.dtype), pass_plans)
    return current


def _pass_order(plans: tuple[AxisPlan, ...]) -> list[int]:
    # Shrink first: the axis with the largest stride reduces the work of every later pass.
    return sorted(range(len(plans)), key=lambda a: -plans[a].stride)


# --------------------------------------------------------------------------- fft
def fft(xp: np.ndarray, kernel: np.ndarray, plans: tuple[AxisPlan, ...], workers: int | None = None) -> np.ndarray:
    """FFT convolution with the dilated, flipped kernel; then the stride is applied."""
    from scipy import signal

    ndim = len(plans)
    dilated = dilate(kernel, tuple(p.dilation for p in plans))
    flipped = dilated[(slice(None),) + (slice(None, None, -1),) * ndim][None]
    axes = tuple(range(2, 2 + ndim))
    full = signal.fftconvolve(xp, flipped.astype(xp.dtype), mode="valid", axes=axes)
    keep = tuple(slice(0, (p.out - 1) * p.stride + 1, p.stride) for p in plans)
    return np.ascontiguousarray(full[(slice(None), slice(None)) + keep], dtype=xp.dtype)


def dilate(kernel: np.ndarray, dilation: tuple[int, ...]) -> np.ndarray:
    """Insert ``d - 1`` zeros between the taps of each spatial axis of a ``(channels, *taps)`` kernel."""
    if all(d == 1 for d in dilation):
        return kernel
    shape = (kernel.shape[0],) + tuple(d * (k - 1) + 1 for k, d in zip(kernel.shape[1:], dilation))
    out = np.zeros(shape, dtype=kernel.dtype)
    out[(slice(None),) + tuple(slice(None, None, d) for d in dilation)] = kernel
    return out


# --------------------------------------------------------------------------- choice
@dataclass(frozen=True)
class Choice:
    """The method picked for a correlation, and the estimated cost of each candidate."""

    method: str
    costs: dict[str, float]
    separable: bool

    def reason(self) -> str:
        ranked = ", ".join(f"{m} {c:.3g}" for m, c in sorted(self.costs.items(), key=lambda kv: kv[1]))
        return f"{self.method} (estimated multiply-adds: {ranked})"


def choose_method(
    lanes: int, kernel: np.ndarray, plans: tuple[AxisPlan, ...], *, finite: bool = True
) -> Choice:
    """Pick the cheapest strategy for ``lanes`` independent (batch x channel) signals.

    A pure function of shapes and weights, so it can be tested and shown by
    ``--explain`` without touching data.  FFT is never picked for an input
    holding NaN or infinity: it would smear them over the whole result.
    """
    taps = kernel.shape[1:]
    outputs = math.prod(p.out for p in plans)
    nonzero = int(np.count_nonzero(np.any(kernel != 0, axis=0)))
    costs = {"direct": float(lanes * max(nonzero, 1) * outputs)}
    factors = channel_factors(kernel) if len(plans) > 1 and not _is_one_tap(taps) else None
    if factors is not None:
        costs["separable"] = float(lanes * _separable_work(plans))
    padded = math.prod(p.before + p.length + p.after for p in plans)
    if finite:
        costs["fft"] = lanes * padded * FFT_COST_PER_LOG * math.log2(max(padded, 2)) * 2 + FFT_FIXED_COST
    best = min(costs, key=costs.get)
    return Choice(best, costs, factors is not None)


def _is_one_tap(taps) -> bool:
    return math.prod(taps) == 1


def _separable_work(plans: tuple[AxisPlan, ...]) -> int:
    shape = [p.before + p.length + p.after for p in plans]
    work = 0
    for axis in _pass_order(plans):
        shape[axis] = plans[axis].out
        work += plans[axis].taps * math.prod(shape)
    return work
