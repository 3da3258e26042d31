"""Filter one file: read -> resolve kernels -> engine -> write, returning a report.

``filter_file`` is the whole work for one input: a picklable function of
(source, destination, options) that returns a :class:`FilterReport`, so a
batch can schedule it in worker processes.  An input over the memory budget
takes the streamed path (:mod:`.streamed`); an image with transparency
takes the alpha path (:mod:`.alpha`).  Nothing here prints.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .options import FilterOptions


@dataclass
class FilterReport:
    """What happened to one input (the CLI reports it; ``--json`` prints it)."""

    input: str
    output: str | None
    status: str = "ok"
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()
    kernels: list[dict] = field(default_factory=list)  # one step of plan_chain per kernel
    clipped: int = 0  # integer samples outside the output range, clipped
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the reader or writer changed or left out
    error: str | None = None

    def as_dict(self) -> dict:
        return {
            "input": self.input, "output": self.output, "status": self.status,
            "input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
            "kernels": self.kernels, "clipped": self.clipped, "seconds": round(self.seconds, 6),
            "notes": self.notes, "error": self.error,
        }


@dataclass
class Filtered:
    """A filtered signal, the plan of every kernel, and how its floats become integer samples."""

    signal: object  # convcli.io.Signal
    steps: list[dict]
    range: str  # clip | abs | offset | rescale


def resolve_kernels(options: FilterOptions, signal) -> list:
    """Turn every ``-k`` spec into a Kernel fitted to this signal's dimension and units."""
    from ..kernels import resolve

    return [
        resolve(spec, ndim=signal.spatial_ndim, sample_rate=signal.sample_rate, spacing=signal.spacing,
                normalize=options.normalize)
        for spec in options.kernels
    ]


def engine_args(options: FilterOptions, signal, last: bool) -> dict:
    """The engine's keyword arguments for one kernel of the chain on this signal."""
    return dict(options.geometry.step(last), channel_axis=signal.channel_axis, method=options.method,
                precision=options.precision, spatial_ndim=signal.spatial_ndim)


def plan_chain(signal, kernels, options: FilterOptions) -> list[dict]:
    """Plan every kernel of the chain without computing: padding, output shape, method.

    An input over the memory budget (``signal.streamed``) runs band by band
    (see :mod:`.streamed`): its plan may use only the strategies that stream.
    """
    from ..engine import make_plan

    shape, dtype = signal.data.shape, signal.data.dtype
    streamed = signal.streamed and len(kernels) == 1 and len(kernels[0].weights) == 1
    steps = []
    for i, kernel in enumerate(kernels):
        args = engine_args(options, signal, last=i == len(kernels) - 1)
        plans = [make_plan(shape, w, x_dtype=dtype, streamed=streamed, **args) for w in kernel.weights]
        plan = plans[0]
        steps.append({
            "kernel": kernel.describe(),
            "padding": [list(p) for p in plan.padding()],
            "input_shape": list(shape),
            "output_shape": list(plan.output_shape),
            "methods": [p.method for p in plans],
            "why": streamed_why(plan.method) if streamed else plan.choice.reason(),
        })
        shape, dtype = plan.output_shape, plan.dtype
    return steps


def streamed_why(method: str) -> str:
    return f"{method} (streamed: the input is over the memory budget)"


def filter_signal(signal, options: FilterOptions, kernels=None, *, consume: bool = False) -> Filtered:
    """Apply the chain of kernels to a Signal.

    The new Signal carries the input's metadata updated for stride (audio
    rate, voxel spacing, DPI, NIfTI affine).  With ``consume`` the input's
    samples may be overwritten (the caller read them for this run alone):
    where the engine can, a volume is then filtered in its own memory
    instead of beside a second one.
    """
    from .. import io
    from ..parallel import floats_as_data
    from .alpha import filter_with_alpha, has_alpha

    kernels = resolve_kernels(options, signal) if kernels is None else kernels
    steps = plan_chain(signal, kernels, options)
    with floats_as_data():
        if has_alpha(signal) and options.alpha != "channel":
            data = filter_with_alpha(
                signal.data, options.alpha, options.precision,
                run_chain=lambda samples: _run_chain(samples, signal, kernels, options, owned=True),
                keep_grid=lambda alpha: _alpha_on_output_grid(alpha, signal, kernels, options))
        else:
            data = _run_chain(signal.data, signal, kernels, options, owned=consume)
    nd = signal.spatial_ndim
    result = io.derive(signal, data, stride=options.geometry.strides(nd),
                       origin=chain_origin(steps, kernels, options, nd))
    return Filtered(result, steps, options.range or kernels[-1].range_default)


def _run_chain(data, signal, kernels, options: FilterOptions, owned: bool = False):
    """Each kernel in turn; a step may overwrite what only this chain holds (``owned``, then every result)."""
    for i, kernel in enumerate(kernels):
        data = kernel.apply(data, convolve=options.convolve, overwrite_x=owned,
                            **engine_args(options, signal, last=i == len(kernels) - 1))
        owned = True
    return data


def _alpha_on_output_grid(alpha, signal, kernels, options: FilterOptions):
    """Alpha moved onto the output grid unchanged: each kernel replaced by a one-tap kernel at its centre."""
    import numpy as np

    from ..engine import correlate, plan_axes

    data = alpha
    for i, kernel in enumerate(kernels):
        args = engine_args(options, signal, last=i == len(kernels) - 1)
        plans = plan_axes(data.shape[:-1], kernel.shape, stride=args["stride"], padding=args["padding"],
                          dilation=args["dilation"])
        if all(p.stride == 1 and p.out == p.length for p in plans):
            continue  # same grid: alpha is kept exactly
        tap = np.zeros(kernel.shape)
        tap[tuple((k - 1) // 2 for k in kernel.shape)] = 1.0
        data = correlate(data, tap, **dict(args, method="direct"))
    return data


def chain_origin(steps, kernels, options: FilterOptions, ndim: int) -> tuple[float, ...]:
    """Per spatial axis, the input position of output sample 0 (the centre of its first window)."""
    dilation = options.geometry.dilations(ndim)
    origin = [0.0] * ndim
    for step, kernel in zip(steps, kernels):
        for axis in range(ndim):
            before = step["padding"][axis][0]
            origin[axis] += -before + dilation[axis] * (kernel.shape[axis] - 1) / 2
    return tuple(origin)


def filter_job(source: str, dest: str, options: FilterOptions) -> dict:
    """The batch unit of work: ``filter_file`` as a plain, picklable record."""
    return filter_file(source, dest, options).as_dict()


def filter_file(source: str, dest: str, options: FilterOptions) -> FilterReport:
    """Read ``source``, filter it and write ``dest`` atomically; raise a ConvcliError on failure."""
    from .. import io
    from .outputs import refuse_input_as_output
    from .streamed import filter_streamed, may_stream

    start = time.perf_counter()
    refuse_input_as_output(source, dest, options.in_place)
    signal = io.read(source, kind=options.kind, key=options.key, auto_orient=options.auto_orient,
                     max_pixels=options.max_pixels, memory_budget=options.memory_budget,
                     stream=may_stream(dest, options))
    if signal.streamed:
        return filter_streamed(signal, source, dest, options, start)
    filtered = filter_signal(signal, options, consume=True)
    written = io.write(filtered.signal, dest, format=options.out_format, compress_level=options.compress_level,
                       range=filtered.range)
    return FilterReport(
        input=str(source), output=str(dest), input_shape=tuple(signal.data.shape),
        output_shape=tuple(filtered.signal.data.shape), kernels=filtered.steps, seconds=time.perf_counter() - start,
        clipped=written.clipped, notes=input_notes(signal) + written.notes,
    )


def explain(source: str, options: FilterOptions) -> list[dict]:
    """The plan of every kernel for ``source``: nothing is filtered or written (a large .npy is only mapped)."""
    from .. import io

    signal = io.read(source, kind=options.kind, key=options.key, auto_orient=options.auto_orient,
                     max_pixels=options.max_pixels, memory_budget=options.memory_budget, stream=True)
    return plan_chain(signal, resolve_kernels(options, signal), options)


def input_notes(signal) -> list[str]:
    """What the reader changed or left out that a user should hear about."""
    meta, notes = signal.meta, []
    if meta.get("first_frame_only"):
        notes.append(f"only the first of {meta.get('frames')} frames was read")
    if meta.get("oriented"):
        notes.append(f"EXIF orientation {meta['oriented']} applied (the output is upright)")
    if meta.get("transparency_dropped"):
        notes.append("the PNG's transparent colour key (tRNS) was dropped")
    if meta.get("spacing_invalid"):
        notes.append(f"voxel sizes {meta['spacing_invalid']} are invalid and were ignored")
    return notes
