"""A literal, loop-by-loop definition of padded, strided, dilated correlation.

Written from the definitions in the README and independent of the engine (no
numpy.pad, no slicing tricks), so the engine can be checked against it on tiny
inputs.
"""
from __future__ import annotations

import itertools
import math

import numpy as np


def source_index(i: int, n: int, mode: str) -> int | None:
    """Where padded position ``i`` (``0 <= i < n`` is inside) reads from; None for a constant."""
    if 0 <= i < n:
        return i
    if mode in ("zeros", "constant"):
        return None
    if mode == "replicate":
        return 0 if i < 0 else n - 1
    if mode == "circular":
        return i % n
    if mode == "reflect":  # d c b | a b c d | c b a : period 2(n-1)
        if n == 1:
            return 0
        j = i % (2 * n - 2)
        return j if j < n else 2 * n - 2 - j
    if mode == "symmetric":  # c b a | a b c d | d c b : period 2n
        j = i % (2 * n)
        return j if j < n else 2 * n - 1 - j
    raise ValueError(mode)


def axis_geometry(n: int, k: int, s: int, d: int, padding) -> tuple[int, int]:
    """(pad before, output length) from the PyTorch and TensorFlow rules."""
    span = d * (k - 1) + 1
    if padding == "same":
        out = math.ceil(n / s)
        total = max((out - 1) * s + span - n, 0)
        return total // 2, out
    p = {"valid": 0, "full": span - 1}.get(padding, padding)
    return p, (n + 2 * p - span) // s + 1


def correlate_loops(x, kernel, stride, dilation, padding, mode, cval=0.0):
    """out[o] = sum_j kernel[j] * xpad[o * stride + j * dilation], every index written out."""
    x = np.asarray(x, dtype=np.float64)
    kernel = np.asarray(kernel, dtype=np.float64)
    nd = kernel.ndim
    geo = [
        axis_geometry(x.shape[a], kernel.shape[a], stride[a], dilation[a], padding[a] if isinstance(padding, tuple) else padding)
        for a in range(nd)
    ]
    out = np.zeros([o for _, o in geo])
    for o in itertools.product(*[range(n) for n in out.shape]):
        acc = 0.0
        for j in itertools.product(*[range(k) for k in kernel.shape]):
            src = []
            for a in range(nd):
                pos = o[a] * stride[a] + j[a] * dilation[a] - geo[a][0]
                src.append(source_index(pos, x.shape[a], mode))
            value = cval if None in src else x[tuple(src)]
            acc += kernel[j] * value
        out[o] = acc
    return out
