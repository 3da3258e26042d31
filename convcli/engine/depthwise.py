"""Depthwise "same" correlation of image batches: the per-channel layer of a convolutional network.

:func:`correlate` with ``channel_axis`` and a ``(C, k, k)`` kernel computes the
same thing for any border and geometry.  This entry point serves the one case
a CNN runs hundreds of times per image, zero border and TensorFlow's "same"
rule, on a whole ``(N, C, H, W)`` or ``(N, H, W, C)`` batch, with the bias added
and the result written into a caller's buffer, and picks the fastest of two
strategies by layout (measured on EfficientNet-Lite0's layers, 2 cores,
batch 1):

- ``opencv`` (channels-first): one ``filter2D`` call per channel plane, its
  zero border and anchor standing in for the padding and the bias passed as
  its ``delta``; no padded copy.  Fast on large maps (144 channels of 56x56,
  3x3: 0.8 ms against 3.3 ms of shift-and-add), slow on many small ones,
  where the ~7 us per call dominates (1152 channels of 7x7: 8 ms).
- ``shiftadd``: one strided view of the zero-padded input per tap, scaled by
  every channel's weight at once and summed.  Channels-last keeps the
  channel axis innermost, so every multiply-add runs over contiguous
  channels: 1152 channels of 7x7, 5x5, in 0.7 ms.

Stride ``s`` with OpenCV filters at full resolution and keeps every ``s``-th
sample (the anchor places the "same" padding); on the large maps where OpenCV
is chosen that still beats shift-and-add.
"""
from __future__ import annotations

import numpy as np

from ..errors import ParameterError
from . import compiled
from .geometry import plan_axes

DEPTHWISE_METHODS = ("auto", "opencv", "shiftadd")


def depthwise_same(x, weight, *, stride=1, bias=None, channels_last=False, method="auto", out=None) -> np.ndarray:
    """Correlate every channel of an image batch with its own kernel, zero border, "same" output size.

    Parameters
    ----------
    x : numpy.ndarray
        ``(N, C, H, W)``, or ``(N, H, W, C)`` with ``channels_last``; computed in float32.
    weight : numpy.ndarray
        ``(C, kh, kw)``: channel ``c`` is correlated with ``weight[c]``.
    stride : int or (int, int)
        Output step on the rows and columns; "same" gives ``ceil(n / stride)`` samples.
    bias : numpy.ndarray, optional
        ``(C,)``, added to every output sample of its channel.
    channels_last : bool
        Whether the channel axis is last (NHWC) instead of second (NCHW).
    method : {"auto", "opencv", "shiftadd"}
        ``opencv`` needs channels-first input and OpenCV installed; ``auto``
        uses it for channels-first maps when it is there, shift-and-add otherwise.
    out : numpy.ndarray, optional
        A C-contiguous float32 array of the output shape to write into.

    Returns
    -------
    numpy.ndarray
        ``out``, or a new float32 array, laid out like ``x``.
    """
    x = np.asarray(x)
    weight = np.asarray(weight, dtype=np.float32)
    if x.ndim != 4:
        raise ParameterError(f"must be a batch of images with 4 axes, got shape {x.shape}", subject="x")
    channels = x.shape[3] if channels_last else x.shape[1]
    if weight.ndim != 3 or weight.shape[0] != channels:
        raise ParameterError(f"must have shape ({channels}, kh, kw) for this input, got {weight.shape}",
                             subject="weight")
    if method not in DEPTHWISE_METHODS:
        raise ParameterError(f"must be one of {', '.join(DEPTHWISE_METHODS)}, got {method!r}", subject="method")
    spatial = x.shape[1:3] if channels_last else x.shape[2:]
    axes = plan_axes(spatial, weight.shape[1:], stride=stride, padding="same")
    shape = (x.shape[0],) + ((axes[0].out, axes[1].out, channels) if channels_last else
                             (channels, axes[0].out, axes[1].out))
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ParameterError(f"must be a C-contiguous float32 array of shape {shape}", subject="out")
    bias = np.zeros(channels, np.float32) if bias is None else np.asarray(bias, dtype=np.float32).reshape(channels)
    x = np.ascontiguousarray(x, dtype=np.float32)
    opencv = compiled.available() and weight[0].size < compiled.DFT_TAPS
    if method == "opencv":
        if channels_last:
            raise ParameterError("opencv filters channels-first (N, C, H, W) input; use shiftadd", subject="method")
        if not opencv:
            raise ParameterError("OpenCV is not installed (pip install opencv-python-headless); use shiftadd",
                                 subject="method")
    if method == "opencv" or (method == "auto" and opencv and not channels_last):
        return _opencv(x, weight, bias, axes, out)
    return _shiftadd(x, weight, bias, axes, channels_last, out)


def _opencv(x, weight, bias, axes, out) -> np.ndarray:
    cv2 = compiled._cv2()
    ry, rx = axes
    strided = ry.stride > 1 or rx.stride > 1
    # OpenCV's output has the input's size: the "same" padding becomes the
    # anchor (the kernel tap over the output sample), the border zeros.
    anchor = (rx.before, ry.before)
    full = np.empty(x.shape[2:], dtype=np.float32) if strided else None
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            if strided:
                cv2.filter2D(x[n, c], -1, weight[c], dst=full, anchor=anchor, delta=float(bias[c]),
                             borderType=cv2.BORDER_CONSTANT)
                out[n, c] = full[::ry.stride, ::rx.stride]
            else:
                cv2.filter2D(x[n, c], -1, weight[c], dst=out[n, c], anchor=anchor, delta=float(bias[c]),
                             borderType=cv2.BORDER_CONSTANT)
    return out


def _shiftadd(x, weight, bias, axes, channels_last, out) -> np.ndarray:
    ry, rx = axes
    kh, kw = weight.shape[1:]
    # Padded just far enough for the samples the stride keeps.
    rows, cols = (ry.out - 1) * ry.stride + kh, (rx.out - 1) * rx.stride + kw
    h, w = min(ry.length, rows - ry.before), min(rx.length, cols - rx.before)
    if channels_last:
        padded = np.zeros((x.shape[0], rows, cols, x.shape[3]), dtype=np.float32)
        padded[:, ry.before:ry.before + h, rx.before:rx.before + w] = x[:, :h, :w]
        taps = np.ascontiguousarray(weight.transpose(1, 2, 0))  # (kh, kw, C): one row of channel weights per tap
        np.copyto(out, bias)

        def view(i, j):
            return padded[:, i:i + rows - kh + 1:ry.stride, j:j + cols - kw + 1:rx.stride]
    else:
        padded = np.zeros(x.shape[:2] + (rows, cols), dtype=np.float32)
        padded[:, :, ry.before:ry.before + h, rx.before:rx.before + w] = x[:, :, :h, :w]
        taps = weight.transpose(1, 2, 0)[..., None, None]  # (kh, kw, C, 1, 1)
        np.copyto(out, bias[:, None, None])

        def view(i, j):
            return padded[:, :, i:i + rows - kh + 1:ry.stride, j:j + cols - kw + 1:rx.stride]
    scratch = np.empty_like(out)
    for i in range(kh):
        for j in range(kw):
            np.multiply(view(i, j), taps[i, j], out=scratch)
            np.add(out, scratch, out=out)
    return out
