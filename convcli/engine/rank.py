"""Rank filters: the r-th smallest sample under a footprint, over the engine's window geometry.

``rank_filter(x, footprint, rank)`` is to order statistics what
``correlate`` is to weighted sums, with the same keywords: the footprint
(a boolean mask, one axis per spatial axis) is laid over the padded
samples as a kernel is, with the same stride, padding, border modes and
dilation, so output ``o`` ranks ``padded[o * stride + j * dilation]`` over
the taps ``j`` where the footprint is true.  Rank 0 is the minimum
(erosion), ``n - 1`` (or -1) the maximum (dilation by the reflected
footprint), ``n // 2`` the median: scipy.ndimage's ``rank_filter``,
``minimum_filter``, ``maximum_filter`` and ``median_filter`` exactly,
its border modes named as in :mod:`.borders`.

The result keeps the input's type (a rank filter picks one of the input's
samples; ``bool`` stays ``bool``), unless ``precision`` asks for a float
type.  NaN propagates within its window, as with the linear filters: an
output is NaN exactly where its window holds a NaN (scipy leaves this
undefined; OpenCV returns any of the window's values).

Algorithms (``method="auto"`` picks, ``"direct"`` forces numpy,
``"opencv"`` OpenCV): OpenCV's medianBlur, erode and dilate in bands
(:mod:`.compiled_rank`); in numpy, running extrema, selection networks and
a partial sort (:mod:`.selection`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import ParameterError, shown
from ..parallel import map_ordered, thread_count
from . import bands, compiled_rank, selection
from .borders import BorderMode, parse_pad_mode
from .geometry import AxisPlan, output_shape, plan_axes

METHODS = ("auto", "direct", "opencv")
# Taps beyond which one footprint is refused: a window this large is a mistake, not a filter.
MAX_TAPS = 1 << 20
# Measured per output sample (float32, in cache): a network step ~0.4 ns, a partial sort
# ~6.5 ns per tap; the network wins up to about 250 taps.
NETWORK_NS_PER_STEP = 0.4
PARTITION_NS_PER_TAP = 6.5


@dataclass(frozen=True, eq=False)
class RankPlan:
    """Everything decided before a sample is read: layout, geometry, footprint, rank and algorithm."""

    spatial_ndim: int
    channel_axis: int | None  # non-negative, or None
    batch_shape: tuple[int, ...]
    channels: int
    axes: tuple[AxisPlan, ...]
    border: BorderMode
    border_value: float
    footprint: np.ndarray  # bool, one axis per spatial axis
    rank: int  # 0-based among the footprint's taps
    work_dtype: np.dtype  # the samples are ranked in this type
    dtype: np.dtype  # of the result
    method: str  # direct | opencv
    algorithm: str  # network | extrema | partition | medianBlur | erode | dilate | planes

    @property
    def taps(self) -> int:
        return int(np.count_nonzero(self.footprint))

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the result, in the layout of the input."""
        return output_shape(self.batch_shape, self.axes, self.channel_axis, self.channels)

    def padding(self) -> tuple[tuple[int, int], ...]:
        """Samples of padding (before, after) on each spatial axis."""
        return tuple((p.before, p.after) for p in self.axes)

    def reason(self) -> str:
        """What runs, in a few words: the algorithm, the window and where it comes from."""
        window = "x".join(str(n) for n in self.footprint.shape)
        what = {0: "minimum", self.taps - 1: "maximum"}.get(self.rank, f"rank {self.rank} of {self.taps}")
        if self.rank == self.taps // 2 and self.taps > 2:
            what = "median"
        shape_note = "a rectangle as running extrema" if self.footprint.all() else "the mask tap by tap"
        how = {
            "medianBlur": "OpenCV medianBlur (constant-time histogram for uint8, sorting network for 3x3 and 5x5)",
            "erode": f"OpenCV erode ({shape_note})",
            "dilate": f"OpenCV dilate ({shape_note})",
            "planes": "OpenCV per (y, x) plane, then running extrema along z",
            "extrema": "running extrema by doubling, one pass per axis of a box or per run of the footprint",
            "network": f"selection network of {len(selection.network(self.taps, self.rank))} compare-exchange steps",
            "partition": "partial sort (numpy.partition) of each window",
        }[self.algorithm]
        return f"{self.method}: {what} over {window} ({self.taps} taps) by {how}, in bands on every core"


def rank_filter(x, footprint, rank: int, *, stride=1, padding="same", pad_mode="reflect", dilation=1,
                channel_axis=None, method="auto", precision=None, spatial_ndim=None) -> np.ndarray:
    """The ``rank``-th smallest sample under ``footprint`` at every output position.

    Parameters
    ----------
    x : array_like
        The samples; the last ``footprint.ndim`` axes that are not
        ``channel_axis`` are spatial, leading axes are batch axes.
    footprint : array_like of bool
        Which taps of the window count, one axis per spatial axis.
    rank : int
        0 is the smallest, ``n - 1`` (or -1) the largest of the ``n`` taps.
    stride, padding, pad_mode, dilation, channel_axis :
        As in :func:`convcli.engine.correlate`.
    method : {"auto", "direct", "opencv"}
        ``direct`` computes in numpy, ``opencv`` in OpenCV (where it can).
    precision : {None, "float32", "float64"}
        The result's type; by default the input's.
    spatial_ndim : int, optional
        Must equal ``footprint.ndim`` when given.

    Returns
    -------
    numpy.ndarray
        Laid out like ``x``, spatial lengths from the geometry.

    Examples
    --------
    >>> rank_filter(np.array([5, 1, 9, 3, 7]), np.ones(3, dtype=bool), 1, pad_mode="replicate")  # a median of 3
    array([5, 5, 3, 7, 7])
    """
    x = _as_samples(x)
    plan = plan_rank(x.shape, footprint, rank, stride=stride, padding=padding, pad_mode=pad_mode, dilation=dilation,
                     channel_axis=channel_axis, method=method, precision=precision, spatial_ndim=spatial_ndim,
                     x_dtype=x.dtype)
    return execute_rank(plan, x)


def plan_rank(x_shape, footprint, rank: int, *, stride=1, padding="same", pad_mode="reflect", dilation=1,
              channel_axis=None, method="auto", precision=None, spatial_ndim=None, x_dtype=np.float32) -> RankPlan:
    """Decide layout, geometry and algorithm for a rank filter of an array of ``x_shape``, computing nothing."""
    footprint = as_footprint(footprint)
    nd = footprint.ndim
    if spatial_ndim is not None and spatial_ndim != nd:
        raise ParameterError(f"is {spatial_ndim}, but the footprint has {nd} axes", subject="spatial_ndim")
    axis, batch_shape, spatial_shape, channels = bands.split_shape(x_shape, channel_axis, nd)
    axes = plan_axes(spatial_shape, footprint.shape, stride=stride, padding=padding, dilation=dilation)
    border, value = parse_pad_mode(pad_mode)
    n = int(np.count_nonzero(footprint))
    order = normalised_rank(rank, n)
    work = work_dtype(x_dtype, border, value)
    dtype = result_dtype(work, precision)
    if method not in METHODS:
        raise ParameterError(f"must be one of {', '.join(METHODS)} for a rank filter, got {method!r}",
                             subject="method")
    chosen, name = choose_algorithm(footprint, order, axes, work, method)
    return RankPlan(nd, axis, batch_shape, channels, axes, border, value, footprint, order, work, dtype, chosen, name)


def as_footprint(footprint) -> np.ndarray:
    """A footprint as a read-only boolean array with at least one tap, or a ParameterError."""
    f = np.asarray(footprint)
    if f.dtype.kind not in "biuf":
        raise ParameterError(f"must hold booleans (or 0 and 1), got dtype {f.dtype}", subject="footprint")
    if f.ndim == 0 or f.size == 0:
        raise ParameterError(f"is empty (shape {f.shape}); give at least one tap per axis", subject="footprint")
    if f.dtype.kind != "b" and not np.isin(f, (0, 1)).all():
        raise ParameterError("must hold only 0 and 1 (or booleans)", subject="footprint")
    f = f.astype(bool)
    n = int(np.count_nonzero(f))
    if n == 0:
        raise ParameterError("has no taps (every entry is 0)", subject="footprint")
    if n > MAX_TAPS:
        raise ParameterError(f"has {n:,} taps, more than {MAX_TAPS:,}", subject="footprint")
    f.setflags(write=False)
    return f


def normalised_rank(rank, n: int) -> int:
    """``rank`` as 0..n-1 (a negative rank counts from the largest), or a ParameterError."""
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)):
        raise ParameterError(f"must be a whole number, got {shown(rank)}", subject="rank")
    order = int(rank) + n if rank < 0 else int(rank)
    if not 0 <= order < n:
        raise ParameterError(f"must be from {-n} to {n - 1} for a footprint of {n} taps, got {rank}", subject="rank")
    return order


def work_dtype(x_dtype, border: BorderMode, value: float) -> np.dtype:
    """The type samples are ranked in: the input's, unless the border constant does not fit it.

    A constant border of 0.5 around uint8 samples is ranked as 0.5, so the
    samples are then ranked as floats (and the result is a float).
    """
    dtype = np.dtype(x_dtype)
    if dtype.kind not in "biuf":
        raise ParameterError(f"must hold real numbers, got dtype {dtype}", subject="x")
    if border.numpy_mode != "constant" or value == 0:
        return dtype
    if dtype.kind == "f":
        return dtype if np.asarray(value, dtype=dtype) == value else np.dtype(np.float64)
    if dtype.kind in "iu" and np.iinfo(dtype).min <= value <= np.iinfo(dtype).max and value == int(value):
        return dtype
    wide = dtype.kind == "b" or np.iinfo(dtype).bits < 24
    return np.dtype(np.float32 if wide and np.float32(value) == value else np.float64)


def result_dtype(work: np.dtype, precision) -> np.dtype:
    if precision is None:
        return work
    if precision in ("float32", "float64"):
        return np.dtype(precision)
    raise ParameterError(f"must be float32 or float64, got {precision!r}", subject="precision")


def choose_algorithm(footprint: np.ndarray, rank: int, axes: tuple[AxisPlan, ...], dtype, method: str) -> tuple[str, str]:
    """(method, algorithm) for this filter: OpenCV where it can and ``method`` allows, else numpy's cheapest."""
    compiled = compiled_rank.algorithm(footprint, rank, axes, dtype) if method != "direct" else None
    if method == "opencv" and compiled is None:
        raise ParameterError(
            "opencv computes the median of an odd square window (3 or 5 wide, any width for uint8), and the "
            "minimum or maximum over a 2-D footprint or a 3-D box, at dilation 1 in the image plane; "
            "use method auto or direct", subject="method")
    if compiled is not None:
        return "opencv", compiled
    n = int(np.count_nonzero(footprint))
    if rank in (0, n - 1):
        return "direct", "extrema"
    network = selection.network_operations(n, rank) * NETWORK_NS_PER_STEP
    return "direct", "network" if network <= n * PARTITION_NS_PER_TAP else "partition"


def execute_rank(plan: RankPlan, x: np.ndarray) -> np.ndarray:
    """Run a plan made by :func:`plan_rank` on ``x``: NaN taken out, ranked, put back where windows held it."""
    with np.errstate(invalid="ignore", over="ignore"):
        nan = _nan_mask(x)
        if nan is None:
            result = _execute(plan, x)
        else:
            result = _execute(plan, np.where(nan, np.zeros((), x.dtype), x))
            spread = replace(plan, rank=plan.taps - 1, border_value=0.0, work_dtype=np.dtype(bool),
                             dtype=np.dtype(bool), method="direct", algorithm="extrema")
            result[_execute(spread, nan)] = np.nan
    return result if result.dtype == plan.dtype else result.astype(plan.dtype)


def _nan_mask(x: np.ndarray):
    """Where ``x`` holds NaN, or None when it holds none.

    The test is the maximum, which is NaN exactly when a sample is (a
    reduction as fast as memory: 7 ms for a 4K RGB float image on one core,
    half its sum's time), taken in parts on every core.
    """
    if x.dtype.kind != "f":
        return None
    parts = np.array_split(x, min(thread_count(), max(1, x.shape[0])), axis=0) if x.size >= 1 << 20 else [x]
    if not any(map_ordered(lambda part: bool(np.isnan(part.max())), parts)):
        return None
    return np.isnan(x)


def _execute(plan: RankPlan, x: np.ndarray) -> np.ndarray:
    layout = bands.layout_of(x.shape, plan.channel_axis, plan.spatial_ndim)
    xi = bands.to_internal(x, layout)
    work = plan.work_dtype
    if plan.method == "opencv" and work == bool:
        work = np.dtype(np.uint8)  # OpenCV knows no bool; 0 and 1 rank the same as uint8
        xi = xi.view(np.uint8) if xi.dtype == bool else xi
    out = np.empty((xi.shape[0],) + tuple(p.out for p in plan.axes) + (xi.shape[-1],), dtype=work)
    _STRATEGIES[plan.algorithm](plan, xi, out)
    if out.dtype != plan.work_dtype:
        out = out.view(plan.work_dtype)
    result = bands.from_internal(out, layout, plan.batch_shape, plan.channels)
    return np.ascontiguousarray(result)


def _run_numpy(plan: RankPlan, xi: np.ndarray, out: np.ndarray, piece_work) -> None:
    """Bands of output rows on every core; each band in chunks that keep a network's wires near the cache."""
    per_chunk = selection.CHUNK if plan.algorithm != "partition" else max(1, selection.PARTITION_VALUES // plan.taps)

    def compute(block, target, band_plans):
        for piece, into, plans in selection.chunks(block, target, band_plans, per_chunk):
            piece_work(piece, into, plans)

    bands.run_bands(xi, out, plan.axes, plan.border, plan.border_value, compute,
                    work=float(out.size) * max(plan.taps, 2))


def _run_extrema(plan: RankPlan, xi: np.ndarray, out: np.ndarray) -> None:
    op = np.minimum if plan.rank == 0 else np.maximum
    if plan.footprint.all():
        _run_numpy(plan, xi, out, lambda block, into, plans: selection.box_extreme(block, plans, op, into))
    else:
        _run_numpy(plan, xi, out,
                   lambda block, into, plans: selection.footprint_extreme(block, plans, plan.footprint, op, into))


def _run_network(plan: RankPlan, xi: np.ndarray, out: np.ndarray) -> None:
    _run_numpy(plan, xi, out, lambda block, into, plans: selection.run_network(
        selection.tap_views(block, plans, plan.footprint), plan.rank, into))


def _run_partition(plan: RankPlan, xi: np.ndarray, out: np.ndarray) -> None:
    _run_numpy(plan, xi, out, lambda block, into, plans: selection.partial_sort(
        selection.tap_views(block, plans, plan.footprint), plan.rank, into))


def _run_compiled(plan: RankPlan, xi: np.ndarray, out: np.ndarray) -> None:
    compiled_rank.rank_2d(plan.algorithm, xi, out, plan.axes, plan.border, plan.border_value, plan.footprint)


def _run_planes(plan: RankPlan, xi: np.ndarray, out: np.ndarray) -> None:
    op = np.minimum if plan.rank == 0 else np.maximum
    compiled_rank.extreme_planes(xi, out, plan.axes, plan.border, plan.border_value, op)


_STRATEGIES = {
    "extrema": _run_extrema, "network": _run_network, "partition": _run_partition,
    "medianBlur": _run_compiled, "erode": _run_compiled, "dilate": _run_compiled, "planes": _run_planes,
}


def _as_samples(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise ParameterError(f"must hold real numbers, got dtype {x.dtype}", subject="x")
    if x.size == 0:
        raise ParameterError(f"is empty (shape {x.shape})", subject="x")
    return x
