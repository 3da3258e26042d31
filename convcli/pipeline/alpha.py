"""Transparency: how a chain of kernels treats an image's alpha channel (``--alpha``).

- ``premultiply`` multiplies colour by alpha, filters every channel, then
  divides by the filtered alpha, so transparent pixels never bleed their
  colour into the result and edges soften;
- ``keep`` filters the colour only and moves alpha onto the output grid
  unchanged;
- ``channel`` filters alpha like a colour (no special handling: the chain
  runs on all channels, so this module is not involved).
"""
from __future__ import annotations

import numpy as np


def has_alpha(signal) -> bool:
    """Whether the signal's last channel is alpha (and there is colour beside it)."""
    return bool(signal.meta.get("alpha")) and signal.channel_axis is not None and signal.data.shape[-1] >= 2


def full_scale(dtype) -> float:
    """The value of an opaque alpha sample: 255, 65535, or 1.0 for float samples."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0


def filter_with_alpha(x: np.ndarray, mode: str, precision: str | None, run_chain, keep_grid):
    """Filter colour and alpha of ``x`` (alpha last) under ``premultiply`` or ``keep``.

    ``run_chain(samples)`` runs the kernels on samples it may overwrite;
    ``keep_grid(alpha)`` moves alpha onto the output grid unchanged.
    """
    work = np.float64 if x.dtype == np.float64 or precision == "float64" else np.float32
    full = full_scale(x.dtype)
    colour = x[..., :-1].astype(work)
    alpha = x[..., -1:].astype(work)
    if mode == "premultiply":
        filtered = run_chain(np.concatenate([colour * (alpha / full), alpha], axis=-1))
        return unpremultiply(filtered, full)
    colour = run_chain(colour)
    return np.concatenate([colour, keep_grid(alpha)], axis=-1).astype(colour.dtype)


def unpremultiply(filtered: np.ndarray, full: float) -> np.ndarray:
    """Divide filtered premultiplied colour by the filtered alpha (last channel).

    Where the filtered alpha is below half a step (fully transparent), the
    colour is 0: transparent pixels never bleed their colour into the result.
    """
    alpha = filtered[..., -1:]
    weight = alpha / full
    colour = np.zeros_like(filtered[..., :-1])
    half_step = 0.5 if full > 1 else 0.5 / 255
    np.divide(filtered[..., :-1], weight, out=colour, where=alpha > half_step)
    return np.concatenate([colour, alpha], axis=-1)
