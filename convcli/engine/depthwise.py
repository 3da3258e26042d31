"""Depthwise "same" correlation of image batches: the per-channel layer of a convolutional network.

:func:`correlate` with ``channel_axis`` and a ``(C, k, k)`` kernel computes the
same thing for any border and geometry.  This entry point serves the one case
a CNN runs hundreds of times per image, zero border and TensorFlow's "same"
rule, on a whole ``(N, C, H, W)`` or ``(N, H, W, C)`` batch, with the bias added
and the result written into a caller's buffer.  :func:`plan_depthwise` does
the per-shape work once (geometry, strategy, laid-out weights) and the
:class:`DepthwisePlan` it returns runs it, as often as the layer runs.  The
strategy is picked by layout (measured on EfficientNet-Lite0's layers, 2
cores, batch 1):

- ``opencv`` (channels-first): one ``filter2D`` call per channel plane, its
  zero border and anchor standing in for the padding and the bias passed as
  its ``delta``; no padded copy.  Fast on large maps (144 channels of 56x56,
  3x3: 0.8 ms against 3.3 ms of shift-and-add), slow on many small ones,
  where the ~3 us per call dominates (1152 channels of 7x7, 5x5: 3.6 ms).
- ``opencv`` (channels-last): every image is a matrix of rows ``W * C``
  long, and each tap one ``accumulateProduct`` (a fused multiply-add) of the
  input shifted by the tap into the output, over the rectangle where the
  shifted input exists (so no padded copy), against the tap's channel
  weights repeated along a few rows: 672 channels of 14x14, 5x5, in 0.65 ms
  against 1.8 ms of shift-and-add.
- ``shiftadd``: each tap's shifted rectangle scaled by every channel's
  weight at once and added (channels-first: one strided view of the
  zero-padded input per tap, the engine's own shift-and-add).  Channels-last
  keeps the channel axis innermost, so every multiply-add runs over
  contiguous channels.  It serves every case, and machines without OpenCV.

The tests hold every method and layout to :func:`correlate` itself.

Strided channels-last layers run on the input's stride phases
(:func:`split_phases`: ``x[:, a::s, b::s]`` one after another): a tap of a
strided correlation reads one phase at stride 1, so only the samples the
stride keeps are computed (96 channels of 112x112, 3x3, stride 2: 1.0 ms
against 1.5 ms plane by plane at full resolution).  A network splits the
narrow input of the 1x1 layer before (``phased=True``); otherwise the plan
splits its input itself.  Channels-first ``opencv`` filters strided layers at
full resolution and keeps every ``s``-th sample.

A plan run pass after pass on the same buffers is bound to them once
(:meth:`DepthwisePlan.bind`): every OpenCV call's arguments are made once
(channels-last: at the first run), and a pass pays only for the calls.

:func:`same_patches` gathers the patch matrix of a dense convolution under
the same geometry, for layers that mix channels (a CNN's stem) by one
matrix product.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from ..parallel import run_parts
from . import compiled, shiftadd
from .geometry import AxisPlan, per_axis, plan_axes

DEPTHWISE_METHODS = ("auto", "opencv", "shiftadd")

# Elements of output one accumulateProduct call covers on channels-last maps
# (whole output rows, so the tap weights are tiled that many rows deep):
# fewer calls against more tile memory, built at the first call.  Lite0's
# forward pass with calls bound once: 1 element (one row a call) 23.8 ms and
# 6.6 MB of tiles, 8K 21.1 ms and 12 MB, 32K 22.6 ms and 35 MB (and 8 ms
# more to build them).
_CHUNK = 8192
# Multiply-adds below which a layer runs on one thread: handing work over costs ~30 us.
_SHARED_WORK = 250_000


@dataclass(frozen=True)
class _Tap:
    """One tap of a channels-last plan: output rows ``y0:y1`` and columns ``x0:x1`` gain
    ``weight[:, i, j]`` times phase ``phase`` at rows ``y + dy`` and columns ``x + dx``."""

    i: int
    j: int
    phase: int
    dy: int
    dx: int
    y0: int
    y1: int
    x0: int
    x1: int


@dataclass(frozen=True, eq=False)
class DepthwisePlan:
    """A depthwise layer made ready for one input shape: geometry, strategy and laid-out weights.

    Call it on an input of ``x_shape`` (optionally with ``out=``) to run it;
    a plan made with ``phased=True`` takes ``split_phases(x, stride)``
    instead, of shape :attr:`in_shape`.
    """

    x_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    channels_last: bool
    axes: tuple[AxisPlan, ...]
    method: str  # "opencv" or "shiftadd"
    weight: np.ndarray  # (C, kh, kw) float32
    bias: np.ndarray  # (C,) float32
    tiles: np.ndarray | None  # channels-last OpenCV: (kh, kw, rows, W_out * C), tap weights repeated per pixel
    threads: int = 1  # OpenCV: channel planes (channels-first) or output rows (channels-last) shared this many ways
    phased: bool = False  # channels-last: the input arrives split into its stride phases
    phases: tuple[tuple[int, int, int], ...] = ()  # channels-last: (first pixel, rows, columns) of each phase
    taps: tuple[_Tap, ...] = ()  # channels-last: every tap that meets the image

    @property
    def in_shape(self) -> tuple[int, ...]:
        """The shape the plan is called with: ``x_shape``, or ``(N, H * W, C)`` when phased."""
        if not self.phased:
            return self.x_shape
        n, h, w, c = self.x_shape
        return (n, h * w, c)

    def __call__(self, x, out=None) -> np.ndarray:
        x = np.asarray(x)
        if x.shape != self.in_shape:
            raise ParameterError(f"has shape {x.shape}; this plan is for {self.in_shape}", subject="x")
        if out is None:
            out = np.empty(self.out_shape, dtype=np.float32)
        elif out.shape != self.out_shape or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ParameterError(f"must be a C-contiguous float32 array of shape {self.out_shape}", subject="out")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self._splits:
            x = split_phases(x, tuple(a.stride for a in self.axes))
        run_parts(self._bind(x, out))
        return out

    @property
    def _splits(self) -> bool:
        """Whether a call splits its (channels-last, strided) input into phases itself."""
        return self.channels_last and not self.phased and (self.axes[0].stride > 1 or self.axes[1].stride > 1)

    def bind(self, x: np.ndarray, out: np.ndarray) -> list:
        """The plan fixed to the buffers ``x`` (of :attr:`in_shape`) and ``out``: callables that run it on what they hold.

        Every view and argument is made once (here, or at a channels-last
        part's first run), so a layer run on the same buffers pass after pass
        (a network's forward pass) then pays only for the compiled calls:
        ~1.5 us less per OpenCV call, 15-20% of a channels-last layer.
        Returns one callable per thread's share (see ``threads``); together
        they compute the layer, in any threads and order.  A strided
        channels-last plan binds phases: make it ``phased``.
        """
        if self._splits:
            raise ParameterError("a strided channels-last plan binds the input's phases; plan it with phased=True",
                                 subject="x")
        for name, a, shape in (("x", x, self.in_shape), ("out", out, self.out_shape)):
            if a.shape != shape or a.dtype != np.float32 or not a.flags.c_contiguous:
                raise ParameterError(f"must be a C-contiguous float32 array of shape {shape}", subject=name)
        return self._bind(x, out)

    def _bind(self, x: np.ndarray, out: np.ndarray) -> list:
        if self.method == "shiftadd":
            if self.channels_last:
                images = self._phase_views(x)
                return [lambda: _taps_numpy(images, self.weight, self.bias, self.taps, out)]
            return [lambda: _planes_numpy(x, self.weight, self.bias, self.axes, out)]
        cuts = np.linspace(0, self.out_shape[1], self.threads + 1).round().astype(int)
        parts = [(int(lo), int(hi)) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo]
        if self.channels_last:
            images = self._phase_views(x)
            return [_bound_taps(images, self.tiles, self.bias, self.taps, out, lo, hi) for lo, hi in parts]
        return [_bound_planes(x, self.weight, self.bias, self.axes, out, lo, hi) for lo, hi in parts]

    def _phase_views(self, x: np.ndarray) -> list:
        if x.ndim == 4:  # stride 1: the image is its only phase
            x = x.reshape(x.shape[0], -1, x.shape[3])
        c = x.shape[-1]
        return [[x[b, first:first + rows * cols].reshape(rows, cols, c) for first, rows, cols in self.phases]
                for b in range(x.shape[0])]


def split_phases(x, stride, *, channels_last: bool = True, out=None) -> np.ndarray:
    """Images split into the phases of a stride, channels last: what a ``phased`` plan takes.

    Phase ``(a, b)`` of a stride ``(sy, sx)`` is ``x[:, a::sy, b::sx]``: the
    pixels an output sample's tap meets at one offset.  On phases a strided
    correlation becomes stride-1 correlations, one per tap, on images a
    quarter the size (stride 2), so no work is spent on samples the stride
    drops.  A per-pixel operation (a 1x1 convolution, an activation) can run
    before the split as after it; a network splits the narrow input of the
    1x1 layer that feeds its strided depthwise layer.

    Parameters
    ----------
    x : numpy.ndarray
        ``(N, H, W, C)``, or ``(N, C, H, W)`` with ``channels_last=False``
        (transposed in the same copy).
    stride : int or (int, int)
    out : numpy.ndarray, optional
        A float32 array (or view, e.g. all but a last channel of ones) of
        the result's shape to write into.

    Returns
    -------
    numpy.ndarray
        ``(N, H * W, C)`` float32: every phase's pixels, row by row, phase
        ``(a, b)`` after ``(a, b - 1)`` and all of ``(a - 1, ...)``.
    """
    x = np.asarray(x)
    if x.ndim != 4:
        raise ParameterError(f"must be a batch of images with 4 axes, got shape {x.shape}", subject="x")
    sy, sx = per_axis(stride, 2, "stride", minimum=1)
    if not channels_last:
        x = x.transpose(0, 2, 3, 1)
    n, h, w, c = x.shape
    if out is None:
        out = np.empty((n, h * w, c), dtype=np.float32)
    elif out.shape != (n, h * w, c) or out.dtype != np.float32:
        raise ParameterError(f"must be a float32 array of shape {(n, h * w, c)}", subject="out")
    first = 0
    for a in range(sy):
        for b in range(sx):
            part = x[:, a::sy, b::sx]
            size = part.shape[1] * part.shape[2]
            out[:, first:first + size].reshape(part.shape)[...] = part
            first += size
    return out


def plan_depthwise(x_shape, weight, *, stride=1, bias=None, channels_last=False, method="auto",
                   threads=1, phased=False) -> DepthwisePlan:
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
        ``opencv`` needs OpenCV, and channels-last input at stride 1 or
        split into phases; ``auto`` uses it wherever it can (splitting a
        strided channels-last input itself), shift-and-add elsewhere.
    threads : int
        Threads sharing an OpenCV layer (OpenCV releases the interpreter);
        a layer of fewer than ~1/4 million multiply-adds runs on one, since
        handing work over costs ~30 us.
    phased : bool
        Channels-last only: the plan is called with ``split_phases(x, stride)``
        of an ``x`` of ``x_shape``, not with ``x``.
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
    if phased and not channels_last:
        raise ParameterError("phases are laid out channels last; pass channels_last=True", subject="phased")
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
        if channels_last and strided and not phased:
            raise ParameterError("opencv filters channels-last input at stride 1 only, or split into phases "
                                 "(split_phases, phased=True); use shiftadd", subject="method")
    use_opencv = method == "opencv" or (method == "auto" and opencv)
    phases, taps, tiles = (), (), None
    if channels_last:
        phases, taps = _phase_taps(axes)
        if use_opencv:
            kh, kw = weight.shape[1:]
            width = axes[1].out * channels
            rows = max(1, min(axes[0].out, -(-_CHUNK // width)))
            repeated = np.broadcast_to(weight.transpose(1, 2, 0)[:, :, None, None, :],
                                       (kh, kw, rows, axes[1].out, channels))
            tiles = np.ascontiguousarray(repeated).reshape(kh, kw, rows, width)  # one pass; np.tile takes two
    work = int(np.prod(out_shape)) * weight[0].size
    threads = max(1, min(int(threads), out_shape[1])) if work >= _SHARED_WORK else 1
    return DepthwisePlan(x_shape, out_shape, bool(channels_last), axes, "opencv" if use_opencv else "shiftadd",
                         weight, bias, tiles, threads, bool(phased), phases, taps)


def _phase_taps(axes: tuple[AxisPlan, AxisPlan]):
    """The phases of a channels-last input and, for every tap that meets the image, where it reads them.

    Output row ``y`` of tap row ``i`` reads input row ``s * y + r`` with
    ``r = i - before``: row ``y + r // s`` of phase ``r % s``.  The rows
    where that exists (the rest meet the zero border) are ``y0:y1``.
    """
    ry, rx = axes
    rows = [len(range(a, ry.length, ry.stride)) for a in range(ry.stride)]
    cols = [len(range(b, rx.length, rx.stride)) for b in range(rx.stride)]
    phases, first = [], 0
    for a in range(ry.stride):
        for b in range(rx.stride):
            phases.append((first, rows[a], cols[b]))
            first += rows[a] * cols[b]
    taps = []
    for i in range(ry.taps):
        a, dy = (i - ry.before) % ry.stride, (i - ry.before) // ry.stride
        y0, y1 = max(0, -dy), min(ry.out, rows[a] - dy)
        for j in range(rx.taps):
            b, dx = (j - rx.before) % rx.stride, (j - rx.before) // rx.stride
            x0, x1 = max(0, -dx), min(rx.out, cols[b] - dx)
            if y0 < y1 and x0 < x1:  # else the tap only ever meets the zero border
                taps.append(_Tap(i, j, a * rx.stride + b, dy, dx, y0, y1, x0, x1))
    return tuple(phases), tuple(taps)


def _bound_taps(images, tiles, bias, taps, out, lo: int, hi: int):
    """Output rows ``lo:hi`` of a channels-last plan: one fused multiply-add per tap and block of rows.

    The calls' arguments are made at the first run, so binding costs nothing
    until the layer runs.
    """
    calls, band, bias = None, out[:, lo:hi], bias.copy()

    def arguments():
        made, rows, c = [], tiles.shape[2], out.shape[3]
        for b, phases in enumerate(images):
            flat_out = out[b].reshape(out.shape[1], out.shape[2] * c)
            flat_in = [p.reshape(p.shape[0], p.shape[1] * c) for p in phases]
            for t in taps:
                y0, y1 = max(t.y0, lo), min(t.y1, hi)
                src, tile = flat_in[t.phase], tiles[t.i, t.j]
                src_cols, cols = slice((t.x0 + t.dx) * c, (t.x1 + t.dx) * c), slice(t.x0 * c, t.x1 * c)
                width = (t.x1 - t.x0) * c
                for r0 in range(y0, y1, rows):
                    r1 = min(r0 + rows, y1)
                    made.append((src[r0 + t.dy:r1 + t.dy, src_cols], tile[:r1 - r0, :width], flat_out[r0:r1, cols]))
        return made

    def run():
        nonlocal calls
        if calls is None:
            calls = arguments()
        accumulate = compiled._cv2().accumulateProduct
        np.copyto(band, bias)
        for args in calls:
            accumulate(*args)
    return run


def _bound_planes(x, weight, bias, axes, out, lo: int, hi: int):
    """Channels ``lo:hi`` of a channels-first plan: one ``filter2D`` per plane.

    OpenCV's output has the input's size: the "same" padding becomes the
    anchor (the kernel tap over the output sample), the border zeros.  A
    strided plan filters at full resolution and keeps every ``s``-th sample.
    """
    cv2 = compiled._cv2()
    ry, rx = axes
    strided = ry.stride > 1 or rx.stride > 1
    anchor, border = (rx.before, ry.before), cv2.BORDER_CONSTANT
    full = np.empty(x.shape[2:], dtype=np.float32) if strided else None  # the plane before the stride's pick
    calls = [(x[n, c], weight[c], full if strided else out[n, c], float(bias[c]), out[n, c])
             for n in range(x.shape[0]) for c in range(lo, hi)]
    filter2d = cv2.filter2D

    def run():
        for src, kernel, dst, delta, keep in calls:
            filter2d(src, -1, kernel, dst=dst, anchor=anchor, delta=delta, borderType=border)
            if strided:
                keep[...] = dst[::ry.stride, ::rx.stride]
    return run


def _taps_numpy(images, weight, bias, taps, out) -> np.ndarray:
    """A channels-last plan by numpy: each tap's rectangle scaled by every channel's weight at once and added."""
    per_tap = weight.transpose(1, 2, 0)  # (kh, kw, C): the channel weights of one tap are contiguous rows
    scratch = np.empty(out.shape[1:], dtype=np.float32)
    np.copyto(out, bias)
    for b, phases in enumerate(images):
        for t in taps:
            source = phases[t.phase][t.y0 + t.dy:t.y1 + t.dy, t.x0 + t.dx:t.x1 + t.dx]
            shiftadd.add_scaled(out[b, t.y0:t.y1, t.x0:t.x1], source, per_tap[t.i, t.j],
                                scratch[:t.y1 - t.y0, :t.x1 - t.x0])
    return out


def _planes_numpy(x, weight, bias, axes, out) -> np.ndarray:
    """A channels-first plan by numpy: the bias, then the engine's shift-and-add of the zero-padded input.

    Every (image, channel) plane is a lane of :func:`.shiftadd.direct`: one
    strided view of the padded input per tap, scaled by each lane's weight.
    """
    padded = _zero_padded(x, axes)
    images, channels, rows, cols = padded.shape
    lanes = images * channels
    per_tap = weight.transpose(1, 2, 0)  # (kh, kw, C)
    weights = (np.tile(per_tap, images) if images > 1 else per_tap)[..., None]  # (kh, kw, lanes, 1)
    np.copyto(out, bias[:, None, None])
    shiftadd.direct(padded.reshape(lanes, rows, cols, 1), out.reshape((lanes,) + out.shape[2:] + (1,)), axes,
                    weights, onto=True)
    return out


def _zero_padded(x, axes) -> np.ndarray:
    """``(N, C, H, W)`` images in zeros, padded just far enough for the samples the stride keeps."""
    ry, rx = axes
    rows, cols = (ry.out - 1) * ry.stride + ry.span, (rx.out - 1) * rx.stride + rx.span
    h, w = min(ry.length, rows - ry.before), min(rx.length, cols - rx.before)
    padded = np.zeros(x.shape[:2] + (rows, cols), dtype=np.float32)
    padded[:, :, ry.before:ry.before + h, rx.before:rx.before + w] = x[:, :, :h, :w]
    return padded


def same_patches(x, kernel_shape, *, stride=1, out=None) -> np.ndarray:
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
        ``(N, kh * kw * C, H_out, W_out)`` float32: ``out`` if given (a
        C-contiguous float32 array of that shape), else a new array.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4:
        raise ParameterError(f"must be a batch of images with 4 axes, got shape {x.shape}", subject="x")
    kh, kw = (int(k) for k in kernel_shape)
    ry, rx = plan_axes(x.shape[2:], (kh, kw), stride=stride, padding="same")
    padded = _zero_padded(x, (ry, rx))
    rows, cols = padded.shape[2:]
    shape = (x.shape[0], kh * kw * x.shape[1], ry.out, rx.out)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ParameterError(f"must be a C-contiguous float32 array of shape {shape}", subject="out")
    taps = out.reshape(x.shape[0], kh, kw, x.shape[1], ry.out, rx.out)
    for i in range(kh):
        for j in range(kw):
            taps[:, i, j] = padded[:, :, i:i + rows - kh + 1:ry.stride, j:j + cols - kw + 1:rx.stride]
    return out
