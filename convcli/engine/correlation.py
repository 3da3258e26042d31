"""``correlate`` and ``convolve``: one worker, two faces."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError, did_you_mean
from . import bands, compiled, costs, running, shiftadd, spectral, strategies, toeplitz
from .borders import BorderMode, parse_pad_mode
from .geometry import AxisPlan, output_shape, plan_axes


@dataclass(frozen=True)
class Plan:
    """Everything decided before any sample is touched: layout, geometry, method."""

    spatial_ndim: int
    channel_axis: int | None  # normalised to a non-negative index, or None
    batch_shape: tuple[int, ...]
    channels: int
    per_channel: bool
    axes: tuple[AxisPlan, ...]
    border: BorderMode
    border_value: float
    dtype: np.dtype
    choice: strategies.Choice
    method: str

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the result, in the layout of the input."""
        return output_shape(self.batch_shape, self.axes, self.channel_axis, self.channels)

    def padding(self) -> tuple[tuple[int, int], ...]:
        """Samples of padding (before, after) on each spatial axis."""
        return tuple((p.before, p.after) for p in self.axes)


def correlate(
    x,
    kernel,
    *,
    stride=1,
    padding="same",
    pad_mode="reflect",
    dilation=1,
    channel_axis=None,
    method="auto",
    precision=None,
    spatial_ndim=None,
    out=None,
    on_rows=None,
    overwrite_x=False,
):
    """Cross-correlate ``x`` with ``kernel``: the kernel laid over the samples as written.

    Parameters
    ----------
    x : array_like or dask.array.Array
        The signal.  Its spatial axes are the last ``spatial_ndim`` axes that
        are not ``channel_axis``; other leading axes are batch axes, filtered
        with the same kernel.  A Dask array gives a lazy Dask array: each
        output chunk reads its halo from the neighbouring chunks and the
        border rule applies only at the array's true edges, so the computed
        result is the in-memory one to float rounding.
    kernel : array_like
        The weights, one axis per spatial axis; with ``channel_axis`` set, a
        leading axis of length C gives every channel its own weights
        (depthwise).
    stride, dilation : int or sequence of int
        One value for all spatial axes, or one per axis.
    padding : {"same", "valid", "full"} or int or sequence of int
        ``same`` follows TensorFlow (output ``ceil(n / stride)``), the others
        PyTorch's output-size formula.
    pad_mode : str
        Border mode: zeros, constant:V, reflect, symmetric, replicate,
        circular, or an alias (see ``convcli.engine.BORDER_MODES``).
    channel_axis : int, optional
        An axis of ``x`` whose channels are filtered independently.
    method : {"auto", "direct", "separable", "lowrank", "box", "toeplitz", "fft", "opencv"}
        The strategy; all agree to float tolerance.  ``auto`` picks the
        cheapest by :func:`convcli.engine.choose_method`.
    precision : {None, "float32", "float64"}
        The compute and output type; by default float64 for float64 input,
        float32 for everything else.
    spatial_ndim : int, optional
        How many axes are spatial; needed only when a depthwise kernel with
        batch axes would otherwise be ambiguous.
    out : numpy.ndarray, optional
        A writable array of the result's shape and type (float32, or float64
        as ``precision`` says) to fill instead of allocating one: a
        ``numpy.lib.format.open_memmap`` file, for instance.
    on_rows : callable, optional
        Streamed execution, for an ``x`` and ``out`` backed by files: the
        work runs band after band in order, only by the strategies that keep
        memory to a band (direct, separable), and after each wave of bands
        ``on_rows(input_rows, output_rows)`` says how many leading rows (along
        the first axis) of ``x`` will not be read again and of ``out`` are
        final, so the caller can let go of their pages.  Needs ``x`` without
        batch axes and with its channels, if any, last.
    overwrite_x : bool
        ``x`` may be destroyed (as in ``scipy.fft``).  Where the engine can
        (a separable kernel on a writable, C-ordered volume of the compute
        type, stride and dilation 1, "same" padding and a border OpenCV pads
        itself) the result is computed in ``x``'s memory and returned there,
        and no second volume is allocated; elsewhere the flag is ignored.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        The result, laid out like ``x`` with spatial lengths from the geometry
        (``out`` itself when given; lazy for a Dask ``x``).

    Examples
    --------
    >>> correlate(np.array([0.0, 1, 2, 3]), np.array([1.0, -1.0]), padding="valid")
    array([-1., -1., -1.])
    >>> correlate(np.arange(4), np.array([1.0, -1.0]), padding="valid")  # not float64: float32
    array([-1., -1., -1.], dtype=float32)
    """
    return _run(x, kernel, False, stride, padding, pad_mode, dilation, channel_axis, method, precision, spatial_ndim,
                out, on_rows, overwrite_x)


def convolve(
    x,
    kernel,
    *,
    stride=1,
    padding="same",
    pad_mode="reflect",
    dilation=1,
    channel_axis=None,
    method="auto",
    precision=None,
    spatial_ndim=None,
    out=None,
    on_rows=None,
    overwrite_x=False,
):
    """Convolve ``x`` with ``kernel``: correlation with the kernel flipped on every spatial axis.

    Takes the same parameters as :func:`correlate`.
    """
    return _run(x, kernel, True, stride, padding, pad_mode, dilation, channel_axis, method, precision, spatial_ndim,
                out, on_rows, overwrite_x)


def _run(x, kernel, flip, stride, padding, pad_mode, dilation, channel_axis, method, precision, spatial_ndim,
         out=None, on_rows=None, overwrite_x=False):
    if type(x).__module__.startswith("dask."):
        from .chunked import is_dask_array, lazy_correlate

        if is_dask_array(x):
            if out is not None or on_rows is not None:
                raise ParameterError("a Dask array is filtered lazily: store the result with dask, not out= or "
                                     "on_rows=", subject="x")
            return lazy_correlate(x, kernel, flip=flip, stride=stride, padding=padding, pad_mode=pad_mode,
                                  dilation=dilation, channel_axis=channel_axis, method=method, precision=precision,
                                  spatial_ndim=spatial_ndim)
    x = _as_samples(x)
    kernel = _as_kernel(kernel)
    streamed = on_rows is not None
    plan = make_plan(
        x.shape, kernel, stride=stride, padding=padding, pad_mode=pad_mode, dilation=dilation,
        channel_axis=channel_axis, method=method, precision=precision, spatial_ndim=spatial_ndim,
        x_dtype=x.dtype, finite=None, streamed=streamed,
    )
    # A streamed plan only holds methods that keep NaN local, so the scan
    # (which would read a file-backed input whole) is never needed there.
    if method == "auto" and plan.choice.spreads_non_finite and not _all_finite(x):
        plan = make_plan(
            x.shape, kernel, stride=stride, padding=padding, pad_mode=pad_mode, dilation=dilation,
            channel_axis=channel_axis, method=method, precision=precision, spatial_ndim=spatial_ndim,
            x_dtype=x.dtype, finite=False,
        )
    return execute(plan, x, kernel, flip=flip, out=out, on_rows=on_rows, overwrite_x=overwrite_x)


# Plans made lately, by everything they depend on: a loop over frames, files or bands of one size with one
# kernel (a batch, a photo's bands, a network's layers, a benchmark) plans once.  Plans are frozen.
PLAN_CACHE_SIZE = 256
_PLANS: dict = {}


def make_plan(
    x_shape, kernel, *, stride=1, padding="same", pad_mode="reflect", dilation=1, channel_axis=None,
    method="auto", precision=None, spatial_ndim=None, x_dtype=np.float32, finite=None, streamed=False,
) -> Plan:
    """Decide layout, geometry and method for correlating an array of ``x_shape`` with ``kernel``.

    With ``streamed`` only the strategies that work band by band and keep a
    NaN within its footprint (``STREAMED_METHODS``) are considered or allowed.
    """
    weights = np.asarray(kernel)
    if weights.size > strategies.FACTOR_CACHE_WEIGHTS or weights.dtype.kind not in "biuf":
        return _make_plan(x_shape, kernel, stride, padding, pad_mode, dilation, channel_axis, method, precision,
                          spatial_ndim, x_dtype, finite, streamed)
    key = (tuple(int(n) for n in x_shape), weights.shape, weights.dtype.str, weights.tobytes(),
           repr((stride, padding, pad_mode, dilation, channel_axis, method, precision, spatial_ndim)),
           np.dtype(x_dtype).str, finite, streamed, _imported())
    plan = _PLANS.get(key)
    if plan is None or (not _AS_LOADED and _import_pays(plan.choice)):
        plan = _make_plan(x_shape, weights, stride, padding, pad_mode, dilation, channel_axis, method, precision,
                          spatial_ndim, x_dtype, finite, streamed)
        _PLANS.pop(key, None)
        if len(_PLANS) >= PLAN_CACHE_SIZE:
            _PLANS.pop(next(iter(_PLANS)), None)  # the oldest
        _PLANS[key] = plan
    if not _AS_LOADED:
        _give_up_import(plan.choice)
    return plan


# Set by plan_as_loaded: every library counts as imported, and no credit is kept.
_AS_LOADED = False


def plan_as_loaded() -> None:
    """From now on, plan as if every library were imported: no method depends on what this process ran before.

    The file pipeline calls it.  Methods round differently in the last
    bit, so under the credit below a batch worker's tenth file could come
    out otherwise than the same file alone, once earlier files had paid
    for OpenCV's import.  A library is then imported by the first call
    that picks it.
    """
    global _AS_LOADED
    _AS_LOADED = True


# Per library not imported yet: the nanoseconds calls of this process gave up by doing without it (the credit
# of costs.import_cost).  Once they pay for the import, the next such call imports it.
_FORGONE: dict[str, float] = {}


def _import_pays(choice) -> bool:
    """Whether a plan made without a library should now import it: its saving on this call completes the price."""
    if choice.forgone is None:
        return False
    library, saving = choice.forgone
    return _FORGONE.get(library, 0.0) + saving >= costs.import_cost(library)


def _give_up_import(choice) -> None:
    if choice.forgone is not None:
        library, saving = choice.forgone
        _FORGONE[library] = _FORGONE.get(library, 0.0) + saving


def _imported() -> frozenset:
    """The libraries a strategy would import that are loaded already (their import no longer costs)."""
    import sys

    if _AS_LOADED:
        return frozenset(("cv2", "scipy.fft"))
    return frozenset(name for name in ("cv2", "scipy.fft") if name in sys.modules)


def _make_plan(x_shape, kernel, stride, padding, pad_mode, dilation, channel_axis, method, precision, spatial_ndim,
               x_dtype, finite, streamed) -> Plan:
    kernel = _as_kernel(kernel)
    x_shape = tuple(int(n) for n in x_shape)
    axis = _normalise_axis(channel_axis, len(x_shape))
    channels = x_shape[axis] if axis is not None else 1
    per_channel, nd = _kernel_layout(x_shape, kernel, axis, spatial_ndim)
    rest = [n for i, n in enumerate(x_shape) if i != axis]
    spatial_shape, batch_shape = tuple(rest[len(rest) - nd:]), tuple(rest[: len(rest) - nd])
    taps = kernel.shape[1:] if per_channel else kernel.shape
    axes = plan_axes(spatial_shape, taps, stride=stride, padding=padding, dilation=dilation)
    border, value = parse_pad_mode(pad_mode)
    dtype = _compute_dtype(x_dtype, precision)
    if method not in strategies.METHODS:
        raise ParameterError(f"must be one of {', '.join(strategies.METHODS)}, got {method!r}"
                             f"{did_you_mean(method, strategies.METHODS)}", subject="method")
    lanes = int(np.prod(batch_shape, dtype=np.int64)) * channels
    canonical = _canonical_kernel(kernel, per_channel)
    opencv = compiled.available() and (
        nd <= 2 or (compiled.planes_native(border, value, axes) and not per_channel and channels <= 4))
    if method in _NEEDS_NO_COST_MODEL:
        # A forced method that needs no factorisation skips the cost model (an SVD per
        # channel): a CNN plans hundreds of depthwise layers at start-up.  OpenCV still
        # asks whether the kernel is rank 1, to use its separable filter.
        separable = method == "opencv" and nd > 1 and strategies.channel_factors(canonical) is not None
        choice = strategies.Choice(method, {}, separable=separable)
    else:
        trail = channels if axis is not None and axis > len(batch_shape) else 1
        choice = strategies.choose_method(lanes, canonical, axes, finite=finite is not False, opencv=opencv,
                                          trail=trail, x_dtype=x_dtype, itemsize=dtype.itemsize,
                                          border_native=compiled.pads_itself(border, value),
                                          imported=_imported(), credit={} if _AS_LOADED else dict(_FORGONE))
    if streamed:
        choice = _streamed_choice(choice, method)
    chosen = choice.method if method == "auto" else method
    _check_forced(chosen, choice, canonical, nd, opencv)
    if chosen == "separable" and nd == 1:
        chosen = "direct"  # a 1-D kernel is trivially one pass
    if method != "auto" and choice.costs:  # the costs were weighed (for a factorisation), the user's method runs
        choice = dataclasses.replace(choice, method=chosen, forced=True, spreads_non_finite=False, forgone=None)
    return Plan(nd, axis, batch_shape, channels, per_channel, axes, border, value, dtype, choice, chosen)


def rows_independent(plan: Plan, kernel, x_dtype) -> bool:
    """Whether every output row of ``plan`` is computed from its own window of input rows alone, the same way
    whatever rows surround it: then a band of rows with its halo gives those rows of the whole result bit for bit.

    True of the sums over each window (direct, separable, lowrank, OpenCV's
    filters) and of running sums where they are exact (box sums of
    integers); not of transforms and matrix products over whole rows or
    columns (fft, toeplitz, OpenCV's DFT), nor of running sums of floats,
    whose rounding depends on where the sum started.
    """
    method = plan.method
    if method in ("direct", "separable", "lowrank"):
        return True
    integers = np.dtype(x_dtype).kind in "biu"
    if method == "box":
        return integers
    if method != "opencv" or plan.spatial_ndim != 2:
        return False
    op = compiled.operation(_canonical_kernel(_as_kernel(kernel), plan.per_channel), plan.axes, plan.choice.separable,
                            plan.dtype)
    return op in ("filter", "separable") or (op == "box" and integers)


_NEEDS_NO_COST_MODEL = ("direct", "fft", "opencv", "toeplitz", "box")
# Band by band with O(band) scratch, NaN kept local: what a file-backed input may use.
STREAMED_METHODS = ("direct", "separable")


def _streamed_choice(choice, method: str):
    """Restrict a choice to ``STREAMED_METHODS``; refuse a forced method outside them."""
    if method not in ("auto",) + STREAMED_METHODS:
        raise ParameterError(
            f"a streamed input (larger than the memory budget) is filtered by {' or '.join(STREAMED_METHODS)} "
            f"only, not {method}", subject="method")
    if method != "auto" or choice.method in STREAMED_METHODS:
        return choice
    costs = {m: c for m, c in choice.costs.items() if m in STREAMED_METHODS}
    best = min(costs, key=costs.get) if costs else "direct"
    return strategies.Choice(best, costs, choice.separable, False)


def _check_forced(method: str, choice, kernel: np.ndarray, nd: int, opencv: bool) -> None:
    """Refuse a forced method that cannot compute this kernel, naming what can."""
    if method == "separable" and not choice.separable and nd > 1:
        raise ParameterError(
            "the kernel is not separable (not rank 1); use method direct, lowrank, fft or auto", subject="method"
        )
    if method == "lowrank" and not strategies.lowrank_affordable(kernel.shape):
        taps = "x".join(str(n) for n in kernel.shape[1:])
        raise ParameterError(
            f"lowrank factors the kernel by SVD, and a {taps} kernel would take minutes to factor; use another "
            "method", subject="method")
    if method == "box" and running.box_weights(kernel) is None:
        raise ParameterError("the kernel is not a box (all weights equal and non-zero); use another method",
                             subject="method")
    if method == "toeplitz" and nd != 1:
        raise ParameterError(f"toeplitz works on 1-D kernels, this one has {nd} axes; use another method",
                             subject="method")
    if method == "opencv":
        if nd > 2 and compiled.available() and not opencv:
            raise ParameterError(
                "opencv filters a volume plane by plane with one kernel for all channels and its own (y, x) "
                "border: reflect, symmetric, replicate or zeros, stride and dilation 1 on y and x; "
                "use another method", subject="method")
        if not compiled.available():
            raise ParameterError("OpenCV is not installed (pip install opencv-python-headless); use another method",
                                 subject="method")


def execute(plan: Plan, x: np.ndarray, kernel: np.ndarray, *, flip: bool = False, out=None,
            on_rows=None, overwrite_x: bool = False) -> np.ndarray:
    """Run a plan made by :func:`make_plan` on the samples ``x``, into ``out`` when given.

    ``out``, ``on_rows`` and ``overwrite_x`` are as in :func:`correlate`.
    """
    # NaN and infinity in the input are data, not accidents: they propagate
    # (within their receptive field) without numpy warnings on stderr.
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if overwrite_x and out is None and on_rows is None and _fills_in_place(plan, x, kernel):
            return _in_place(plan, x, kernel, flip)
        return _execute(plan, x, kernel, flip, out, on_rows)


def _fills_in_place(plan: Plan, x: np.ndarray, kernel: np.ndarray) -> bool:
    """Whether ``x`` can hold its own result: see ``overwrite_x`` in :func:`correlate`."""
    if plan.method != "opencv" or plan.spatial_ndim != 3 or not plan.choice.separable:
        return False
    if not (isinstance(x, np.ndarray) and x.dtype == plan.dtype and x.flags.writeable and x.flags.c_contiguous):
        return False
    if plan.channel_axis is not None and plan.channel_axis != x.ndim - 1:
        return False
    canonical = _canonical_kernel(_as_kernel(kernel), plan.per_channel)
    return (not plan.per_channel and compiled.operation(canonical, plan.axes, True, plan.dtype) == "separable"
            and compiled.fills_in_place(plan.axes, plan.border, plan.border_value, plan.channels))


def _in_place(plan: Plan, x: np.ndarray, kernel: np.ndarray, flip: bool) -> np.ndarray:
    kernel = _canonical_kernel(_as_kernel(kernel), plan.per_channel)
    if flip:
        kernel = kernel[(slice(None),) + (slice(None, None, -1),) * 3]
    factors = [_mirror_exact(f)[0] for f in strategies.channel_factors(kernel.astype(np.float64))]
    spatial = x.shape[len(plan.batch_shape):len(plan.batch_shape) + 3]
    volumes = x.reshape((-1,) + spatial + (plan.channels if plan.channel_axis is not None else 1,))
    for volume in volumes:
        compiled.separable_3d_in_place(volume, plan.axes, plan.border, plan.border_value, factors)
    return x


def _execute(plan: Plan, x: np.ndarray, kernel: np.ndarray, flip: bool, out=None, on_rows=None) -> np.ndarray:
    nd = plan.spatial_ndim
    kernel = _canonical_kernel(_as_kernel(kernel), plan.per_channel)
    if flip:
        kernel = kernel[(slice(None),) + (slice(None, None, -1),) * nd]
    layout = bands.layout_of(x.shape, plan.channel_axis, nd)
    xi = bands.to_internal(x, layout)
    lanes, trail = xi.shape[0], xi.shape[-1]
    shape = (lanes,) + tuple(p.out for p in plan.axes) + (trail,)
    extra = {}
    if on_rows is not None:
        if plan.method not in STREAMED_METHODS or lanes != 1:
            raise ParameterError(
                f"streamed execution needs method {' or '.join(STREAMED_METHODS)} and no batch axes or leading "
                f"channels (method {plan.method}, {lanes} lanes)", subject="on_rows")
        extra["on_rows"] = on_rows
    target = None if out is None else _check_out(out, plan)
    oi = None if target is None else bands.to_internal(target, layout)
    if oi is not None and not np.shares_memory(oi, target):
        oi = None  # an ``out`` whose layout cannot be viewed internally: fill a copy, then ``out``
    if oi is None:
        oi = np.empty(shape, dtype=plan.dtype)
    _STRATEGIES[plan.method](plan, xi, kernel, oi, layout, **extra)
    if target is not None:
        if not np.shares_memory(oi, target):
            target[...] = bands.from_internal(oi, layout, plan.batch_shape, plan.channels)
        return out
    result = bands.from_internal(oi, layout, plan.batch_shape, plan.channels)
    return np.ascontiguousarray(result)


def _check_out(out, plan: Plan) -> np.ndarray:
    """``out`` as an ndarray, refused unless writable and of the plan's shape and type."""
    if not isinstance(out, np.ndarray):
        raise ParameterError(f"must be a numpy array, got {type(out).__name__}", subject="out")
    if out.shape != plan.output_shape or out.dtype != plan.dtype:
        raise ParameterError(
            f"has shape {out.shape} and type {out.dtype}; the result needs {plan.output_shape} {plan.dtype}",
            subject="out")
    if not out.flags.writeable:
        raise ParameterError("is read-only", subject="out")
    return out


def _weights(kernel: np.ndarray, dtype, layout, lanes: int) -> np.ndarray:
    """``(C, *taps)`` weights as ``taps + (wl, wt)``, in the compute type."""
    return bands.tap_weights(np.asarray(kernel, dtype=dtype), layout, lanes)


def _laid_out_factors(factors: list[np.ndarray], dtype, layout, lanes: int) -> list[np.ndarray]:
    return [_weights(f, dtype, layout, lanes) for f in factors]


def _work(out: np.ndarray, taps: int) -> float:
    return float(out.size) * max(taps, 1)


def _run_direct(plan, xi, kernel, out, layout, on_rows=None):
    weights = _weights(kernel, plan.dtype, layout, xi.shape[0])
    compute = lambda block, target, plans: shiftadd.direct(block, target, plans, weights)  # noqa: E731
    bands.run_bands(xi, out, plan.axes, plan.border, plan.border_value, compute, work=_work(out, kernel[0].size),
                    on_rows=on_rows)


def _run_separable(plan, xi, kernel, out, layout, on_rows=None):
    factors = _laid_out_factors(strategies.channel_factors(kernel.astype(np.float64)), plan.dtype, layout, xi.shape[0])
    # Bands are padded along the first axis only; its pass runs on a view of
    # the input and the other axes are padded on the smaller result.  That
    # commutes with every border rule but a non-zero constant (which the
    # first pass would have scaled).
    late = plan.spatial_ndim > 1 and not (plan.border.numpy_mode == "constant" and plan.border_value != 0)
    compute = lambda block, target, plans: shiftadd.separable(  # noqa: E731
        block, target, plans, factors, border=plan.border if late else None, value=plan.border_value)
    bands.run_bands(xi, out, plan.axes, plan.border, plan.border_value, compute,
                    work=_work(out, sum(kernel.shape[1:])), pad_rest=not late, on_rows=on_rows)


def _run_lowrank(plan, xi, kernel, out, layout):
    terms = [_laid_out_factors(t, plan.dtype, layout, xi.shape[0]) for t in strategies.channel_terms(kernel.astype(np.float64))]
    if not terms:
        out[...] = 0
        return
    compute = lambda block, target, plans: shiftadd.lowrank(block, target, plans, terms)  # noqa: E731
    bands.run_bands(xi, out, plan.axes, plan.border, plan.border_value, compute,
                    work=_work(out, len(terms) * sum(kernel.shape[1:])))


def _run_box(plan, xi, kernel, out, layout):
    constants = running.box_weights(kernel)
    weights = _weights(constants.reshape(-1, 1), np.float64, layout, xi.shape[0])[0]
    scale = bands.broadcast_weight(weights, plan.spatial_ndim)
    compute = lambda block, target, plans: running.box(block, target, plans, scale)  # noqa: E731
    bands.run_bands(xi, out, plan.axes, plan.border, plan.border_value, compute, work=_work(out, 8))


def _run_toeplitz(plan, xi, kernel, out, layout):
    weights = _weights(kernel, plan.dtype, layout, xi.shape[0])
    toeplitz.correlate_1d(xi, out, plan.axes[0], weights, plan.border, plan.border_value)


def _run_fft(plan, xi, kernel, out, layout):
    weights = _weights(kernel, plan.dtype, layout, xi.shape[0])
    if plan.spatial_ndim == 1:
        # Overlap-save gathers every block from the signal itself, border rule
        # applied: no padded copy of the signal and no copy of the result.
        spectral.correlate_1d(xi, out, plan.axes[0], weights, plan.border, plan.border_value)
        return
    internal = np.moveaxis(weights, -2, 0)  # (wl, *taps, wt)
    padded = bands.padded_whole(xi, plan.axes, plan.border, plan.border_value, plan.dtype)
    out[...] = spectral.fft(padded, internal, tuple(p.valid() for p in plan.axes))


def _run_opencv(plan, xi, kernel, out, layout):
    weights = _weights(kernel, plan.dtype, layout, xi.shape[0])
    internal = np.moveaxis(weights, -2, 0)  # (wl, *taps, wt)
    factors = constant = None
    op = compiled.operation(kernel, plan.axes, plan.choice.separable, plan.dtype)
    if plan.spatial_ndim == 3 and op in ("box", "dft"):
        # Planes have no box filter or DFT of their own: a rank-1 box (or any rank-1 kernel) takes the
        # separable planes, as the cost model assumes (sliced, a 15x15x15 box ran 15 DFTs a plane: 20x slower).
        op = "separable" if plan.choice.separable else "filter"
    if op == "box":
        constant = _weights(running.box_weights(kernel).reshape(-1, 1), np.float64, layout, xi.shape[0])[0]
        constant = constant.reshape((constant.shape[0], 1, 1, constant.shape[1]))
    elif op == "separable":
        exact = [_mirror_exact(f) for f in strategies.channel_factors(kernel.astype(np.float64))]
        factors = [np.moveaxis(w, 0, 1) for w in _laid_out_factors(exact, plan.dtype, layout, xi.shape[0])]
    if plan.spatial_ndim != 2 or not compiled.reads_integers(op, xi.dtype, kernel):
        xi = xi.astype(plan.dtype, copy=False)
    axes = plan.axes
    if plan.spatial_ndim == 3:
        if factors is not None:
            factors = [f[0, :, 0] for f in factors]
        compiled.correlate_3d(xi, out, axes, plan.border, plan.border_value, internal[0, ..., 0], factors=factors)
        return
    if plan.spatial_ndim == 1:  # a 1-D signal is an image one sample wide
        xi, out = xi[:, :, None], out[:, :, None]
        internal = internal[:, :, None]
        axes = axes + (AxisPlan.whole(1),)
        factors = None if factors is None else factors + [np.ones((internal.shape[0], 1, internal.shape[-1]))]
    compiled.correlate_2d(xi, out, axes, plan.border, plan.border_value, internal, factors=factors,
                          constant=constant)


def _mirror_exact(factor: np.ndarray) -> np.ndarray:
    """Make a factor that is (anti)symmetric to rounding exactly so: OpenCV then takes its faster
    symmetric path (a gaussian's SVD factors differ from their mirror image in the last bit)."""
    for sign in (1.0, -1.0):
        mirror = sign * factor[:, ::-1]
        if np.allclose(factor, mirror, rtol=1e-12, atol=1e-15 * np.abs(factor).max()):
            return (factor + mirror) / 2
    return factor


_STRATEGIES = {
    "direct": _run_direct, "separable": _run_separable, "lowrank": _run_lowrank, "box": _run_box,
    "toeplitz": _run_toeplitz, "fft": _run_fft, "opencv": _run_opencv,
}


# From this many samples the finiteness scan is shared by the cores.
PARALLEL_SCAN = 1 << 22


def _all_finite(x: np.ndarray) -> bool:
    """Whether ``x`` holds no NaN or infinity: the sum of its squares is finite, or its extrema are.

    A NaN or an infinity makes the sum of squares (one BLAS dot product, one
    pass) non-finite; so can finite samples whose squares overflow, and
    then the largest and smallest samples decide (NaN makes the maximum NaN,
    +inf and -inf show as the maximum and the minimum).  ``auto`` pays this
    scan on every call that picks a method spreading non-finite values, so
    it counts in its regret: the dot reads 2M float32 samples in 0.33 ms,
    numpy's two extrema in 0.68 (a sum took 2-4 times as long).
    """
    from ..parallel import map_ordered, thread_count

    if x.dtype.kind != "f":
        return True

    def finite(part) -> bool:
        if part.dtype in (np.float32, np.float64) and part.flags.c_contiguous:
            flat = part.reshape(-1)
            with np.errstate(over="ignore", invalid="ignore"):
                if np.isfinite(np.dot(flat, flat)):
                    return True
        return bool(np.isfinite(part.max()) and np.isfinite(part.min()))

    parts = thread_count()
    if x.size < PARALLEL_SCAN or parts == 1 or not x.flags.c_contiguous:
        return finite(x)
    flat = x.reshape(-1)
    cuts = [flat.size * i // parts for i in range(parts + 1)]
    return all(map_ordered(lambda i: finite(flat[cuts[i]:cuts[i + 1]]), range(parts)))


# --------------------------------------------------------------------------- validation
def _as_samples(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise ParameterError(f"must hold real numbers, got dtype {x.dtype}", subject="x")
    if x.size == 0:
        raise ParameterError(f"is empty (shape {x.shape})", subject="x")
    return x


def _as_kernel(kernel) -> np.ndarray:
    kernel = np.asarray(kernel)
    if kernel.dtype.kind not in "biuf":
        raise ParameterError(f"must hold real numbers, got dtype {kernel.dtype}", subject="kernel")
    if kernel.ndim == 0 or kernel.size == 0:
        raise ParameterError(f"is empty (shape {kernel.shape}); give at least one weight per axis", subject="kernel")
    if not np.isfinite(kernel).all():
        raise ParameterError("holds NaN or infinite weights", subject="kernel")
    return kernel


def _normalise_axis(axis, ndim: int) -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ParameterError(f"must be an axis of the input (-{ndim}..{ndim - 1}), got {axis!r}", subject="channel_axis")
    return int(axis) % ndim


def _kernel_layout(x_shape, kernel, axis, spatial_ndim) -> tuple[bool, int]:
    """Decide (per_channel, spatial ndim) from the shapes; refuse what does not fit."""
    available = len(x_shape) - (axis is not None)
    channels = x_shape[axis] if axis is not None else None
    could_share = kernel.ndim <= available
    could_split = axis is not None and kernel.ndim >= 2 and kernel.shape[0] == channels and kernel.ndim - 1 <= available
    if spatial_ndim is not None:
        if could_split and kernel.ndim == spatial_ndim + 1:
            return True, spatial_ndim
        if could_share and kernel.ndim == spatial_ndim:
            return False, spatial_ndim
        raise ParameterError(
            f"a kernel of shape {kernel.shape} does not fit {spatial_ndim} spatial axes of an input of shape "
            f"{tuple(x_shape)}", subject="kernel",
        )
    if could_split and not could_share:
        return True, kernel.ndim - 1
    if could_share and (not could_split or kernel.ndim == available):
        # A kernel covering every non-channel axis is read as shared by all channels.
        return False, kernel.ndim
    if could_share:
        raise ParameterError(
            f"shape {kernel.shape} could be per-channel or shared over {kernel.ndim} axes; pass spatial_ndim",
            subject="kernel",
        )
    raise ParameterError(
        f"has {kernel.ndim} axes but the input of shape {tuple(x_shape)} has only {available} "
        "spatial axes", subject="kernel",
    )


def _canonical_kernel(kernel: np.ndarray, per_channel: bool) -> np.ndarray:
    return kernel if per_channel else kernel[None]


def _compute_dtype(x_dtype, precision) -> np.dtype:
    if precision is None:
        return np.dtype(np.float64 if np.dtype(x_dtype) == np.float64 else np.float32)
    if precision in ("float32", "float64"):
        return np.dtype(precision)
    raise ParameterError(f"must be float32 or float64, got {precision!r}", subject="precision")
