"""The filter pipeline: read -> resolve kernels -> engine -> write, as pure functions.

``filter_file`` is the whole work for one input: a picklable function of
(source, destination, options) that returns a report, so a worker pool (or
anything else) can schedule it.  Nothing here prints.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class FilterOptions:
    """What to do to every input; the CLI builds one from its flags."""

    kernels: tuple[str, ...]
    stride: Any = 1  # int, per-axis tuple or "2,1"; applied once, by the last kernel of a chain
    padding: Any = "same"  # same | valid | full | int | per-axis; applied by every kernel
    pad_mode: str = "reflect"
    dilation: Any = 1  # applied by every kernel
    convolve: bool = False
    method: str = "auto"
    precision: str | None = None
    normalize: bool = False
    out_format: str | None = None  # output format name; None: from the output's extension


@dataclass
class FilterReport:
    """What happened to one input (the CLI reports it; ``--json`` prints it)."""

    input: str
    output: str | None
    status: str = "ok"
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()
    kernels: list[dict] = field(default_factory=list)
    clipped: int = 0
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict:
        return {
            "input": self.input, "output": self.output, "status": self.status,
            "input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
            "kernels": self.kernels, "clipped": self.clipped, "seconds": round(self.seconds, 6),
            "notes": self.notes, "error": self.error,
        }


def resolve_kernels(options: FilterOptions, signal):
    """Turn every ``-k`` spec into a Kernel fitted to this signal's dimension and units."""
    from .kernels import resolve

    return [
        resolve(spec, ndim=signal.spatial_ndim, sample_rate=signal.sample_rate, spacing=signal.spacing,
                normalize=options.normalize)
        for spec in options.kernels
    ]


def _geometry(options: FilterOptions, signal, last: bool) -> dict:
    return {
        "stride": options.stride if last else 1,
        "padding": options.padding,
        "pad_mode": options.pad_mode,
        "dilation": options.dilation,
        "channel_axis": signal.channel_axis,
        "method": options.method,
        "precision": options.precision,
        "spatial_ndim": signal.spatial_ndim,
    }


def plan_chain(signal, kernels, options: FilterOptions) -> list[dict]:
    """Plan every kernel of the chain without computing: padding, output shape, method."""
    from .engine import make_plan

    shape, dtype = signal.data.shape, signal.data.dtype
    steps = []
    for i, kernel in enumerate(kernels):
        geometry = _geometry(options, signal, last=i == len(kernels) - 1)
        plans = [make_plan(shape, w, x_dtype=dtype, **geometry) for w in kernel.weights]
        plan = plans[0]
        steps.append({
            "kernel": kernel.describe(),
            "padding": [list(p) for p in plan.padding()],
            "input_shape": list(shape),
            "output_shape": list(plan.output_shape),
            "methods": [p.method for p in plans],
            "why": plans[0].choice.reason(),
        })
        shape, dtype = plan.output_shape, plan.dtype
    return steps


def filter_signal(signal, options: FilterOptions, kernels=None):
    """Apply the chain of kernels to a Signal; return (new Signal, list of step descriptions)."""
    kernels = resolve_kernels(options, signal) if kernels is None else kernels
    steps = plan_chain(signal, kernels, options)
    data = signal.data
    for i, kernel in enumerate(kernels):
        data = kernel.apply(data, convolve=options.convolve, **_geometry(options, signal, last=i == len(kernels) - 1))
    return replace(signal, data=data), steps


def filter_job(source: str, dest: str, options: FilterOptions) -> dict:
    """The batch unit of work: ``filter_file`` as a plain, picklable record."""
    return filter_file(source, dest, options).as_dict()


def filter_file(source: str, dest: str, options: FilterOptions) -> FilterReport:
    """Read ``source``, filter it and write ``dest`` atomically; raise a ConvcliError on failure."""
    from . import io

    start = time.perf_counter()
    signal = io.read(source)
    result, steps = filter_signal(signal, options)
    io.write(result, dest, format=options.out_format)
    return FilterReport(
        input=str(source), output=str(dest), input_shape=tuple(signal.data.shape),
        output_shape=tuple(result.data.shape), kernels=steps, seconds=time.perf_counter() - start,
    )
