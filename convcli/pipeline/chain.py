"""A chain of kernels on one signal: resolve the specs, plan every step, run them, describe the result.

The steps are the engine's; this module decides what each gets: the
geometry (stride only at the last kernel), the channel axis, the method and
precision, and how transparency is treated (:mod:`.alpha`).  The result
carries the input's metadata updated for stride.
"""
from __future__ import annotations

from dataclasses import dataclass

from .options import FilterOptions


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
                normalize=options.normalize, memory_budget=options.memory_budget)
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
