"""Filter a file larger than the memory budget, chunk by chunk of rows, into a memory-mapped output.

Only a ``.npy`` array or an uncompressed float NIfTI volume streams (``io``
maps them read-only when they are over the budget, for their shape and
layout), into a file of its own format, with one kernel of one weight array
computed by a strategy that works band by band.  The input's rows are read
into a buffer, never through its map (a file cut short under a mapped read
kills the process with SIGBUS); the pages of finished output rows are let
go as the bands go, so the resident memory stays a chunk and a few bands
whatever the size.
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
    args = dict(kernels[0].window_args(geometry.step(last=True), x.shape), channel_axis=signal.channel_axis,
                method=options.method,
                precision=run.chain.precision, spatial_ndim=nd)
    plan = engine.make_plan(x.shape, weights, x_dtype=x.dtype, streamed=True, **args)
    chunk = _chunk_rows(plan, x, budget)
    need, rows = engine.streamed_band_bytes(plan, trail=x.shape[-1] if signal.channel_axis is not None else 1)
    need += _chunk_bytes(plan, x, chunk)
    if need > budget:
        raise DataError(f"{over}, and streaming it in bands of {rows} rows needs {io.human_size(need)}; "
                        "raise --memory-budget", subject=str(source))
    steps = run.steps
    steps[0]["method"] = plan.method  # planned on the C-ordered transpose of a NIfTI volume
    steps[0]["methods"] = [plan.method]
    steps[0]["why"] = streamed_why(plan.method)
    out_shape = plan.output_shape[::-1] if flipped else plan.output_shape
    like = io.derive(signal, np.broadcast_to(np.zeros((), plan.dtype), out_shape),
                     stride=run.chain.strides(steps), origin=run.chain.origin(steps))
    with io.open_rows(x, str(source)) as reader, io.mapped_output(dest, like, plan.dtype, format=fmt) as mapped:
        out = mapped.T if flipped else mapped
        _in_chunks(reader, out, weights, plan, dict(args, method=plan.method), options.convolve, chunk)
    return Streamed(steps, tuple(out_shape),
                    f"streamed in bands: the input is over the memory budget of {io.human_size(budget)}")


# Input rows read at a time: large enough that a read and an engine call per chunk cost
# nothing beside the filtering, small beside any budget that streams.
CHUNK_BYTES = 32 << 20


def _chunk_rows(plan, x, budget: int) -> int:
    """Output rows computed from one read of input rows: about CHUNK_BYTES (an eighth of the budget at most)."""
    p0 = plan.axes[0]
    target = max(1, min(CHUNK_BYTES, budget // 8) // _row_bytes(plan, x))
    return max(1, min(p0.out, (target - p0.span) // p0.stride + 1))


def _row_bytes(plan, x) -> int:
    import math

    return plan.dtype.itemsize * math.prod(x.shape[1:])


def _chunk_bytes(plan, x, rows: int) -> int:
    """Memory one chunk holds: its input rows in the compute type (and as stored, when the types differ)."""
    p0 = plan.axes[0]
    count = (rows - 1) * p0.stride + p0.span
    stored = 0 if x.dtype == plan.dtype else count * x.dtype.itemsize * (_row_bytes(plan, x) // plan.dtype.itemsize)
    return count * _row_bytes(plan, x) + stored


def _in_chunks(reader, out, weights, plan, args: dict, flip: bool, chunk: int) -> None:
    """Fill ``out`` chunk by chunk: input rows read (with the border rows of axis 0), then filtered by the engine.

    Each chunk is a valid correlation along axis 0 of rows that already
    hold their padding, with the other axes padded as the whole input's
    plan pads them, so every output sample is computed exactly as in one
    run over the whole input.  The pages of finished output rows are let go
    as the engine reports them.
    """
    import numpy as np

    from .. import engine, io

    p0 = plan.axes[0]
    args["padding"] = ((0, 0),) + tuple((p.before, p.after) for p in plan.axes[1:])
    drop_output = io.release_rows(out)
    buffer = np.empty(((chunk - 1) * p0.stride + p0.span,) + reader.shape[1:], dtype=plan.dtype)
    plans = {}
    for start in range(0, p0.out, chunk):
        stop = min(start + chunk, p0.out)
        first = start * p0.stride - p0.before  # input row of the chunk's first padded row
        block = buffer[:(stop - 1 - start) * p0.stride + p0.span]
        _read_padded(reader, block, first, plan)
        if block.shape not in plans:
            plans[block.shape] = engine.make_plan(block.shape, weights, x_dtype=block.dtype, streamed=True, **args)

        def on_rows(_input_rows: int, output_rows: int, start=start) -> None:
            drop_output(start + output_rows)

        engine.execute(plans[block.shape], block, weights, flip=flip, out=out[start:stop], on_rows=on_rows)


def _read_padded(reader, block, first: int, plan) -> None:
    """Rows ``first ..`` of the input into ``block``, rows before the first and past the last by the border rule."""
    import numpy as np

    from .. import engine

    n = reader.shape[0]
    lo, hi = max(first, 0), min(first + len(block), n)
    if lo < hi:
        reader.read(lo, hi, block[lo - first:hi - first])
    outside = np.r_[0:min(max(-first, 0), len(block)), max(n - first, 0):len(block)]
    sources = engine.source_index(outside + first, n, plan.border)
    for i, src in zip(outside.tolist(), sources.tolist()):
        if src < 0:
            block[i] = plan.border_value
        else:
            reader.read(src, src + 1, block[i:i + 1])
