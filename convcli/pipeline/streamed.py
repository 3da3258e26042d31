"""Filter a file larger than the memory budget, band by band, from one memory map into another.

Only a ``.npy`` array or an uncompressed float NIfTI volume streams (``io``
maps them read-only when they are over the budget), into a file of its own
format, with one kernel of one weight array computed by a strategy that
works band by band.  The pages of finished rows of both files are let go as
the bands go, so the resident memory stays a few bands whatever the size.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import DataError
from .chain import prepare, resolve_kernels, streamed_why
from .options import FilterOptions


@dataclass
class Streamed:
    """What a streamed run did: the plan of its kernel, the output's shape, and a note for the user."""

    steps: list[dict]
    output_shape: tuple[int, ...]
    note: str


def may_stream(dest: str, options: FilterOptions) -> bool:
    """Whether an input over the memory budget may be streamed: only into a format written in place.

    The format is settled here only to decide; a bad one is reported by the
    writer, after the input, as for any other run.
    """
    from .. import io
    from ..errors import ConvcliError

    if options.depth is not None:
        return False  # the streamed result is written in the engine's float type
    try:
        fmt = io.output_format(dest, options.out_format)
    except ConvcliError:
        return False
    # No format from the name (stdout): the input's own, .npy for a streamed input.
    return fmt is None or fmt in io.STREAMED_FORMATS


def filter_streamed(signal, source: str, dest: str, options: FilterOptions) -> Streamed:
    """Filter a memory-mapped input (``signal.streamed``) band by band into a memory-mapped output.

    A NIfTI volume (x fastest on disk) is filtered as its (z, y, x)
    transpose with the kernel and geometry transposed, so bands of rows are
    contiguous in both files.
    """
    import numpy as np

    from .. import engine, io

    kernels = resolve_kernels(options, signal)
    run = prepare(signal, kernels, options)
    budget = io.memory_budget(options.memory_budget)
    dims = "x".join(str(n) for n in signal.data.shape)
    over = f"{dims} samples are over the memory budget of {io.human_size(budget)}"
    operator = next((k for k in kernels if k.operator is not None), None)
    if operator is not None:
        raise DataError(f"{over}; only weighted kernels are filtered in streamed bands, not {operator.spec} "
                        "(raise --memory-budget)", subject=str(source))
    if len(kernels) != 1 or len(kernels[0].weights) != 1:
        count = f"a chain of {len(kernels)} kernels" if len(kernels) != 1 else "a kernel of several weight arrays"
        raise DataError(
            f"{over}; such an input is filtered in streamed bands with a single kernel only, not {count} "
            "(run one kernel at a time, or raise --memory-budget)", subject=str(source))
    fmt = io.output_format(dest, options.out_format) or signal.meta.get("format")
    if fmt != signal.meta.get("format"):
        raise DataError(f"{over}; such an input is streamed only into a file of its own format "
                        f"({signal.meta.get('format')}), not {fmt}", subject=str(source))
    if run.chain.axes.moved:
        raise DataError(f"{over}; such an input is filtered in streamed bands along all its axes only, not "
                        f"--axes {','.join(run.chain.axes.names)} (raise --memory-budget)", subject=str(source))
    nd = signal.spatial_ndim
    weights = kernels[0].weights[0]
    geometry = options.geometry
    x = signal.data
    flipped = not x.flags.c_contiguous  # a NIfTI volume: run on its C-ordered (z, y, x) transpose
    if flipped:
        x, weights, geometry = x.T, np.asarray(weights).T, geometry.reversed_axes(nd)
    args = dict(geometry.step(last=True), channel_axis=signal.channel_axis, method=options.method,
                precision=run.chain.precision, spatial_ndim=nd)
    plan = engine.make_plan(x.shape, weights, x_dtype=x.dtype, streamed=True, **args)
    need, rows = engine.streamed_band_bytes(plan, trail=x.shape[-1] if signal.channel_axis is not None else 1)
    if need > budget:
        raise DataError(f"{over}, and streaming it in bands of {rows} rows needs {io.human_size(need)}; "
                        "raise --memory-budget", subject=str(source))
    steps = run.steps
    steps[0]["methods"] = [plan.method]  # planned on the C-ordered transpose of a NIfTI volume
    steps[0]["why"] = streamed_why(plan.method)
    out_shape = plan.output_shape[::-1] if flipped else plan.output_shape
    like = io.derive(signal, np.broadcast_to(np.zeros((), plan.dtype), out_shape),
                     stride=run.chain.strides(steps), origin=run.chain.origin(steps))
    run = engine.convolve if options.convolve else engine.correlate
    drop_input = io.release_rows(x)
    with io.mapped_output(dest, like, plan.dtype, format=fmt) as mapped:
        out = mapped.T if flipped else mapped
        drop_output = io.release_rows(out)

        def on_rows(input_rows: int, output_rows: int) -> None:
            drop_input(input_rows)
            drop_output(output_rows)

        run(x, weights, out=out, on_rows=on_rows, **args)
    return Streamed(steps, tuple(out_shape),
                    f"streamed in bands: the input is over the memory budget of {io.human_size(budget)}")
