"""Depthwise "same" correlation of image batches: the per-channel layer of a convolutional network.

:func:`correlate` with ``channel_axis`` and a ``(C, k, k)`` kernel computes the
same thing for any border and geometry.  This entry point serves the one case
a CNN runs hundreds of times per image, zero border and TensorFlow's "same"
rule, on a whole ``(N, C, H, W)`` or ``(N, H, W, C)`` batch, with the bias added
and the result written into a caller's buffer.  :func:`plan_depthwise` does
the per-shape work once (geometry, strategy, laid-out weights) and the
:class:`DepthwisePlan` it returns runs it; :func:`depthwise_same` is the
one-call form.  The strategy is picked by layout (measured on
EfficientNet-Lite0's layers, 2 cores, batch 1):

- ``opencv`` (channels-first): one ``filter2D`` call per channel plane, its
  zero border and anchor standing in for the padding and the bias passed as
  its ``delta``; no padded copy.  Fast on large maps (144 channels of 56x56,
  3x3: 0.8 ms against 3.3 ms of shift-and-add), slow on many small ones,
  where the ~7 us per call dominates (1152 channels of 7x7: 8 ms).
- ``opencv`` (channels-last, stride 1): every image is a matrix of rows
  ``W * C`` long, and each tap one ``accumulateProduct`` (a fused
  multiply-add) of the input shifted by the tap into the output, over the
  rectangle where the shifted input exists (so no padded copy), against the
  tap's channel weights repeated along a few rows: 672 channels of 14x14,
  5x5, in 1.0 ms against 1.8 ms of shift-and-add.
- ``shiftadd``: one strided view of the zero-padded input per tap, scaled by
  every channel's weight at once and summed.  Channels-last keeps the
  channel axis innermost, so every multiply-add runs over contiguous
  channels: 1152 channels of 7x7, 5x5, in 0.7 ms.  It serves every case
  and is the reference the OpenCV paths are tested against.

Stride ``s`` with OpenCV filters at full resolution and keeps every ``s``-th
sample (the anchor places the "same" padding); on the large maps where OpenCV
is chosen that still beats shift-and-add.

:func:`same_patches` gathers the patch matrix of a dense convolution under
the same geometry, for layers that mix channels (a CNN's stem) by one
matrix product.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from . import compiled
from .geometry import AxisPlan, plan_axes

DEPTHWISE_METHODS = ("auto", "opencv", "shiftadd")

# Output rows per accumulateProduct call on channels-last maps: the weight
# rows are tiled this deep (measured: 1 row 1.18 ms, 2 rows 1.06, 4 rows 0.98
# on 672 channels of 14x14, 5x5; the whole network 23.8, 22.8, 22.7 ms).  Two
# rows: the tiles of Lite0 then take 11 MB, and building them at the first
# call 5 ms.
_ROWS = 2


@dataclass(frozen=True, eq=False)
class DepthwisePlan:
    """A depthwise layer made ready for one input shape: geometry, strategy and laid-out weights.

    Call it on an input of ``x_shape`` (optionally with ``out=``) to run it.
    """

    x_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    channels_last: bool
    axes: tuple[AxisPlan, ...]
    method: str  # "opencv" or "shiftadd"
    weight: np.ndarray  # (C, kh, kw) float32
    bias: np.ndarray  # (C,) float32
    tiles: np.ndarray | None  # channels-last OpenCV: (kh, kw, rows, W * C), tap weights repeated per pixel
    threads: int = 1  # OpenCV: channel planes (channels-first) or output rows (channels-last) shared this many ways

    def __call__(self, x, out=None) -> np.ndarray:
        x = np.asarray(x)
        if x.shape != self.x_shape:
            raise ParameterError(f"has shape {x.shape}; this plan is for {self.x_shape}", subject="x")
        if out is None:
            out = np.empty(self.out_shape, dtype=np.float32)
        elif out.shape != self.out_shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ParameterError(f"must be a C-contiguous float32 array of shape {self.out_shape}", subject="out")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.method == "shiftadd":
            return _shiftadd(x, self.weight, self.bias, self.axes, self.channels_last, out)
        if self.channels_last:
            run = lambda lo, hi: _opencv_channels_last(x, self.tiles, self.bias, self.axes, out, lo, hi)  # noqa: E731
            _shared(run, self.out_shape[1], self.threads)
        else:
            run = lambda lo, hi: _opencv(x, self.weight, self.bias, self.axes, out, lo, hi)  # noqa: E731
            _shared(run, self.out_shape[1], self.threads)
        return out


def plan_depthwise(x_shape, weight, *, stride=1, bias=None, channels_last=False, method="auto",
                   threads=1) -> DepthwisePlan:
    """Plan a per-channel, zero-border, "same"-size correlation of image batches of ``x_shape``.

    Parameters
    ----------
    x_shape : tuple of int
        ``(N, C, H, W)``, or ``(N, H, W, C)`` with ``channels_last``.
    weight : numpy.ndarray
        ``(C, kh, kw)``: channel ``c`` is correlated with ``weight[c]``.
    stride : int or (int, int)
        Output step on the rows and columns; "same" gives ``ceil(n / stride)`` samples.
    bias : numpy.ndarray, optional
        ``(C,)``, added to every output sample of its channel.
    channels_last : bool
        Whether the channel axis is last (NHWC) instead of second (NCHW).
    method : {"auto", "opencv", "shiftadd"}
        ``opencv`` needs OpenCV, and stride 1 on channels-last input;
        ``auto`` uses it wherever it can, shift-and-add elsewhere.
    threads : int
        Threads sharing an OpenCV layer (OpenCV releases the interpreter);
        a layer of fewer than ~1/4 million multiply-adds runs on one, since
        handing work over costs ~30 us.
    """
    x_shape = tuple(int(n) for n in x_shape)
    weight = np.ascontiguousarray(weight, dtype=np.float32)
    if len(x_shape) != 4:
        raise ParameterError(f"must be a batch of images with 4 axes, got shape {x_shape}", subject="x")
    channels = x_shape[3] if channels_last else x_shape[1]
    if weight.ndim != 3 or weight.shape[0] != channels:
        raise ParameterError(f"must have shape ({channels}, kh, kw) for this input, got {weight.shape}",
                             subject="weight")
    if method not in DEPTHWISE_METHODS:
        raise ParameterError(f"must be one of {', '.join(DEPTHWISE_METHODS)}, got {method!r}", subject="method")
    spatial = x_shape[1:3] if channels_last else x_shape[2:]
    axes = plan_axes(spatial, weight.shape[1:], stride=stride, padding="same")
    out_shape = (x_shape[0],) + ((axes[0].out, axes[1].out, channels) if channels_last else
                                 (channels, axes[0].out, axes[1].out))
    bias = np.zeros(channels, np.float32) if bias is None else np.asarray(bias, dtype=np.float32).reshape(channels)
    opencv = compiled.available() and weight[0].size < compiled.DFT_TAPS
    strided = axes[0].stride > 1 or axes[1].stride > 1
    if method == "opencv":
        if not opencv:
            raise ParameterError("OpenCV is not installed (pip install opencv-python-headless); use shiftadd",
                                 subject="method")
        if channels_last and strided:
            raise ParameterError("opencv filters channels-last input at stride 1 only; use shiftadd",
                                 subject="method")
    use_opencv = method == "opencv" or (method == "auto" and opencv and not (channels_last and strided))
    tiles = None
    if use_opencv and channels_last:
        kh, kw = weight.shape[1:]
        rows, width = min(_ROWS, spatial[0]), spatial[1]
        taps = np.ascontiguousarray(weight.transpose(1, 2, 0)).reshape(kh, kw, 1, channels)
        tiles = np.tile(taps, (1, 1, rows, width))  # (kh, kw, rows, width * channels)
    work = int(np.prod(out_shape)) * weight[0].size
    threads = max(1, min(int(threads), out_shape[1])) if work >= _SHARED_WORK else 1
    return DepthwisePlan(x_shape, out_shape, bool(channels_last), axes, "opencv" if use_opencv else "shiftadd",
                         weight, bias, tiles, threads)


def depthwise_same(x, weight, *, stride=1, bias=None, channels_last=False, method="auto", out=None) -> np.ndarray:
    """Correlate every channel of an image batch with its own kernel, zero border, "same" output size.

    Takes the parameters of :func:`plan_depthwise`, with the input ``x``
    itself for its shape, and ``out``: a C-contiguous float32 array of the
    output's shape to write into.  Returns ``out``, or a new float32 array,
    laid out like ``x``.  A layer run many times keeps the plan instead.
    """
    x = np.asarray(x)
    plan = plan_depthwise(x.shape, weight, stride=stride, bias=bias, channels_last=channels_last, method=method)
    return plan(x, out=out)


_SHARED_WORK = 250_000
_POOL = None


def _shared(run, length: int, threads: int) -> None:
    """``run(lo, hi)`` over ``range(length)`` cut in ``threads`` parts, the first in this thread."""
    if threads <= 1:
        run(0, length)
        return
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=max(1, threads - 1), thread_name_prefix="convcli-depthwise")
    cuts = np.linspace(0, length, threads + 1).round().astype(int)
    futures = [_POOL.submit(run, cuts[t], cuts[t + 1]) for t in range(1, threads)]
    run(cuts[0], cuts[1])
    for future in futures:
        future.result()


def _opencv_channels_last(x, tiles, bias, axes, out, lo: int, hi: int) -> np.ndarray:
    """Output rows ``lo:hi``."""
    cv2 = compiled._cv2()
    n, h, w, c = x.shape
    ry, rx = axes
    kh, kw, rows = tiles.shape[:3]
    flat_in, flat_out = x.reshape(n, h, w * c), out.reshape(n, h, w * c)
    np.copyto(out[:, lo:hi], bias)
    for i in range(kh):
        dy = i - ry.before  # output row y reads input row y + dy
        y0, y1 = max(lo, -dy), min(hi, h - dy)
        for j in range(kw):
            dx = j - rx.before
            x0, x1 = max(0, -dx), min(w, w - dx)
            if y0 >= y1 or x0 >= x1:
                continue  # the tap only ever meets the zero border
            cols, src_cols = slice(x0 * c, x1 * c), slice((x0 + dx) * c, (x1 + dx) * c)
            for b in range(n):
                for r0 in range(y0, y1, rows):
                    r1 = min(r0 + rows, y1)
                    cv2.accumulateProduct(flat_in[b, r0 + dy:r1 + dy, src_cols],
                                          tiles[i, j, :r1 - r0, :(x1 - x0) * c], flat_out[b, r0:r1, cols])
    return out


def _opencv(x, weight, bias, axes, out, lo: int, hi: int) -> np.ndarray:
    """Channels ``lo:hi``."""
    cv2 = compiled._cv2()
    ry, rx = axes
    strided = ry.stride > 1 or rx.stride > 1
    # OpenCV's output has the input's size: the "same" padding becomes the
    # anchor (the kernel tap over the output sample), the border zeros.
    anchor = (rx.before, ry.before)
    full = np.empty(x.shape[2:], dtype=np.float32) if strided else None
    for n in range(x.shape[0]):
        for c in range(lo, hi):
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


def same_patches(x, kernel_shape, *, stride=1) -> np.ndarray:
    """Every tap's window of a zero-border, "same"-size correlation of ``(N, C, H, W)`` images, gathered.

    The patch matrix ("im2col") of a dense convolution: for the tap ``(i, j)``
    of a ``kh x kw`` kernel, rows ``(i * kw + j) * C + c`` hold channel ``c``
    at the samples that tap meets for each output sample.  A dense
    convolution is then one matrix product of its weights, laid out
    ``(out, kh, kw, C)``, with these ``kh * kw * C`` rows; the geometry (the
    "same" rule, stride, zero border) stays the engine's.

    Returns
    -------
    numpy.ndarray
        ``(N, kh * kw * C, H_out, W_out)`` float32.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ParameterError(f"must be a batch of images with 4 axes, got shape {x.shape}", subject="x")
    kh, kw = (int(k) for k in kernel_shape)
    ry, rx = plan_axes(x.shape[2:], (kh, kw), stride=stride, padding="same")
    rows, cols = (ry.out - 1) * ry.stride + kh, (rx.out - 1) * rx.stride + kw
    h, w = min(ry.length, rows - ry.before), min(rx.length, cols - rx.before)
    padded = np.zeros(x.shape[:2] + (rows, cols), dtype=np.float32)
    padded[:, :, ry.before:ry.before + h, rx.before:rx.before + w] = x[:, :, :h, :w]
    out = np.empty((x.shape[0], kh, kw, x.shape[1], ry.out, rx.out), dtype=np.float32)
    for i in range(kh):
        for j in range(kw):
            out[:, i, j] = padded[:, :, i:i + rows - kh + 1:ry.stride, j:j + cols - kw + 1:rx.stride]
    return out.reshape(x.shape[0], kh * kw * x.shape[1], ry.out, rx.out)
