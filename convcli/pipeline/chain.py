"""A chain of kernels on one signal: resolve the specs, plan every step, run them, describe the result.

The steps are the engine's; this module decides what each gets: the axes
they run along (:mod:`.axes`), the geometry (stride only at the last
kernel), the channel axis, the method, the precision (one rule,
:func:`compute_precision`), which values are filtered (:mod:`.colour`) and
how transparency is treated (:mod:`.alpha`).  The result carries the input's
metadata updated for stride on the axes filtered.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ParameterError
from .axes import Axes, axes_of
from .options import FilterOptions

# The border of a chain whose --pad-mode is not given (an impulse response's own is zeros: see Kernel.window_args).
DEFAULT_BORDER = "reflect"

# float32's significand holds 24 bits: a sample of up to 16 bits leaves 8 for
# the rounding of a kernel's sums, so the result stays within half a step of
# the exact value.  Wider integers (24- and 32-bit PCM, int32 images and
# volumes) are computed in float64, whose 53 bits hold them with room to spare.
EXACT_BITS = 16


@dataclass
class Filtered:
    """A filtered signal, the plan of every kernel, how its floats become integer samples, and notes for the user."""

    signal: object  # convcli.io.Signal
    steps: list[dict]
    range: str  # clip | abs | offset | rescale
    notes: list[str] = field(default_factory=list)


def compute_precision(signal, options: FilterOptions) -> str:
    """The floating type the kernels compute in: ``--precision``, else the narrowest that stays exact.

    Exact means within half a step of the exact result before rounding:
    float32 for samples of up to 16 bits (and float32 data), float64 for
    float64 data and for integers of more bits (``meta["bits"]`` says how
    many a 24-bit PCM sample in int32 holds).
    """
    import numpy as np

    if options.precision is not None:
        return options.precision
    stored = np.dtype(signal.meta.get("dtype") or signal.data.dtype)
    if signal.data.dtype == np.float64 or stored == np.float64:
        return "float64"
    for dtype in (stored, signal.data.dtype):
        if dtype.kind in "iu":
            bits = signal.meta.get("bits") or dtype.itemsize * 8
            if bits > EXACT_BITS:
                return "float64"
    return "float32"


def resolve_kernels(options: FilterOptions, signal, axes: Axes | None = None) -> list:
    """Turn every ``-k`` spec into a Kernel with one axis per axis filtered, in this signal's units."""
    from ..kernels import resolve

    axes = axes_of(signal, options.axes) if axes is None else axes
    channels = None if signal.channel_axis is None else signal.data.shape[signal.channel_axis]
    return [
        resolve(spec, ndim=axes.ndim, sample_rate=axes.sample_rate(signal), spacing=axes.spacing(signal),
                normalize=options.normalize, channels=channels or 1, ir_norm=options.audio.ir_norm,
                memory_budget=options.memory_budget)
        for spec in options.kernels
    ]


def kernel_args(kernel, args: dict, spatial_shape, *, tail: bool = False) -> dict:
    """The engine's keywords for one kernel over samples of ``spatial_shape``: its own window rule, and ``tail``.

    A causal kernel (an impulse response) turns ``same`` into ``causal``;
    with ``tail`` the padding keeps that alignment before the samples and
    adds the whole span less one after them, so the output runs on until
    the last input sample has left the window (``n + k - 1`` samples for an
    impulse response of ``k``).
    """
    from ..engine import plan_axes

    if kernel.operator is not None:
        return args  # an operator lays its own windows (a pool's stride and padding)
    args = kernel.window_args(args, spatial_shape)
    if not tail:
        return args
    padding = args.get("padding", "same")
    if not (isinstance(padding, str) and padding in ("same", "causal")):
        raise ParameterError(f"keeps the alignment of --padding same or causal, not {padding!r}", subject="tail")
    plans = plan_axes(spatial_shape, kernel.shape, stride=args.get("stride", 1), padding=padding,
                      dilation=args.get("dilation", 1))
    return dict(args, padding=tuple((p.before, p.span - 1) for p in plans))


class Chain:
    """The kernels of one run laid over one signal: on which axes, in what precision, with what borders.

    :meth:`run` applies the chain to samples in the signal's layout (any
    channels last); :meth:`grid` and :meth:`footprint` answer the questions
    transparency asks (where does a sample land, which windows touch a mark).
    """

    def __init__(self, signal, kernels, options: FilterOptions, axes: Axes, precision: str, pad_value=None):
        import numpy as np

        self.signal, self.kernels, self.options, self.axes = signal, kernels, options, axes
        self.precision = precision
        self.work = np.dtype(precision)
        self.constant = border_constant(options.geometry.pad_mode or DEFAULT_BORDER)
        self.pad_mode = options.geometry.pad_mode
        if self.constant is not None and pad_value is not None:
            self.constant = pad_value(self.constant)
            self.pad_mode = f"constant:{self.constant!r}"
        # A rank, morphology or pooling operator has unit gain (its weights are only its footprint).
        self.gain = float(np.prod([1.0 if k.operator is not None else k.weights[0].sum() for k in kernels]))
        self.non_negative = all(float(w.min()) >= 0 for k in kernels for w in k.weights)

    def args(self, last: bool, pad_mode: str | None = None) -> dict:
        """The engine's keyword arguments for one kernel of the chain (stride only at the ``last``)."""
        step = self.options.geometry.step(last)
        if pad_mode is not None:
            step["pad_mode"] = pad_mode
        return dict(step, channel_axis=self.signal.channel_axis, method=self.options.method,
                    precision=self.precision, spatial_ndim=self.axes.ndim)

    def run(self, data, *, owned: bool = False, constant: float | None = None, methods=None, clamp: bool = True):
        """Every kernel in turn on ``data``; a step may overwrite what only this chain holds (``owned``).

        ``constant`` replaces the value of a constant border (alpha pads as
        opaque).  ``methods`` pins each kernel's methods (one per weight
        array), as a band of an image must compute like the whole.  A chain
        of non-negative kernels on non-negative samples gives non-negative
        results: round-off that crossed zero (running sums, the factors of a
        separable kernel) is clamped, unless ``clamp`` is false (a caller
        that makes integer samples of the result, which clip at zero anyway).
        """
        pad_mode = f"constant:{float(constant)!r}" if constant is not None and self.constant is not None else None
        clamp = clamp and self.non_negative and _non_negative(data)
        x = self.axes.to_engine(data)
        channels = self.signal.channel_axis is not None
        for i, kernel in enumerate(self.kernels):
            spatial = x.shape[x.ndim - self.axes.ndim - channels:x.ndim - channels]
            args = kernel_args(kernel, self.args(i == len(self.kernels) - 1, pad_mode or self.pad_mode), spatial,
                               tail=self.options.audio.tail)
            if methods is not None:
                args["method"] = methods[i]
            x = kernel.apply(x, convolve=self.options.convolve, overwrite_x=owned, **args)
            owned = True
        if clamp:
            _clamp_at_zero(x)
        return self.axes.from_engine(x)

    def grid(self, data):
        """``data`` moved onto the output grid unchanged: each kernel replaced by one tap at its centre."""
        import numpy as np

        from ..engine import correlate, plan_axes

        x = self.axes.to_engine(data)
        channels = self.signal.channel_axis is not None
        for i, kernel in enumerate(self.kernels):
            k = self.axes.ndim
            spatial = x.shape[x.ndim - k - channels:x.ndim - channels]
            args = kernel.window_args(self.args(i == len(self.kernels) - 1, self.pad_mode), spatial)
            plans = plan_axes(spatial, kernel.shape, stride=args["stride"], padding=args["padding"],
                              dilation=args["dilation"])
            if all(p.stride == 1 and p.out == p.length for p in plans):
                continue  # same grid: kept exactly
            tap = np.zeros(kernel.shape)
            tap[tuple((n - 1) // 2 for n in kernel.shape)] = 1.0
            x = correlate(x, tap, **dict(args, method="direct"))
        return self.axes.from_engine(x).astype(self.work, copy=False)

    def footprint(self, marks):
        """Per output sample, how many marked samples (``marks``: booleans) its chain of windows reaches.

        Beyond a constant border nothing is marked; elsewhere the border
        rule extends the marks as it extends the samples.
        """
        import numpy as np

        from ..engine import convolve, correlate

        run = convolve if self.options.convolve else correlate
        pad_mode = "zeros" if self.constant is not None else self.pad_mode
        x = self.axes.to_engine(np.asarray(marks, dtype=self.work))
        channels = self.signal.channel_axis is not None
        for i, kernel in enumerate(self.kernels):
            reach = np.any([w != 0 for w in kernel.weights], axis=0).astype(np.float64)
            spatial = x.shape[x.ndim - self.axes.ndim - channels:x.ndim - channels]
            args = kernel.window_args(self.args(i == len(self.kernels) - 1, pad_mode), spatial)
            x = run(x, reach, **args)
        return self.axes.from_engine(x)

    def reach(self) -> int:
        """How far, in samples along any axis, an output's chain of windows reaches from its centre."""
        dilation = self.options.geometry.dilations(self.axes.ndim)
        return max(sum(d * (k.shape[axis] // 2) for k in self.kernels) for axis, d in enumerate(dilation))

    def plan(self, streamed: bool = False) -> list[dict]:
        """Plan every kernel without computing: padding, output shape, method, axes and precision.

        An input over the memory budget runs band by band (see :mod:`.streamed`):
        its plan may use only the strategies that stream.
        """
        from ..engine import make_plan

        shape, dtype = self.axes.engine_shape(self.signal.data.shape), self.signal.data.dtype
        steps = []
        for i, kernel in enumerate(self.kernels):
            channels = self.signal.channel_axis is not None
            spatial = shape[len(shape) - self.axes.ndim - channels:len(shape) - channels]
            args = kernel_args(kernel, self.args(i == len(self.kernels) - 1, self.pad_mode), spatial,
                               tail=self.options.audio.tail)
            if kernel.operator is not None:  # rank, morphology, pooling: the operator plans itself
                plan = kernel.plan(shape, dtype, convolve=self.options.convolve, **args)
                methods, why = [plan.method], plan.reason()
            else:
                plans = [make_plan(shape, w, x_dtype=dtype, streamed=streamed, **args) for w in kernel.weights]
                plan = plans[0]
                methods = [p.method for p in plans]
                why = streamed_why(plan.method) if streamed else plan.choice.reason()
            steps.append({
                "kernel": kernel.describe(),
                "axes": list(self.axes.names),
                "padding": [list(p) for p in plan.padding()],
                "stride": [p.stride for p in plan.axes],
                "input_shape": list(self.axes.signal_shape(shape)),
                "output_shape": list(self.axes.signal_shape(plan.output_shape)),
                "method": methods[0],  # what runs, as -v and --explain name it; "methods": one per weight array
                "methods": methods,
                "precision": self.precision,
                "why": why,
            })
            shape, dtype = plan.output_shape, plan.dtype
        return steps

    def origin(self, steps) -> tuple[float, ...]:
        """Per spatial axis of the signal, the input position of output sample 0 (the centre of its first window)."""
        dilation = self.options.geometry.dilations(self.axes.ndim)
        origin, scale = [0.0] * self.axes.ndim, [1] * self.axes.ndim
        for step, kernel in zip(steps, self.kernels):
            for axis in range(self.axes.ndim):
                before = step["padding"][axis][0]
                # After a stride (a pool's, within the chain) the next step's samples are that far apart.
                origin[axis] += scale[axis] * (-before + dilation[axis] * (kernel.shape[axis] - 1) / 2)
                scale[axis] *= step["stride"][axis]
        return self.axes.per_spatial_axis(origin, 0.0)

    def strides(self, steps) -> tuple[int, ...]:
        """Input samples between output samples on every spatial axis: each step's stride (a pool's own) multiplied."""
        total = [1] * self.axes.ndim
        for step in steps:
            total = [t * s for t, s in zip(total, step["stride"])]
        return self.axes.per_spatial_axis(tuple(total), 1)


def border_constant(pad_mode: str) -> float | None:
    """The value of a constant border mode (``zeros``: 0), or None for the modes that mirror or repeat samples."""
    from ..engine import BORDER_MODES

    head, _, value = str(pad_mode).strip().lower().partition(":")
    for mode in BORDER_MODES:
        if head == mode.name or head in mode.aliases:
            if mode.numpy_mode != "constant":
                return None
            return float(value) if value else 0.0
    return None


# From this many samples the clamp is shared by the cores (a 4K RGB result: 3 ms instead of 6).
PARALLEL_CLAMP = 1 << 22


def _clamp_at_zero(x) -> None:
    """Negative samples of ``x`` (round-off below zero) become 0, in place."""
    import numpy as np

    from ..parallel import split, thread_count

    if x.size < PARALLEL_CLAMP or not x.flags.c_contiguous:
        np.maximum(x, 0, out=x)
        return
    flat = x.reshape(-1)
    split(lambda lo, hi: np.maximum(flat[lo:hi], 0, out=flat[lo:hi]), flat.size, thread_count())


def _non_negative(x) -> bool:
    """Whether every sample is >= 0: known from an unsigned type, else one pass (NaN answers no)."""
    import numpy as np

    if x.dtype.kind in "ub":
        return True
    return bool(np.min(x) >= 0)


def streamed_why(method: str) -> str:
    return f"{method} (streamed: the input is over the memory budget)"


def filter_signal(signal, options: FilterOptions, kernels=None, *, consume: bool = False) -> Filtered:
    """Apply the chain of kernels to a Signal.

    The new Signal carries the input's metadata updated for stride (audio
    rate, voxel spacing, DPI, NIfTI affine) on the axes filtered.  With
    ``consume`` the input's samples may be overwritten (the caller read them
    for this run alone): where the engine can, a volume is then filtered in
    its own memory instead of beside a second one.
    """
    from .. import io
    from ..parallel import floats_as_data
    from .alpha import has_alpha

    axes = axes_of(signal, options.axes)
    kernels = resolve_kernels(options, signal, axes) if kernels is None else kernels
    run = prepare(signal, kernels, options, axes)
    with floats_as_data():
        data = run.filter(signal.data, consume)
    result = io.derive(signal, data, stride=run.chain.strides(run.steps), origin=run.chain.origin(run.steps))
    notes = [n for n in (run.space.note, run.alpha_note(signal.data) if has_alpha(signal) else None) if n]
    return Filtered(result, run.steps, options.range or kernels[-1].range_default, notes)


@dataclass
class Run:
    """Everything decided about one run before a sample is touched: the chain, the colour space, the alpha mode."""

    chain: Chain
    space: object  # convcli.pipeline.colour.Space
    alpha: str | None  # what alpha.resolve_mode decided, or None for an image without alpha
    requested: str  # the --alpha asked for
    steps: list[dict]

    def filter(self, data, owned: bool = False):
        """Filter ``data`` (the signal's samples): colour space in, chain (with alpha), colour space out."""
        import numpy as np

        from .alpha import CHANNEL, KEEP, clear_transparent, filter_with_alpha, fill_hidden

        space, chain, mode = self.space, self.chain, self.alpha
        if space.name == "stored" and mode in (None, CHANNEL):
            return np.ascontiguousarray(chain.run(data, owned=owned))
        work = space.to_working(data, chain.work)
        base = None
        if space.name == "luma":
            colour = data[..., :space.colour]
            if mode not in (None, CHANNEL, KEEP):
                colour = fill_hidden(colour, data[..., -1:] <= 0, chain)  # the chroma under transparency
            base = chain.grid(colour)
        if mode in (None, CHANNEL):
            out = chain.run(work, owned=work is not data)
        else:
            out = filter_with_alpha(work, mode, chain, space.full)
        out = space.from_working(out, base)
        if base is not None and mode not in (None, CHANNEL, KEEP):
            out = clear_transparent(out, space.full)  # luma added the base colour back everywhere
        return np.ascontiguousarray(out)

    def alpha_note(self, data) -> str | None:
        from .alpha import note

        return note(self.alpha, self.requested, data[..., -1:], self.space.full)

    def describe(self) -> dict:
        """The colour space, alpha mode, border mode and range mode, for ``--explain``."""
        alpha = None if self.alpha is None else (
            f"auto: {self.alpha}" if self.requested == "auto" else self.alpha)
        chain = self.chain
        range_mode = chain.options.range or f"{chain.kernels[-1].range_default} (the kernel's default)"
        return {"colorspace": self.space.name if self.space.name != "stored" else chain.options.colorspace,
                "alpha": alpha, "range": range_mode,
                # None given: each kernel's own border (reflect; zeros for an impulse response)
                "pad_mode": chain.pad_mode or ", ".join(dict.fromkeys(k.border for k in chain.kernels)),
                "operation": "convolution" if chain.options.convolve else "correlation"}


def prepare(signal, kernels, options: FilterOptions, axes: Axes | None = None) -> Run:
    """Decide the chain, colour space and alpha mode for ``signal`` and plan every kernel."""
    from ..engine.correlation import plan_as_loaded
    from .alpha import has_alpha, resolve_mode
    from .colour import colour_space

    plan_as_loaded()  # a file's result is the same whatever this process filtered before

    axes = axes_of(signal, options.axes) if axes is None else axes
    alpha = has_alpha(signal)
    space = colour_space(signal, options.colorspace, alpha)
    chain = Chain(signal, kernels, options, axes, compute_precision(signal, options), pad_value=space.pad_value)
    streamed = signal.streamed and len(kernels) == 1 and len(kernels[0].weights) == 1
    steps = chain.plan(streamed)
    mode = resolve_mode(options.alpha, kernels) if alpha else None
    return Run(chain, space, mode, options.alpha, steps)
