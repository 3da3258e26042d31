"""Greyscale morphology with a flat structuring element (a footprint), on the engine's window geometry.

With the footprint's taps B as offsets from each output sample (the
window laid as :func:`.rank.rank_filter` lays it)::

    erode(f)(o)   = min over b in B of f(o + b)        (scipy's grey_erosion)
    dilate(f)(o)  = max over b in B of f(o - b)        (scipy's grey_dilation: B reflected)
    open(f)       = dilate(erode(f))    close(f) = erode(dilate(f))
    tophat(f)     = f - open(f)         blackhat(f) = close(f) - f
    gradient(f)   = dilate(f) - erode(f)

so erosion is the minimum filter, opening is anti-extensive and
idempotent, closing extensive, and erosion and dilation are dual:
``erode(f, F) == -dilate(-f, reflected F)``.  On an axis where the window
spans an even number of samples the "same" rule centres it half a sample
after the output; the dilation is then centred half a sample before (see
:func:`reflection`), which is scipy's convention with ``origin=-1`` there.  A boolean image stays boolean (the differences are
then exclusive ors, as in scipy); other differences are float32 (float64
for float64 input), so nothing wraps.

Geometry: erode, dilate and gradient are single windows and take stride,
padding and dilation as any kernel does.  The two-step operations run
their first step over the whole input ("same" padding, stride 1) and their
second step with the geometry asked for; f itself, in tophat and
blackhat, is taken at the centre tap of each output's window.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import ParameterError
from .rank import RankPlan, as_footprint, execute_rank, plan_rank, result_dtype

OPERATIONS = ("erode", "dilate", "open", "close", "tophat", "blackhat", "gradient")


@dataclass(frozen=True, eq=False)
class MorphologyPlan:
    """A morphological operation decided: its rank-filter steps and the result's type."""

    operation: str
    outer: RankPlan  # the step with the geometry asked for: its grid is the result's
    inner: RankPlan | None  # open, close, tophat, blackhat: the first step, over the whole input
    grid: RankPlan  # the erosion with the geometry asked for: the centre of its window is each output's sample
    dtype: np.dtype

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.outer.output_shape

    @property
    def axes(self):
        return self.outer.axes

    @property
    def method(self) -> str:
        return self.outer.method

    def padding(self) -> tuple[tuple[int, int], ...]:
        return self.outer.padding()

    def reason(self) -> str:
        steps = {"erode": "the minimum", "dilate": "the maximum over the reflected footprint",
                 "open": "the minimum, then the maximum", "close": "the maximum, then the minimum",
                 "tophat": "the input minus its opening", "blackhat": "the closing minus the input",
                 "gradient": "the maximum minus the minimum"}
        return f"{self.operation}, {steps[self.operation]}; {self.outer.reason()}"


def plan_morphology(x_shape, operation: str, footprint, *, stride=1, padding="same", pad_mode="reflect", dilation=1,
                    channel_axis=None, method="auto", precision=None, spatial_ndim=None,
                    x_dtype=np.float32) -> MorphologyPlan:
    """Decide the steps of a morphological operation on an array of ``x_shape``, computing nothing."""
    if operation not in OPERATIONS:
        raise ParameterError(f"must be one of {', '.join(OPERATIONS)}, got {operation!r}", subject="operation")
    footprint = as_footprint(footprint)
    shared = dict(pad_mode=pad_mode, dilation=dilation, channel_axis=channel_axis, method=method,
                  spatial_ndim=spatial_ndim, x_dtype=x_dtype)

    first = {"open": "erode", "tophat": "erode", "close": "dilate", "blackhat": "dilate"}.get(operation)
    inner = None
    if first is not None:  # over the whole input: the second step's windows read it everywhere
        whole = plan_rank(x_shape, footprint, 0, stride=1, padding="same", **shared)
        inner = whole if first == "erode" else reflection(whole, x_shape, shared)
    grid = plan_rank(x_shape, footprint, 0, stride=stride, padding=padding, **shared)
    last_erodes = operation in ("erode", "close", "blackhat")
    outer = grid if last_erodes else reflection(grid, x_shape, shared)
    if operation in ("tophat", "blackhat", "gradient"):
        dtype = difference_dtype(outer.work_dtype, precision)
    else:
        dtype = result_dtype(outer.work_dtype, precision)
    return MorphologyPlan(operation, outer, inner, grid, dtype)


def reflection(erosion: RankPlan, x_shape, shared: dict) -> RankPlan:
    """The dilation that reflects ``erosion``: the maximum over the reflected footprint, on the same output grid.

    Along an axis whose window spans an odd number of samples, reflecting the
    footprint in its box reflects it about the window's centre sample.  An
    even span has no centre sample: there the window is also taken one
    sample earlier (the padding before and after swapped), so that under
    "same" padding the dilation is exactly the reflection of the erosion
    about each sample, and opening and closing do not move the signal.
    """
    footprint = erosion.footprint[(slice(None, None, -1),) * erosion.footprint.ndim]
    pairs = tuple((p.after, p.before) if p.span % 2 == 0 else (p.before, p.after) for p in erosion.axes)
    return plan_rank(x_shape, footprint, -1, stride=tuple(p.stride for p in erosion.axes), padding=pairs, **shared)


def difference_dtype(work: np.dtype, precision) -> np.dtype:
    """The type of a difference of two rank filters: bool for bool, else a float that holds it exactly.

    float32, the engine's compute type, holds every difference of 8- and
    16-bit samples; wider integers take float64.
    """
    if precision is not None:
        return result_dtype(work, precision)
    if work == bool:
        return work
    wide = work == np.float64 or (work.kind in "iu" and work.itemsize >= 4)
    return np.dtype(np.float64 if wide else np.float32)


def morphology_filter(x, operation: str, footprint, *, stride=1, padding="same", pad_mode="reflect", dilation=1,
                      channel_axis=None, method="auto", precision=None, spatial_ndim=None) -> np.ndarray:
    """Erode, dilate, open, close, tophat, blackhat or gradient ``x`` with a flat ``footprint``.

    Takes the keywords of :func:`convcli.engine.rank_filter`.

    Examples
    --------
    >>> x = np.array([0, 0, 5, 0, 0, 3, 3, 3, 0])
    >>> morphology_filter(x, "open", np.ones(3, dtype=bool))  # a peak narrower than the footprint goes
    array([0, 0, 0, 0, 0, 3, 3, 3, 0])
    """
    x = np.asarray(x)
    plan = plan_morphology(x.shape, operation, footprint, stride=stride, padding=padding, pad_mode=pad_mode,
                           dilation=dilation, channel_axis=channel_axis, method=method, precision=precision,
                           spatial_ndim=spatial_ndim, x_dtype=x.dtype)
    return execute_morphology(plan, x)


def execute_morphology(plan: MorphologyPlan, x: np.ndarray) -> np.ndarray:
    """Run a plan made by :func:`plan_morphology` on ``x``."""
    op = plan.operation
    if op == "gradient":
        return _difference(execute_rank(plan.outer, x), execute_rank(plan.grid, x), plan.dtype)
    first = x if plan.inner is None else execute_rank(plan.inner, x)
    second = execute_rank(plan.outer, first)
    if op in ("erode", "dilate", "open", "close"):
        return second if second.dtype == plan.dtype else second.astype(plan.dtype)
    centre = centre_samples(plan.grid, x)
    return _difference(centre, second, plan.dtype) if op == "tophat" else _difference(second, centre, plan.dtype)


def centre_samples(plan: RankPlan, x: np.ndarray) -> np.ndarray:
    """``x`` at the centre tap (the ``(k - 1) // 2``-th) of every output window of ``plan`` (x itself when that is
    the same grid)."""
    if all(p.stride == 1 and p.out == p.length and p.before == p.dilation * ((p.taps - 1) // 2) for p in plan.axes):
        return x
    centre = np.zeros(plan.footprint.shape, dtype=bool)
    centre[tuple((k - 1) // 2 for k in plan.footprint.shape)] = True
    return execute_rank(replace(plan, footprint=centre, rank=0, method="direct", algorithm="extrema"), x)


def _difference(a: np.ndarray, b: np.ndarray, dtype) -> np.ndarray:
    if dtype == bool:
        return np.not_equal(a, b)
    return np.subtract(a, b, dtype=dtype, casting="unsafe")
