"""How a signal's sampling grid is described, and how stride changes that description.

When a filter keeps every s-th sample, the samples that remain are s times
further apart: the audio rate is divided by s, voxel sizes and pixel sizes are
multiplied by s, DPI is divided by s, and a NIfTI affine's columns are scaled
(with its origin moved to where output sample 0 sits in the input).
"""
from __future__ import annotations


def restride(sig, strides: tuple[int, ...], origin=None) -> None:
    """Update `sig`'s rate, spacing, DPI, resolution and affine in place for per-axis `strides`.

    Parameters
    ----------
    sig : Signal
        The output signal, still carrying the input's description.
    strides : tuple of int
        One stride per spatial axis, in the order of ``sig.data``'s spatial axes.
    origin : sequence of float, optional
        Per spatial axis, the input index at which output sample 0 sits.
    """
    import numpy as np

    strides = tuple(int(s) for s in strides)
    if sig.sample_rate is not None and len(strides) == 1:
        sig.sample_rate = sig.sample_rate / strides[0]
    if sig.spacing is not None and len(sig.spacing) == len(strides):
        sig.spacing = tuple(float(d) * s for d, s in zip(sig.spacing, strides))
    dpi = sig.meta.get("dpi")
    if dpi is not None and len(strides) == 2:
        # DPI is (horizontal, vertical); the spatial axes are (rows, columns).
        sig.meta["dpi"] = (float(dpi[0]) / strides[1], float(dpi[1]) / strides[0])
    resolution = sig.meta.get("resolution")
    if resolution is not None and len(strides) >= 2:
        # A TIFF's resolution as the file states it (rationals): the stride goes into the denominators.
        (xn, xd), (yn, yd), unit = resolution
        sig.meta["resolution"] = ((xn, xd * strides[-1]), (yn, yd * strides[-2]), unit)
    affine = sig.meta.get("affine")
    if affine is not None:
        sig.meta["affine"] = strided_affine(np.asarray(affine, dtype=np.float64), strides, origin)


def strided_affine(affine, strides, origin=None):
    """The voxel-to-world affine of a grid sampled every `strides` voxels from `origin`.

    Output voxel ``j`` is input voxel ``origin + j * stride`` on each axis, so
    the new affine is ``A @ [[diag(strides), origin], [0, 1]]``.

    >>> import numpy as np
    >>> strided_affine(np.diag([2.0, 2.0, 3.0, 1.0]), (2, 2, 1), (0.5, 0.5, 0))[:3].tolist()
    [[4.0, 0.0, 0.0, 1.0], [0.0, 4.0, 0.0, 1.0], [0.0, 0.0, 3.0, 0.0]]
    """
    import numpy as np

    n = len(strides)
    step = np.eye(4)
    for axis in range(min(n, 3)):
        step[axis, axis] = strides[axis]
        if origin is not None:
            step[axis, 3] = float(origin[axis])
    return np.asarray(affine, dtype=np.float64) @ step
