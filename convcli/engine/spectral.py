"""FFT correlation: one transform of a padded image or volume, overlap-save blocks for a signal.

Only the valid part of a correlation is wanted, so a circular correlation
of any size ``N >= n`` already holds it (the wrap-around only touches the
first ``span - 1`` samples, which are discarded).  Transforms are real, in
the compute precision (float32 stays float32) and sized to fast lengths.

Images and volumes use scipy.fft (``rfftn`` over every core with
``workers``).  Signals (one spatial axis: audio with a long impulse
response) never import scipy, whose ``scipy.fft`` costs about 150 ms to
import here, as long as a whole 180 s filter's transforms: they are cut into
overlap-save blocks of a few kernel spans (smaller transforms, each
cache-friendly, the same result), transformed a group of blocks at a time by
OpenCV's ``dft`` (4-6x faster than numpy's pocketfft on these sizes,
measured) or numpy.fft when OpenCV is missing, the groups spread over the
engine's band threads.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

from ..parallel import run_all, thread_count
from . import bands, compiled
from .borders import BorderMode
from .geometry import AxisPlan

# An overlap-save block is the power of two of at least this many kernel
# spans and MIN_BLOCK samples.  Measured on 90 s of stereo (ms, by block in
# spans): span 88200: 1.5 -> 162, 3 -> 89, 6 -> 102, 12 -> 121; span 20001:
# 1.6 -> 112, 3.3 -> 73, 6.6 -> 67; span 1001: 2 -> 70, 4 -> 52, 8 -> 50;
# span 101: 1024 samples 48, 4096 45.  Powers of two beat OpenCV's other
# fast lengths (3**11 = 177147 ran 1.3x slower than 2**18).
BLOCK_SPANS = 2.5
MIN_BLOCK = 4096
# Blocking pays once the axis is this many blocks long.
MIN_BLOCKS = 2
# Samples transformed per call (a group of blocks, a band of outputs): a few
# MiB for the blocks, their spectra and the result keep a thread's work near its cache.
GROUP_SAMPLES = 1 << 20
# A transform spreads its round-off over every output, so an output whose
# exact value is 0 (beyond a kernel's support, silence before a sound, a flat
# region under an edge kernel) comes out as +-1e-18 (float64) or +-1e-9
# (float32) times the signal's scale, and a non-negative signal under a
# non-negative kernel can come out below zero.  The scale is eps * rms(x) *
# max|W| (W the kernel's spectrum).  Measured where the exact result is 0
# (impulses, random and sparse 64x64 to 1200x1600 images, 40^3 volumes,
# 6e4 to 1e6-sample signals with kernels of 1001 to 88200 taps): at most 3.6
# times that scale, while the error of the other outputs reaches 6 (float32)
# and 32 (float64) times it.  Outputs within ROUND_OFF * sqrt(log2 N) times
# the scale of zero (N the transform's length) are set to 0, as a direct sum
# gives them: 8.5 for N = 2**18, inside the transform's own error.
ROUND_OFF = 2.0


def flipped_kernel(weights: np.ndarray, plans: tuple[AxisPlan, ...]) -> np.ndarray:
    """``weights`` (``(wl, *taps, wt)``) dilated with zeros and flipped on its spatial axes."""
    nd = len(plans)
    shape = (weights.shape[0],) + tuple(p.span for p in plans) + (weights.shape[-1],)
    full = np.zeros(shape, dtype=weights.dtype)
    full[(slice(None),) + tuple(slice(None, None, p.dilation) for p in plans) + (slice(None),)] = weights
    return full[(slice(None),) + (slice(None, None, -1),) * nd + (slice(None),)]


def fft(xp: np.ndarray, weights: np.ndarray, plans: tuple[AxisPlan, ...]) -> np.ndarray:
    """Valid, strided correlation of the padded image or volume ``xp`` (``(lanes, *spatial, trail)``) by FFT.

    ``weights`` is ``(wl, *taps, wt)``.  Signals go to :func:`correlate_1d`.
    """
    nd = len(plans)
    from scipy import fft as sfft

    kernel = flipped_kernel(weights, plans)
    axes = tuple(range(1, 1 + nd))
    sizes = tuple(sfft.next_fast_len(p.length, real=True) for p in plans)
    n = thread_count()
    spectrum = sfft.rfftn(xp, s=sizes, axes=axes, workers=n)
    response = sfft.rfftn(kernel, s=sizes, axes=axes, workers=n)
    spectrum *= response
    peak = float(np.abs(response).max())
    del response
    full = sfft.irfftn(spectrum, s=sizes, axes=axes, workers=n, overwrite_x=True)
    del spectrum
    full = full[(slice(None),) + tuple(slice(p.span - 1, p.length) for p in plans) + (slice(None),)]
    keep = (slice(None),) + tuple(slice(0, (p.out - 1) * p.stride + 1, p.stride) for p in plans) + (slice(None),)
    out = np.ascontiguousarray(full[keep], dtype=xp.dtype)
    flat = xp.reshape(-1)
    rms = float(np.sqrt(np.dot(flat, flat) / max(flat.size, 1)))
    settle(out, rms * peak, int(np.prod(sizes)), weights.min() >= 0 and xp.min() >= 0)
    return out


def settle(out: np.ndarray, scale: float, length: int, non_negative: bool) -> None:
    """Undo what round-off did near zero: outputs within it become 0, and none is negative where none can be.

    ``scale`` is rms(x) * max|W| of the transform that made ``out``,
    ``length`` its number of points; ``non_negative``: a signal >= 0 under
    weights >= 0, whose outputs are all >= 0.
    """
    limit = ROUND_OFF * float(np.finfo(out.dtype).eps) * scale * np.sqrt(np.log2(max(length, 2)))
    if not np.isfinite(limit):
        return  # non-finite samples: nothing to settle (auto never sends them here)
    if limit > 0:
        # A multiply by the mask, not copyto(where=): 5-8x faster on outputs of mixed magnitudes.
        # (A negative output flushed is -0.0, which equals 0; the clamp below makes it +0.)
        keep = np.abs(out)
        np.greater(keep, limit, out=keep)
        out *= keep
    if non_negative:
        np.maximum(out, 0, out=out)


def block_size(span: int) -> int:
    """The overlap-save block for a kernel of ``span`` samples: a power of two of a few spans."""
    return 1 << max(1, int(np.ceil(np.log2(max(BLOCK_SPANS * span, MIN_BLOCK)))))


def transform_size(plan: AxisPlan) -> int:
    """The overlap-save block :func:`correlate_1d` transforms for ``plan``: a few spans, or the whole padded signal."""
    size = block_size(plan.span)
    if plan.padded < MIN_BLOCKS * size:
        size = _transforms().fast_length(plan.padded)  # one transform of the whole signal
    return size


def correlate_1d(x: np.ndarray, out: np.ndarray, plan: AxisPlan, weights: np.ndarray, border: BorderMode,
                 value: float, cache: dict | None = None) -> np.ndarray:
    """Fill ``out`` (``(lanes, m, trail)``) from the unpadded ``x`` (``(lanes, n, trail)``) by overlap-save.

    ``weights`` is ``(taps, wl, wt)``, as for :func:`.toeplitz.correlate_1d`.
    Every block of ``size`` padded samples is gathered straight from ``x``
    (border rule applied, integers converted: one pass, no padded copy of
    the signal), a group of blocks is transformed at a time, and the groups
    of every channel run on the engine's threads, each with its own scratch.
    A caller that correlates many pieces of one signal with the same weights
    (:mod:`.stream`) passes one ``cache`` dict to every call, so the
    kernel's spectra are computed once.
    """
    transforms = _transforms()
    span, stride = plan.span, plan.stride
    size = transform_size(plan)
    step = size - span + 1
    needed = (plan.out - 1) * stride + 1  # stride-1 outputs up to the last kept one
    count = -(-needed // step)
    group = max(1, min(count, GROUP_SAMPLES // size))
    dtype = np.dtype(out.dtype)
    key = (size, group, dtype.str)
    if cache is None or key not in cache:
        kernel = flipped_kernel(np.moveaxis(weights, 1, 0), (plan,))  # (wl, span, wt)
        spectra = {(lane, t): transforms.spectrum(kernel[lane, :, t].astype(dtype), size, group)
                   for lane in range(kernel.shape[0]) for t in range(kernel.shape[-1])}
        facts = (spectra, {k: transforms.peak(r) for k, r in spectra.items()},
                 {k: bool(kernel[k[0], :, k[1]].min() >= 0) for k in spectra}, kernel.shape)
        if cache is not None:
            cache[key] = facts
    else:
        facts = cache[key]
    responses, peaks, non_negative, kernel_shape = facts
    scratch: dict[int, dict] = {}

    def one(job: tuple[int, int, int]) -> None:
        lane, t, start = job
        rows = min(count, start + group) - start
        own = scratch.setdefault(threading.get_ident(), {})
        blocks = scratch_array(own, "blocks", (group, size), dtype)[:rows]
        for r in range(rows):
            lo = (start + r) * step
            _gather(x, lane, t, blocks[r], lo, plan, border, value)
        key = (min(lane, kernel_shape[0] - 1), min(t, kernel_shape[-1] - 1))
        result = transforms.circular(blocks, responses[key], own)
        for r in range(rows):
            # Stride-1 outputs p0..p1 of this block; keep every stride-th of the plan's.
            p0 = (start + r) * step
            p1 = min(p0 + step, needed)
            o0, o1 = -(-p0 // stride), -(-p1 // stride)
            if o1 > o0:
                first = o0 * stride - p0 + span - 1
                kept = result[r, first:first + (o1 - o0 - 1) * stride + 1]
                block = blocks[r]  # the round-off of this block's transform is its own samples'
                rms = float(np.sqrt(np.dot(block, block) / size))
                settle(kept, rms * peaks[key], size, non_negative[key] and block.min() >= 0)
                out[lane, o0:o1, t] = kept[::stride]

    jobs = [(lane, t, start) for start in range(0, count, group)
            for lane in range(out.shape[0]) for t in range(out.shape[-1])]
    work = len(jobs) * group * size * np.log2(size) * 2
    with transforms.on_band_threads():
        run_all(one, jobs, parallel=work >= bands.PARALLEL_WORK)
    return out


def _gather(x: np.ndarray, lane: int, t: int, target: np.ndarray, lo: int, plan: AxisPlan, border: BorderMode,
            value: float) -> None:
    """Padded samples ``lo .. lo + len(target)`` of one channel into ``target``; zeros past the padded end."""
    hi = min(lo + target.shape[0], plan.padded)
    if hi < lo + target.shape[0]:
        target[max(0, hi - lo):] = 0
    if hi <= lo:
        return
    for a, b, src, step in bands.axis_runs(plan.length, plan.before, lo, hi, border):
        if src < 0:
            target[a:b] = value
        else:
            target[a:b] = x[lane, bands.source_slice(src, step, b - a), t]


def scratch_array(store: dict, name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
    """A band thread's scratch array, kept in ``store`` for the whole call: fresh pages for every
    group or band cost a page fault each (also :func:`.toeplitz.correlate_1d`'s)."""
    array = store.get(name)
    if array is None:
        array = store[name] = np.empty(shape, dtype=dtype)
    return array


def _transforms():
    if compiled.available():
        try:
            return _OpenCV()
        except ImportError:  # installed but unloadable (a missing system library): numpy's transforms
            pass
    return _NumPy()


class _OpenCV:
    """Real transforms of rows by ``cv2.dft`` (packed CCS spectra), one OpenCV thread per band thread."""

    def __init__(self):
        import cv2

        self.cv2 = cv2

    def fast_length(self, n: int) -> int:
        size = self.cv2.getOptimalDFTSize(int(n))
        while size % 2:  # an even length: the packed spectrum of every row has the same layout
            size = self.cv2.getOptimalDFTSize(size + 1)
        return size

    def spectrum(self, taps: np.ndarray, size: int, rows: int) -> np.ndarray:
        padded = np.zeros((1, size), dtype=taps.dtype)
        padded[0, :taps.size] = taps
        # mulSpectrums wants both operands of one shape: the response repeated for a group's rows.
        return np.repeat(self.cv2.dft(padded, flags=self.cv2.DFT_ROWS), rows, axis=0)

    @staticmethod
    def peak(response: np.ndarray) -> float:
        """The largest magnitude of a response's packed spectrum (CCS: re0, re1, im1, ..., re(n/2))."""
        row = response[0].astype(np.float64)
        inner = np.hypot(row[1:-1:2], row[2:-1:2])
        return float(max(abs(row[0]), abs(row[-1]), inner.max(initial=0.0)))

    def circular(self, blocks: np.ndarray, response: np.ndarray, store: dict) -> np.ndarray:
        """Circular correlation of every row of ``blocks`` with the (flipped) response, in ``store``'s scratch."""
        cv2 = self.cv2
        rows = len(blocks)
        spectrum = scratch_array(store, "spectrum", response.shape, blocks.dtype)[:rows]
        product = scratch_array(store, "product", response.shape, blocks.dtype)[:rows]
        result = scratch_array(store, "result", response.shape, blocks.dtype)[:rows]
        cv2.dft(blocks, dst=spectrum, flags=cv2.DFT_ROWS)
        cv2.mulSpectrums(spectrum, response[:rows], cv2.DFT_ROWS, c=product)
        cv2.dft(product, dst=result, flags=cv2.DFT_ROWS | cv2.DFT_INVERSE | cv2.DFT_SCALE | cv2.DFT_REAL_OUTPUT)
        return result

    @contextlib.contextmanager
    def on_band_threads(self):
        """OpenCV's own threads held to one while the band threads share the groups (else they fight)."""
        before = self.cv2.getNumThreads()
        self.cv2.setNumThreads(1)
        try:
            yield
        finally:
            self.cv2.setNumThreads(before)


class _NumPy:
    """Real transforms of rows by numpy.fft (float32 stays float32), which releases the GIL."""

    @staticmethod
    def fast_length(n: int) -> int:
        return next_fast_length(n)

    @staticmethod
    def spectrum(taps: np.ndarray, size: int, rows: int) -> np.ndarray:
        return np.fft.rfft(taps, n=size)

    @staticmethod
    def peak(response: np.ndarray) -> float:
        return float(np.abs(response).max())

    @staticmethod
    def circular(blocks: np.ndarray, response: np.ndarray, store: dict) -> np.ndarray:
        spectrum = np.fft.rfft(blocks, axis=1)
        spectrum *= response
        return np.fft.irfft(spectrum, n=blocks.shape[1], axis=1).astype(blocks.dtype, copy=False)

    @staticmethod
    @contextlib.contextmanager
    def on_band_threads():
        yield


def next_fast_length(n: int) -> int:
    """The smallest even ``2**a * 3**b * 5**c >= n``: lengths pocketfft transforms fastest."""
    n = max(2, int(n))
    best = None
    five = 1
    while five < 2 * n:
        three = five
        while three < 2 * n:
            size = three * 2
            while size < n:
                size *= 2
            best = size if best is None or size < best else best
            three *= 3
        five *= 5
    return best
