"""Rank filters in OpenCV's compiled loops: medianBlur, erode and dilate, on every core.

Measured on this project's 2-core machine (3840x2160 RGB): ``medianBlur``
runs Perreault and Hebert's constant-time histogram median for uint8
(5x5: 24 ms, 31x31: 580 ms, on one core) and sorting networks for 3x3
and 5x5 uint16/int16/float32 windows (5x5 float32: 62 ms), where
scipy.ndimage sorts every window (5x5: 8.2 s).  ``erode`` and ``dilate``
take a rectangle as running extrema, one pass per axis, on all cores
(15x15 uint8: 7.4 ms), and any other mask tap by tap.

OpenCV knows none of the engine's geometry: medianBlur always extends the
image by replication, and neither takes a stride, a dilation, or a
circular border.  So:

- where OpenCV's own border is the engine's border rule (erode and dilate:
  reflect, symmetric, replicate, a constant; medianBlur: replicate only)
  and the padding is the "same" kind, OpenCV reads the image itself: one
  call for erode and dilate, which use every core; medianBlur, which uses
  one, in bands of rows with their halo, whose cut edges are dropped; a
  stride keeps every s-th output;
- otherwise every band of output rows is gathered, padded by the engine's
  border rule (:func:`.bands.gather_band`), handed to OpenCV whole, and
  only the outputs whose window lies inside the padded band are kept.
"""
from __future__ import annotations

import numpy as np

from ..parallel import run_all, thread_count
from .bands import run_bands, source_index
from .borders import BorderMode
from .compiled import available, native_border
from .geometry import AxisPlan
from .selection import running

# Types OpenCV's erode and dilate take (bool goes as uint8), and the types medianBlur takes for
# windows of 3 and 5 (larger windows: uint8 only).
MORPHOLOGY_TYPES = ("bool", "uint8", "uint16", "int16", "float32", "float64")
SMALL_MEDIAN_TYPES = ("bool", "uint8", "uint16", "int16", "float32")
# Channel counts one medianBlur call takes; other counts go a channel at a time.
MEDIAN_CHANNELS = (1, 3, 4)
# Bands per thread: enough for one busy core not to hold the others up, few enough that the
# halo rows every band filters again stay a small part of the work.
BANDS_PER_THREAD = 3
# Samples below which a medianBlur runs in one call: a hand-over to another thread costs more.
PARALLEL_SAMPLES = 1 << 19


def _cv2():
    import cv2

    return cv2


def algorithm(footprint: np.ndarray, rank: int, plans: tuple[AxisPlan, ...], dtype) -> str | None:
    """The OpenCV function that computes this rank filter, or None.

    ``medianBlur`` for the median of an odd square (sizes 3 and 5 in the
    small types, any size in uint8), ``erode``/``dilate`` for the minimum
    and maximum over any 2-D mask, ``planes`` for the extreme over a box on
    a volume (the (y, x) planes by OpenCV, z by numpy); always at dilation 1
    in the (y, x) plane.
    """
    if not available():
        return None
    name = np.dtype(dtype).name
    n = int(np.count_nonzero(footprint))
    extreme = rank in (0, n - 1)
    if footprint.ndim == 2 and all(p.dilation == 1 for p in plans):
        if extreme and name in MORPHOLOGY_TYPES:
            return "erode" if rank == 0 else "dilate"
        k = footprint.shape[0]
        if (rank == n // 2 and footprint.all() and footprint.shape == (k, k) and k % 2 == 1
                and (name in ("bool", "uint8") or (name in SMALL_MEDIAN_TYPES and k <= 5))):
            return "medianBlur"
        return None
    if (footprint.ndim == 3 and extreme and footprint.all() and name in MORPHOLOGY_TYPES
            and all(p.dilation == 1 for p in plans[1:])):
        return "planes"
    return None


def _full_resolution(plans: tuple[AxisPlan, ...]) -> tuple[AxisPlan, ...] | None:
    """The stride-1 "same" plans whose every s-th output is the strided plan's, if OpenCV can pad them itself."""
    full = []
    for p in plans:
        after = p.span - 1 - p.before
        if p.dilation != 1 or not 0 <= p.before <= p.length - 1 or not 0 <= after <= p.length - 1 \
                or (p.out - 1) * p.stride > p.length - 1:
            return None
        full.append(AxisPlan(p.length, p.taps, 1, 1, p.before, after, p.length))
    return tuple(full)


def _opencv_border(algorithm_name: str, border: BorderMode, value: float, plans):
    """(plans at full resolution, OpenCV's border flag, its value) where OpenCV pads as the engine would, else None."""
    full = _full_resolution(plans)
    if full is None:
        return None
    cv2 = _cv2()
    if algorithm_name == "medianBlur":  # always centred on its output
        centred = all(p.before == (p.taps - 1) // 2 for p in full)
        return (full, cv2.BORDER_REPLICATE, 0.0) if border.name == "replicate" and centred else None
    if border.numpy_mode == "constant":
        return full, cv2.BORDER_CONSTANT, value
    flag = native_border(border, 0.0, full)
    return None if flag is None else (full, flag, 0.0)


def rank_2d(algorithm_name: str, x: np.ndarray, out: np.ndarray, plans: tuple[AxisPlan, ...], border: BorderMode,
            value: float, footprint: np.ndarray) -> None:
    """Fill ``out`` (``(lanes, Ho, Wo, trail)``) with medianBlur, erode or dilate of ``x`` (``(lanes, H, W, trail)``)."""
    native = _opencv_border(algorithm_name, border, value, plans)
    if native is not None:
        _native_2d(algorithm_name, x, out, plans, native, footprint)
    else:
        _gathered_2d(algorithm_name, x, out, plans, border, value, footprint)


def _call(cv2, algorithm_name: str, image: np.ndarray, footprint: np.ndarray, anchor, flag, value,
          dst: np.ndarray | None = None) -> np.ndarray:
    """One OpenCV call on a contiguous ``(H, W, channels)`` image, into ``dst`` (same shape) when given."""
    shape = image.shape
    if shape[-1] == 1:  # one channel: OpenCV reads and writes (H, W)
        image = image.reshape(shape[:2])
        dst = None if dst is None else dst.reshape(shape[:2])
    if algorithm_name == "medianBlur":
        result = cv2.medianBlur(image, footprint.shape[0], dst=dst)
    else:
        morph = cv2.erode if algorithm_name == "erode" else cv2.dilate
        result = morph(image, np.ascontiguousarray(footprint, dtype=np.uint8), dst=dst, anchor=anchor,
                       borderType=flag, borderValue=(value,) * 4)
    if dst is not None and not np.shares_memory(result, dst):
        dst[...] = result
    return result.reshape(shape)


def _channel_groups(algorithm_name: str, trail: int) -> list[slice]:
    if algorithm_name != "medianBlur" or trail in MEDIAN_CHANNELS:
        return [slice(None)]
    return [slice(t, t + 1) for t in range(trail)]


def _native_2d(algorithm_name, x, out, plans, native, footprint) -> None:
    """OpenCV reads the image and pads it itself; medianBlur in bands of rows with halos, on every core."""
    cv2 = _cv2()
    full, flag, value = native
    py, px = full
    anchor = (px.before, py.before)
    sy, sx = plans[0].stride, plans[1].stride
    rows = out.shape[1]
    per_image = x.shape[1] * x.shape[2] * x.shape[3]
    for lane in range(x.shape[0]):
        for group in _channel_groups(algorithm_name, x.shape[-1]):
            image = x[lane][..., group]
            target = out[lane][..., group]
            if image.dtype != out.dtype:  # samples ranked as floats (a border constant the type cannot hold)
                image = image.astype(out.dtype)
            if algorithm_name != "medianBlur" or per_image < PARALLEL_SAMPLES or thread_count() == 1:
                image = np.ascontiguousarray(image)
                if target.shape == image.shape and target.flags.c_contiguous:  # straight into the result
                    _call(cv2, algorithm_name, image, footprint, anchor, flag, value, dst=target)
                    continue
                result = _call(cv2, algorithm_name, image, footprint, anchor, flag, value)
                target[...] = result[: (rows - 1) * sy + 1: sy, : (target.shape[1] - 1) * sx + 1: sx]
                continue
            count = min(rows, thread_count() * BANDS_PER_THREAD)
            edges = [rows * i // count for i in range(count + 1)]

            def band(i, image=image, target=target):
                o0, o1 = edges[i], edges[i + 1]
                r0, r1 = o0 * sy, (o1 - 1) * sy + 1  # full-resolution rows kept: r0, r0 + sy, ... < r1
                lo, hi = max(0, r0 - py.before), min(image.shape[0], r1 + py.after)
                result = _call(cv2, algorithm_name, np.ascontiguousarray(image[lo:hi]), footprint, anchor, flag,
                               value)
                target[o0:o1] = result[r0 - lo: r1 - lo: sy, : (target.shape[1] - 1) * sx + 1: sx]

            run_all(band, range(count))


def _gathered_2d(algorithm_name, x, out, plans, border, value, footprint) -> None:
    """Bands gathered with the engine's border rule; OpenCV on each, its own border cut away."""
    cv2 = _cv2()
    anchor = (0, 0) if algorithm_name != "medianBlur" else None
    r = (footprint.shape[0] - 1) // 2

    def compute(block, target, band_plans):
        py, px = band_plans
        rows, cols = (py.out - 1) * py.stride + 1, (px.out - 1) * px.stride + 1
        for lane in range(block.shape[0]):
            for group in _channel_groups(algorithm_name, block.shape[-1]):
                image = np.ascontiguousarray(block[lane][..., group])
                result = _call(cv2, algorithm_name, image, footprint, anchor, cv2.BORDER_REPLICATE, 0.0)
                if algorithm_name == "medianBlur":  # centred: window (y, x) is output (y + r, x + r)
                    result = result[r:, r:]
                target[lane][..., group] = result[:rows:py.stride, :cols:px.stride]

    run_bands(x, out, plans, border, value, compute, work=float("inf"), rows_per_band=band_rows(plans))


def band_rows(plans: tuple[AxisPlan, ...], halo_share: int = 8) -> int:
    """Output rows per band: a few bands per thread, each at least ``halo_share`` times its halo."""
    p0 = plans[0]
    rows = -(-p0.out // (thread_count() * BANDS_PER_THREAD))
    return min(p0.out, max(rows, -(-halo_share * (p0.span - 1) // p0.stride), 1))


# --------------------------------------------------------------------------- volumes
# Output planes per task: the z windows of a task's planes overlap, so each input plane is
# eroded once per task; a task's planes are a few MB.
PLANES_PER_TASK = 16


def extreme_planes(x: np.ndarray, out: np.ndarray, plans: tuple[AxisPlan, ...], border: BorderMode, value: float,
                   op) -> None:
    """The extreme over a box on a volume: each (y, x) plane by OpenCV, then along z by numpy's running pass.

    Where OpenCV pads the planes as the engine would, it reads them from the
    volume itself and the z border is a mapping of plane indices; otherwise
    the bands are gathered, padded on every axis.
    """
    cv2 = _cv2()
    pz, py, px = plans
    morph = cv2.erode if op is np.minimum else cv2.dilate
    rect = np.ones((py.taps, px.taps), dtype=np.uint8)
    native = _opencv_border("erode", border, value, (py, px))
    if native is None or border.numpy_mode == "constant":
        _gathered_planes(cv2, morph, rect, x, out, plans, border, value, op)
        return
    (fy, fx), flag, _ = native
    anchor = (fx.before, fy.before)
    keep = (slice(None, (py.out - 1) * py.stride + 1, py.stride), slice(None, (px.out - 1) * px.stride + 1, px.stride))

    def task(start: int) -> None:
        stop = min(pz.out, start + PLANES_PER_TASK)
        first = start * pz.stride
        padded = range(first, (stop - 1) * pz.stride + pz.span)
        sources = source_index(np.array(padded) - pz.before, pz.length, border)
        for lane in range(x.shape[0]):
            eroded = {}
            planes = []
            for s in sources.tolist():
                if s not in eroded:
                    plane = np.ascontiguousarray(x[lane, s], dtype=out.dtype)
                    eroded[s] = morph(plane, rect, anchor=anchor, borderType=flag).reshape(plane.shape)[keep]
                planes.append(eroded[s])
            stack = np.stack(planes)
            z = AxisPlan(len(planes), pz.taps, pz.stride, pz.dilation, 0, 0, stop - start)
            out[lane, start:stop] = running(stack, 0, z.taps, z.dilation, z.stride, z.out, op)

    run_all(task, range(0, pz.out, PLANES_PER_TASK))


def _gathered_planes(cv2, morph, rect, x, out, plans, border, value, op) -> None:
    py, px = plans[1:]
    rows, cols = (py.out - 1) * py.stride + 1, (px.out - 1) * px.stride + 1

    def compute(block, target, band_plans):
        bz = band_plans[0]
        for lane in range(block.shape[0]):
            planes = block[lane]
            flat = np.empty((planes.shape[0], py.out, px.out) + planes.shape[3:], dtype=planes.dtype)
            for z in range(planes.shape[0]):
                result = morph(planes[z], rect, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
                flat[z] = result.reshape(planes[z].shape)[:rows:py.stride, :cols:px.stride]
            target[lane] = running(flat, 0, bz.taps, bz.dilation, bz.stride, bz.out, op)

    run_bands(x, out, plans, border, value, compute, work=float("inf"), rows_per_band=band_rows(plans, 4))
