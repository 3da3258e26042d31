"""Image and volume filtering in OpenCV's compiled, vectorised, multi-threaded 2-D loops.

Measured on this project's 2-core benchmark machine (3840x2160 RGB float32),
OpenCV runs 2-D direct and separable filters 2-5x faster than the best
numpy shift-and-add (sobel 3x3: 39 vs 80 ms; gaussian 17x17: 76 vs 300 ms;
random 7x7: 81 vs 360 ms) and imports in about 25 ms; numba, the other
candidate, imports in 200-300 ms, compiles for seconds on first use and its
straightforward loops ran slower than numpy here.  So OpenCV is the 2-D
backend of ``method="opencv"`` (and of ``auto`` when it is installed); the
numpy strategies stay the reference it is tested against.  A volume goes
plane by plane (:func:`correlate_3d`; a separable kernel in its own memory
with :func:`separable_3d_in_place`), and an integer image is read as it is
where OpenCV's integer path beats a float copy (:func:`reads_integers`).

OpenCV itself knows no stride or dilation and no circular border in its
filters, and its output always has the input's size.  Those cases are
reduced here to the one thing it does: a stride-1 valid correlation of an
already padded image.  A stride ``s`` splits the input into ``s`` phases
per axis, each correlated with every ``s``-th tap (so stride 2 in 2-D costs
a quarter of the work); a dilation ``d`` splits it into ``d`` phases whose
results interleave, each with the undilated kernel.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from ..parallel import run_all, thread_count
from .bands import padded_whole, source_index
from .borders import BorderMode
from .geometry import AxisPlan
from .shiftadd import add_scaled

# OpenCV's filter2D switches to a DFT for float32 kernels of this many taps or
# more, and for float64 ones from DFT_TAPS_FLOAT64 (its dftFilter2D: 130 only for
# float32 to float32 and 8-bit sources); a DFT spreads a NaN over the image's tile.
DFT_TAPS = 130
DFT_TAPS_FLOAT64 = 50


def dft_taps(dtype) -> int:
    """Taps from which filter2D runs a DFT on samples of the compute type ``dtype``."""
    return DFT_TAPS if np.dtype(dtype) == np.float32 else DFT_TAPS_FLOAT64

_BORDERS = {"reflect": "BORDER_REFLECT_101", "symmetric": "BORDER_REFLECT", "replicate": "BORDER_REPLICATE"}


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether OpenCV can be imported, without importing it (``import cv2`` happens on first use)."""
    import importlib.util

    try:
        return importlib.util.find_spec("cv2") is not None
    except (ImportError, ValueError):
        return False


def _cv2():
    import cv2

    return cv2


def pads_itself(border: BorderMode, value: float) -> bool:
    """Whether OpenCV has this border mode (reflect, symmetric, replicate, zeros)."""
    return value == 0 if border.numpy_mode == "constant" else border.name in _BORDERS


def native_geometry(border: BorderMode, value: float, plans: tuple[AxisPlan, ...]) -> bool:
    """Whether OpenCV pads this case itself (:func:`native_border`), decided without importing it."""
    if any(p.stride != 1 or p.dilation != 1 for p in plans):
        return False
    for p in plans:
        if p.before + p.after != p.taps - 1 or p.before > p.length - 1 or p.after > p.length - 1:
            return False
    return pads_itself(border, value)


def native_border(border: BorderMode, value: float, plans: tuple[AxisPlan, ...]):
    """OpenCV's border constant for a case it can pad itself, else ``None``."""
    if not native_geometry(border, value, plans):
        return None
    cv2 = _cv2()
    if border.numpy_mode == "constant":
        return cv2.BORDER_CONSTANT if value == 0 else None
    name = _BORDERS.get(border.name)
    return getattr(cv2, name) if name else None


def operation(kernel: np.ndarray, plans: tuple[AxisPlan, ...], separable: bool, dtype=np.float32) -> str:
    """Which OpenCV filter computes ``kernel`` (``(C, *taps)``) in the compute type ``dtype``: box, separable,
    filter or dft."""
    flat = kernel.reshape(kernel.shape[0], -1)
    if np.all(flat == flat[:, :1]) and np.all(flat[:, 0] != 0):
        return "box"
    if separable and min(kernel.shape[1:]) > 3:
        return "separable"
    span = np.prod([p.span if p.stride > 1 and p.dilation > 1 else p.taps for p in plans])
    return "dft" if span >= dft_taps(dtype) else "filter"


def keeps_non_finite_local(op: str, factors=None) -> bool:
    """Whether a NaN or infinity stays inside the kernel's footprint, as with the direct method.

    filter2D's direct path skips zero weights; sepFilter2D multiplies every
    tap, so it is local only if no factor has a zero tap; the box filter's
    running sums and the DFT carry a NaN far away.
    """
    if op == "filter":
        return True
    if op == "separable" and factors is not None:
        return all(np.all(f != 0) for f in factors)
    return False


# Integer images OpenCV filters straight into float32 or float64 (ddepth CV_32F / CV_64F): it
# converts each sample as it reads it and then does the same float arithmetic as on a converted
# copy, so the 100 MB float copy of a 4K RGB photo (and its page faults) is skipped.  Only where
# that measured faster than converting first (4K RGB, medians of 7, float32): box 31x31 uint8
# 41 vs 78 ms, uint16 65 vs 140; gaussian 17+17 uint8 55 vs 108, int16 57 vs 83 but uint16
# 145 vs 77 (no vector path); filter2D 3x3 uint8 30 vs 39, while at 5x5 its integer path (not
# vectorised) loses, 65 vs 46, and from 50 taps it switches to a DFT for integer sources.
INTEGER_SOURCES = {"box": ("uint8", "uint16", "int16"), "separable": ("uint8", "int16"),
                   "filter": ("uint8", "uint16", "int16")}
INTEGER_FILTER_TAPS = 9


def reads_integers(op: str, dtype, kernel: np.ndarray) -> bool:
    """Whether OpenCV's ``op`` should read an image of ``dtype`` as it is rather than a float copy."""
    dtype = np.dtype(dtype)
    if dtype.name not in INTEGER_SOURCES.get(op, ()) or not dtype.isnative:  # OpenCV knows one byte order
        return False
    return op != "filter" or int(np.prod(kernel.shape[1:])) <= INTEGER_FILTER_TAPS


def full_then_subsample(plans: tuple[AxisPlan, ...], nonzero: int) -> bool:
    """For a stride: whether one full-resolution native call beats phases (which copy the input twice).

    Only possible when OpenCV's own border can serve the stride-1 geometry.
    """
    if all(p.stride == 1 for p in plans) or any(p.dilation != 1 for p in plans):
        return False
    for p in plans:
        after = p.taps - 1 - p.before  # of the stride-1 "same" geometry
        if p.before > p.length - 1 or not 0 <= after <= p.length - 1 or (p.out - 1) * p.stride > p.length - 1:
            return False
    # ns per input sample (measured, random 7x7 stride 2 on 4K RGB: full 95 ms, phases 170 ms):
    # full = every output at full resolution; phases = padding and phase copies, then per phase
    # a quarter-size call with a quarter of the taps, and an accumulation.
    phases = int(np.prod([min(p.stride, p.taps) for p in plans]))
    shrink = int(np.prod([p.stride for p in plans]))
    full = nonzero * 0.047 + 1.2 + 1.0 / shrink
    phased = 4.0 + phases * (nonzero / phases * 0.047 + 2.2) / shrink
    return full < phased


def correlate_2d(x, out, plans, border: BorderMode, value: float, kernel: np.ndarray, *,
                 factors=None, constant=None):
    """Fill ``out`` (``(lanes, Ho, Wo, trail)``) with the correlation of ``x`` (``(lanes, H, W, trail)``).

    ``kernel`` is ``(wl, kh, kw, wt)``: per-lane or per-trailing-channel
    weights when ``wl`` or ``wt`` is above 1.  ``factors`` (one
    ``(wl, taps, wt)`` array per axis) selects OpenCV's separable filter;
    ``constant`` (``(wl, 1, 1, wt)``) its box filter.
    """
    cv2 = _cv2()
    native = native_border(border, value, plans)
    subsample = None
    nonzero = int(np.count_nonzero(np.any(kernel != 0, axis=(0, 3))))
    if native is None and full_then_subsample(plans, nonzero):
        full = tuple(AxisPlan(p.length, p.taps, 1, 1, p.before, p.taps - 1 - p.before, p.length) for p in plans)
        native = native_border(border, value, full)
        if native is not None:
            subsample, plans = tuple(p.stride for p in plans), full
    if native is None:
        src = padded_whole(x, plans, border, value, out.dtype)
        geometry = tuple(p.valid() for p in plans)
    else:
        src, geometry = x, plans
    lanes, trail = x.shape[0], x.shape[-1]
    wl, wt = kernel.shape[0], kernel.shape[-1]
    shared_trail = wt == 1 and trail <= 4
    for lane in range(lanes):
        k = min(lane, wl - 1)
        if shared_trail:
            groups = [(slice(None), 0)]
        else:
            groups = [(slice(t, t + 1), t) for t in range(trail)]
        for channels, t in groups:
            image = src[lane, :, :, channels]
            spec = _Spec(kernel[k, :, :, min(t, wt - 1)],
                         None if factors is None else [f[k, :, min(t, wt - 1)] for f in factors],
                         None if constant is None else float(constant[min(k, constant.shape[0] - 1), 0, 0, min(t, wt - 1)]))
            target = out[lane, :, :, channels]
            if subsample is not None:
                _subsampled_in_bands(cv2, image, target, spec, geometry, native, subsample)
            elif native is not None and spec.constant is not None and image.shape[0] >= BOX_BAND_ROWS:
                _box_in_bands(cv2, image, target, spec, geometry, native)
            elif native is not None:
                _filter(cv2, image, target, spec.kernel, anchor=(geometry[1].before, geometry[0].before),
                        border=native, factors=spec.factors, constant=spec.constant)
            elif all(p.stride == 1 for p in geometry):
                # the padded copy is this call's own; each image of it is filtered once
                _dilated_grouped(cv2, image, target, spec, geometry, owned=True)
            else:
                _phased(cv2, image, target, spec, geometry)
    return out


def _dilated_grouped(cv2, image, target, spec, plans, owned: bool = False):
    """A dilated correlation as one undilated OpenCV call, by regrouping the padded image's memory.

    With dilations ``(dy, dx)``, the padded ``(H, W, C)`` image's memory is
    also a ``(H / dy, dy * W / dx, dx * C)`` image: row phases side by side,
    column phases as extra channels.  Its undilated correlation, read back
    as ``(H, W, C)``, is the dilated correlation at every padded position
    (each tap stays inside its own phase for every output that is kept).
    No phase copies, one call: 7x7 dilation 2 on 4K RGB 90 ms, phases 210.
    """
    dy, dx = plans[0].dilation, plans[1].dilation
    rows, cols = image.shape[:2]
    image = image.reshape(rows, cols, -1)
    channels = image.shape[2]
    tall, wide = -(-rows // dy) * dy, -(-cols // dx) * dx
    if (tall, wide) != (rows, cols) or not image.flags.c_contiguous:
        grown = np.zeros((tall, wide, channels), dtype=image.dtype)
        grown[:rows, :cols] = image
        image, owned = grown, True
    grouped = image.reshape(tall // dy, dy * (wide // dx), dx * channels)
    # In place when the padded image is ours to overwrite: one fresh 100 MB array fewer for a 4K image.
    result = grouped if owned else np.empty(grouped.shape, dtype=target.dtype)
    _filter(cv2, grouped, result, spec.kernel, anchor=(0, 0), border=cv2.BORDER_CONSTANT, factors=spec.factors,
            constant=spec.constant)
    full = result.reshape(tall, wide, channels)
    np.copyto(target, full[: target.shape[0], : target.shape[1]].reshape(target.shape), casting="unsafe")


# Full-resolution rows filtered at a time for a stride OpenCV cannot take itself: a few MB of
# scratch per band, still in cache when every s-th row and column of it is kept.
SUBSAMPLE_BAND_BYTES = 1 << 22


def _subsampled_in_bands(cv2, image, target, spec, plans, border, subsample):
    """A strided correlation as full-resolution OpenCV calls, band by band, keeping every s-th sample.

    Each band of output rows is computed from the input rows it needs plus
    its halo (OpenCV's border then pads only at the image's own edges; rows
    next to a band's cut are not kept), on every core, into a band-sized
    scratch: no full-resolution image is made (4K RGB, random 7x7, stride 2:
    40-48 ms against 58-76 ms for one full call and a strided copy, same
    values to the bit).
    """
    s0, s1 = subsample
    rows, cols = target.shape[0], target.shape[1]
    before, after = plans[0].before, plans[0].after
    row_bytes = image.shape[1] * int(np.prod(target.shape[2:], dtype=np.int64)) * target.dtype.itemsize
    step = max(1, SUBSAMPLE_BAND_BYTES // max(1, row_bytes * s0))

    def band(o0: int) -> None:
        o1 = min(rows, o0 + step)
        r0, r1 = o0 * s0, (o1 - 1) * s0 + 1  # full-resolution rows kept: r0, r0 + s0, ... < r1
        lo, hi = max(0, r0 - before), min(image.shape[0], r1 + after)
        scratch = np.empty((hi - lo,) + image.shape[1:2] + target.shape[2:], dtype=target.dtype)
        _filter(cv2, image[lo:hi], scratch, spec.kernel, anchor=(plans[1].before, before), border=border,
                factors=spec.factors, constant=spec.constant)
        np.copyto(target[o0:o1], scratch[r0 - lo:r1 - lo:s0, ::s1][:, :cols])

    run_all(band, range(0, rows, step))


# OpenCV's box filter runs on one core (filter2D and sepFilter2D use all):
# images of at least this many rows are cut into one band of rows per core.
# Measured on 4K RGB with a 31x31 box: 70 ms on one core.
BOX_BAND_ROWS = 256


def _box_in_bands(cv2, image, target, spec, plans, border):
    """The box filter on every core: each band is filtered with its halo rows, which are then dropped."""
    rows = image.shape[0]
    count = thread_count()
    edges = [rows * i // count for i in range(count + 1)]
    before, after = plans[0].before, plans[0].after

    def band(i):
        r0, r1 = edges[i], edges[i + 1]
        lo, hi = max(0, r0 - before), min(rows, r1 + after)
        scratch = np.empty((hi - lo,) + target.shape[1:], dtype=target.dtype)
        _filter(cv2, image[lo:hi], scratch, spec.kernel, anchor=(plans[1].before, before), border=border,
                constant=spec.constant)
        target[r0:r1] = scratch[r0 - lo: r1 - lo]

    run_all(band, range(count))


class _Spec:
    """One image's weights, and which OpenCV filter suits them."""

    def __init__(self, kernel, factors, constant):
        self.kernel = kernel
        self.factors = factors
        self.constant = constant


def _filter(cv2, image, target, kernel, *, anchor, border, factors=None, constant=None, valid=None):
    """One OpenCV call on an image; writes its ``valid`` top-left part (or all of it) into ``target``.

    ``target`` holds the compute type (float32 or float64); an integer
    ``image`` (see :func:`reads_integers`) is read as it is.
    """
    image = np.ascontiguousarray(image)
    dtype = target.dtype
    ddepth = -1 if image.dtype == dtype else (cv2.CV_32F if dtype == np.float32 else cv2.CV_64F)
    shape2 = image.shape[:2] if image.ndim == 3 and image.shape[2] == 1 else image.shape
    direct_out = (valid is None and target.flags.c_contiguous and target.shape[:2] == image.shape[:2]
                  and min(image.shape[:2]) > 1)
    dst = target.reshape(shape2) if direct_out else None
    if constant is not None:
        area = kernel.shape[0] * kernel.shape[1]  # box filter
        mean = abs(constant * area - 1.0) < 1e-12
        result = cv2.boxFilter(image, ddepth, (kernel.shape[1], kernel.shape[0]), dst=dst, anchor=anchor,
                               normalize=mean, borderType=border)
        if not mean:
            result *= dtype.type(constant)
    elif factors is not None:
        result = cv2.sepFilter2D(image, ddepth, np.ascontiguousarray(factors[1], dtype=dtype),
                                 np.ascontiguousarray(factors[0], dtype=dtype), dst=dst, anchor=anchor,
                                 borderType=border)
    else:
        result = cv2.filter2D(image, ddepth, np.ascontiguousarray(kernel, dtype=dtype), dst=dst, anchor=anchor,
                              borderType=border)
    if direct_out and np.shares_memory(result, target):
        return
    result = result.reshape(image.shape)
    if valid is not None:
        result = result[: valid[0], : valid[1]]
    np.copyto(target, result, casting="unsafe")


def _phased(cv2, image, target, spec: _Spec, plans):
    """Valid, strided, dilated correlation of a padded image as stride-1 valid OpenCV calls."""
    kernel = spec.kernel
    if any(p.dilation > 1 and p.stride > 1 for p in plans):
        kernel = _dilate(kernel, plans)
    started = set()  # output phases already written once
    for (in0, k0, out0), (in1, k1, out1) in itertools.product(*[_axis_jobs(p) for p in plans]):
        sub = kernel[k0, k1]
        rows = len(range(*out0.indices(target.shape[0])))
        cols = len(range(*out1.indices(target.shape[1])))
        if sub.size == 0 or rows == 0 or cols == 0:
            continue
        part = image[in0, in1][: rows + sub.shape[0] - 1, : cols + sub.shape[1] - 1]
        factors = None
        if spec.factors is not None and kernel is spec.kernel:
            factors = [spec.factors[0][k0], spec.factors[1][k1]]
        constant = spec.constant if spec.constant is not None and kernel is spec.kernel else None
        dest = target[out0, out1]
        key = (out0.start, out0.step, out1.start, out1.step)
        if key in started:
            scratch = np.empty(dest.shape, dtype=dest.dtype)
            _filter(cv2, part, scratch, sub, anchor=(0, 0), border=cv2.BORDER_CONSTANT, factors=factors,
                    constant=constant, valid=(rows, cols))
            dest += scratch
        else:
            _filter(cv2, part, dest, sub, anchor=(0, 0), border=cv2.BORDER_CONSTANT, factors=factors,
                    constant=constant, valid=(rows, cols))
            started.add(key)


def _axis_jobs(p: AxisPlan):
    """Per axis: ``(input slice, kernel slice, output slice)`` for each phase."""
    if p.stride == 1 and p.dilation == 1:
        return [(slice(None), slice(None), slice(None))]
    if p.stride == 1:  # dilation: output phase r reads input phase r, with every tap
        return [(slice(r, None, p.dilation), slice(None), slice(r, None, p.dilation))
                for r in range(min(p.dilation, p.out))]
    # stride (on the dilated kernel when both): input phase q meets taps q, q+s, ..., and the
    # phases add up into the whole output
    span = p.span if p.dilation > 1 else p.taps
    return [(slice(q, None, p.stride), slice(q, None, p.stride), slice(None)) for q in range(min(p.stride, span))]


def _dilate(kernel, plans):
    shape = tuple(p.span if p.stride > 1 else p.taps for p in plans)
    steps = tuple(p.dilation if p.stride > 1 else 1 for p in plans)
    full = np.zeros(shape, dtype=kernel.dtype)
    full[tuple(slice(None, None, s) for s in steps)] = kernel
    return full


# --------------------------------------------------------------------------- 3-D, plane by plane
def planes_native(border: BorderMode, value: float, plans: tuple[AxisPlan, ...]) -> bool:
    """Whether a volume can run plane by plane: OpenCV pads every (y, x) plane itself."""
    return len(plans) == 3 and native_geometry(border, value, plans[1:]) and not (
        border.numpy_mode == "constant" and value != 0)


def correlate_3d(x, out, plans, border: BorderMode, value: float, kernel: np.ndarray, *, factors=None):
    """Fill ``out`` (``(lanes, Zo, Yo, Xo, trail)``) from a volume, one OpenCV call per (y, x) plane.

    Output plane ``m`` adds, for every z tap ``i``, the 2-D correlation of
    input plane ``m s + i d`` (mapped through the border rule) with the
    kernel's slice ``i``: the first OpenCV call writes the output plane
    itself, a slice with a single centred weight (the z neighbours of a
    laplacian) is added in place (+-1 by numpy's add or subtract, another
    weight by OpenCV's ``scaleAdd``, through a scratch plane only where the
    planes are not contiguous); a single off-centre weight is a shifted
    copy.  A separable kernel runs its z pass first, as one column filter
    over each band of planes seen as a (planes, y*x) image, then one
    separable call per plane.  ``kernel`` is ``(kz, ky, kx)``, shared by
    every lane and channel.
    """
    cv2 = _cv2()
    py, px = plans[1:]
    anchor = (px.before, py.before)
    yx_border = native_border(border, value, plans[1:])
    lanes, trail = x.shape[0], x.shape[-1]
    dtype = out.dtype
    for lane in range(lanes):
        for group in ([slice(None)] if trail <= 4 else [slice(t, t + 1) for t in range(trail)]):
            src = x[lane][..., group]
            dst = out[lane][..., group]
            if factors is not None:
                _separable_3d(cv2, src, dst, plans, border, factors, anchor, yx_border)
            else:
                _sliced_3d(cv2, src, dst, plans, border, kernel.astype(dtype), anchor, yx_border)
    return out


# Output planes per task of the plane-by-plane path: tasks are taken by whichever core is free (on
# a shared machine one core may be busy elsewhere), and a plane's z neighbours, read again by the
# next planes of the same task, are still in that core's cache.
PLANE_CHUNK = 16


class _Slice:
    """How one z slice of the kernel reaches an output plane.

    ``kind`` is ``filter`` (an OpenCV call with ``weights``), ``add`` (the
    whole source plane times ``weight``: a single centred tap) or ``shift``
    (a single off-centre tap: a shifted copy of the plane times ``weight``).
    """

    def __init__(self, kind: str, weights=None, weight: float = 0.0, dy: int = 0, dx: int = 0):
        self.kind, self.weights, self.weight, self.dy, self.dx = kind, weights, weight, dy, dx


def _z_slices(kernel, py: AxisPlan, px: AxisPlan) -> tuple[list[int], list[_Slice]]:
    """The kernel's non-zero z slices, OpenCV's first (the first one writes the output plane)."""
    live = []
    for i in range(kernel.shape[0]):
        nz = np.argwhere(kernel[i] != 0)
        if len(nz) == 0:
            continue
        if len(nz) == 1:
            a, b = (int(v) for v in nz[0])
            dy, dx = a - py.before, b - px.before
            weight = float(kernel[i][a, b])
            if dy == 0 and dx == 0:
                live.append((i, _Slice("add", weight=weight)))
                continue
            if abs(dy) <= py.length - 1 and abs(dx) <= px.length - 1:
                live.append((i, _Slice("shift", weight=weight, dy=dy, dx=dx)))
                continue
        live.append((i, _Slice("filter", weights=np.ascontiguousarray(kernel[i]))))
    live.sort(key=lambda item: item[1].kind != "filter")
    return [i for i, _ in live], [s for _, s in live]


def _sliced_3d(cv2, src, dst, plans, border, kernel, anchor, yx_border):
    """Output planes in tasks of ``PLANE_CHUNK`` planes on every core (OpenCV and numpy release
    the GIL; OpenCV's own threads gain little on one small plane)."""
    pz, py, px = plans
    if src.shape[-1] == 1:  # one channel: 2-D planes, which OpenCV reads and writes in place
        src, dst = src[..., 0], dst[..., 0]
    taps, slices = _z_slices(kernel, py, px)
    # Every output plane's source plane for every live z tap, mapped through the border rule once.
    positions = np.arange(pz.out)[:, None] * pz.stride + np.array(taps, dtype=np.intp)[None, :] * pz.dilation
    sources = source_index(positions - pz.before, pz.length, border).reshape(pz.out, len(taps)).tolist()
    contiguous = src.flags.c_contiguous and dst.flags.c_contiguous and src.dtype == dst.dtype
    run = lambda start: _sliced_planes(cv2, src, dst, slices, sources, anchor, yx_border, border,  # noqa: E731
                                       contiguous, start, min(start + PLANE_CHUNK, pz.out))
    run_all(run, range(0, pz.out, PLANE_CHUNK))


def _sliced_planes(cv2, src, dst, slices, sources, anchor, yx_border, border, contiguous, first_plane,
                   stop_plane):
    scratch = None
    for m in range(first_plane, stop_plane):
        target = dst[m]
        first = True
        for s, step in zip(sources[m], slices):
            if s < 0:
                continue  # a zero plane
            plane = src[s]
            if step.kind == "filter":
                if first and contiguous:
                    # One OpenCV call writes the output plane itself: no numpy temporary.
                    result = cv2.filter2D(plane, -1, step.weights, dst=target, anchor=anchor,
                                          borderType=yx_border)
                    if result is not target:
                        np.copyto(target, result)
                elif first:
                    _filter(cv2, plane, target, step.weights, anchor=anchor, border=yx_border)
                else:
                    if scratch is None:
                        scratch = np.empty(target.shape, dtype=target.dtype)
                    _filter(cv2, plane, scratch, step.weights, anchor=anchor, border=yx_border)
                    np.add(target, scratch, out=target)
                first = False
                continue
            view = plane if step.kind == "add" else _shifted(plane, step.dy, step.dx, border)
            w = step.weight
            if not first and w not in (1.0, -1.0) and contiguous and view.flags.c_contiguous:
                result = cv2.scaleAdd(view, w, target, dst=target)  # w * view + target, one pass in place
                if result is not target:
                    np.copyto(target, result)
            else:
                scratch = add_scaled(target, view, w, scratch, first=first)
            first = False
        if first:
            target[...] = 0


def _shifted(plane, dy: int, dx: int, border):
    """``plane`` shifted by (dy, dx) with the border rule: out[y, x] = plane[y + dy, x + dx]."""
    if dy == 0 and dx == 0:
        return plane
    ys = source_index(np.arange(plane.shape[0]) + dy, plane.shape[0], border)
    xs = source_index(np.arange(plane.shape[1]) + dx, plane.shape[1], border)
    out = plane[np.maximum(ys, 0)][:, np.maximum(xs, 0)]
    out[ys < 0] = 0  # only the zeros border maps outside
    out[:, xs < 0] = 0
    return out


# Output planes per band of the z pass, and columns (of y*x) per OpenCV call:
# OpenCV keeps a ring of about 20 rows per thread, so narrow calls keep its
# buffers small (the 3-D gaussian on 256^3 must peak under 3x the volume's
# memory, the interpreter and OpenCV included).
Z_BAND = 64
Z_COLUMNS = 16384


def _separable_3d(cv2, src, dst, plans, border, factors, anchor, yx_border):
    """z pass as OpenCV column filters over bands of planes seen as (planes, y*x) images,
    then one separable OpenCV call per (y, x) plane, in place.

    (Single-thread CPU time, z pass of a 256^3 gaussian: filter2D with a
    17x1 kernel 60 ms, sepFilter2D 84 ms, numpy paired-tap passes 152 ms.)
    Inside the volume a band is a view of the input and the column filter
    writes straight into the output; it writes as many rows as it reads, and
    the rows past the band land on output planes that the next band
    overwrites; the last band, whose extra rows would fall past the output,
    writes into a scratch of one call's columns instead (a chunk of a volume
    has as many such planes as the kernel's span: numpy would sum a quarter
    of a 64-plane chunk at three times the cost).  Planes whose z window
    crosses the volume's ends are summed by numpy from the border-mapped
    input planes.  No scratch volume.
    """
    pz = plans[0]
    dtype = dst.dtype
    gz, gy, gx = (np.ascontiguousarray(f, dtype=dtype) for f in factors)
    column = np.zeros((pz.span, 1), dtype=dtype)
    column[:: pz.dilation, 0] = gz
    plane = int(np.prod(src.shape[1:]))
    fast = (pz.stride == 1 and dst.flags.c_contiguous and src.flags.c_contiguous and src.dtype == dtype)
    # Output planes whose whole window lies inside the volume, and for which the filter's extra
    # rows stay inside the output.
    first = -(-pz.before // pz.stride)
    inside = min((pz.length - pz.span + pz.before) // pz.stride, pz.out - 1) if fast else first - 1
    last = min(inside, pz.out - pz.span)
    m = 0
    while m < pz.out:
        if fast and first <= m <= inside:
            m1 = min((last if m <= last else inside) + 1, m + Z_BAND)
            lo = m - pz.before
            rows = m1 - m + pz.span - 1
            block = src[lo:lo + rows].reshape(rows, plane)
            into = dst[m:m + rows].reshape(-1, plane)
            scratch = None if m <= last else np.empty((rows, min(plane, Z_COLUMNS)), dtype=dtype)
            for c0 in range(0, plane, Z_COLUMNS):
                cols = slice(c0, c0 + Z_COLUMNS)
                width = min(plane - c0, Z_COLUMNS)
                target = into[:, cols] if scratch is None else scratch[:, :width]
                result = cv2.filter2D(block[:, cols], -1, column, dst=target, anchor=(0, 0),
                                      borderType=cv2.BORDER_CONSTANT)
                if scratch is not None or not np.shares_memory(result, into):
                    into[:, cols] = result[:into.shape[0]]
        else:
            m1 = m + 1
            target = dst[m]
            target[...] = 0
            sources = source_index(m * pz.stride + np.arange(pz.taps) * pz.dilation - pz.before, pz.length, border)
            scratch = None
            for w, s in zip(gz.tolist(), sources):
                if s >= 0 and w != 0:
                    scratch = add_scaled(target, src[s], w, scratch)
        _each_plane(lambda r: _filter(cv2, dst[r], dst[r], None, anchor=anchor, border=yx_border,
                                      factors=(gy, gx)), m, m1)
        m = m1


def fills_in_place(plans: tuple[AxisPlan, ...], border: BorderMode, value: float, trail: int) -> bool:
    """Whether a separable kernel can filter a volume in its own memory (:func:`separable_3d_in_place`).

    Every axis at stride and dilation 1 with the "same" geometry and a
    border OpenCV pads itself, at most four channels (one OpenCV image).
    """
    return len(plans) == 3 and trail <= 4 and native_border(border, value, plans) is not None


# Columns of the (Z, Y*X*C) view filtered by one z-pass call in place: 4 MB of a 256-plane
# float32 volume, a block that stays in cache while OpenCV runs its column filter down it.
Z_IN_PLACE_COLUMNS = 4096


def separable_3d_in_place(vol: np.ndarray, plans: tuple[AxisPlan, ...], border: BorderMode, value: float,
                          factors) -> np.ndarray:
    """Filter the C-contiguous ``vol`` (``(Z, Y, X, C)``) by a separable kernel, in place.

    Every (y, x) plane goes through OpenCV's separable filter in place, then
    the z pass runs as OpenCV column filters down blocks of columns of the
    volume seen as a ``(Z, Y*X*C)`` image, in place as well (OpenCV's filter
    keeps the source rows it still needs).  Both passes pad with OpenCV's own
    border (``fills_in_place`` must hold), so no second volume is made: a
    256^3 float32 gaussian costs the volume and a few MB, not twice it.
    """
    cv2 = _cv2()
    pz, py, px = plans
    dtype = vol.dtype
    gz, gy, gx = (np.ascontiguousarray(f, dtype=dtype) for f in factors)
    yx_border = native_border(border, value, plans[1:])
    z_border = native_border(border, value, plans[:1])
    _each_plane(lambda r: _filter(cv2, vol[r], vol[r], None, anchor=(px.before, py.before), border=yx_border,
                                  factors=(gy, gx)), 0, pz.length)
    flat = vol.reshape(pz.length, -1)
    column, one = gz.reshape(-1, 1), np.ones((1, 1), dtype=dtype)

    def z_pass(c0: int) -> None:
        block = flat[:, c0:c0 + Z_IN_PLACE_COLUMNS]
        result = cv2.sepFilter2D(block, -1, one, column, dst=block, anchor=(0, pz.before), borderType=z_border)
        if not np.shares_memory(result, block):  # OpenCV made an array of its own
            block[...] = result

    run_all(z_pass, range(0, flat.shape[1], Z_IN_PLACE_COLUMNS))
    return vol


def _each_plane(work, start: int, stop: int) -> None:
    """``work(r)`` for planes ``start..stop``, one contiguous run per core (OpenCV releases the GIL)."""
    count = thread_count() if stop - start >= 8 else 1
    edges = [start + (stop - start) * i // count for i in range(count + 1)]

    def run(i):
        for r in range(edges[i], edges[i + 1]):
            work(r)

    run_all(run, range(count))
