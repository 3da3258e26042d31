"""The filter pipeline: read -> resolve kernels -> engine -> write, as pure functions.

``filter_file`` is the whole work for one input: a picklable function of
(source, destination, options) that returns a report, so a worker pool (or
anything else) can schedule it.  Nothing here prints.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
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
    compress_level: int | None = None  # zlib level 0-9 for PNG/TIFF/npz/FLAC outputs; None: the writer's default
    # Media (issue 4): how inputs are read and results written.
    kind: str | None = None  # audio | image | volume | signal; None: from the file's content
    alpha: str = "premultiply"  # premultiply | keep | channel
    range: str | None = None  # clip | abs | offset | rescale; None: the last kernel's range_default
    auto_orient: bool = True  # apply the EXIF orientation of photos
    max_pixels: int | None = None  # None: Pillow's bomb threshold
    memory_budget: Any = None  # bytes or "4G"; None: half the available memory
    key: str | None = None  # the array of a .npz archive
    in_place: bool = False  # allow the output to be the input file


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
    # An input over the memory budget runs band by band (see filter_streamed):
    # its plan may use only the strategies that stream.
    streamed = bool(signal.meta.get("streamed")) and len(kernels) == 1 and len(kernels[0].weights) == 1
    steps = []
    for i, kernel in enumerate(kernels):
        geometry = _geometry(options, signal, last=i == len(kernels) - 1)
        plans = [make_plan(shape, w, x_dtype=dtype, streamed=streamed, **geometry) for w in kernel.weights]
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


ALPHA_MODES = ("premultiply", "keep", "channel")


def filter_signal(signal, options: FilterOptions, kernels=None, *, consume: bool = False):
    """Apply the chain of kernels to a Signal; return (new Signal, list of step descriptions).

    The new Signal carries the input's metadata updated for stride (audio
    rate, voxel spacing, DPI, NIfTI affine) and, in ``meta["range"]``, how
    its float values are to become integer samples.  With ``consume`` the
    input's samples may be overwritten (the caller read them for this run
    alone): where the engine can, a volume is then filtered in its own
    memory instead of beside a second one.
    """
    from . import io
    from .engine.geometry import per_axis

    kernels = resolve_kernels(options, signal) if kernels is None else kernels
    steps = plan_chain(signal, kernels, options)
    if options.alpha not in ALPHA_MODES:
        from .errors import UsageError

        raise UsageError(f"must be one of {', '.join(ALPHA_MODES)}, got {options.alpha!r}", subject="--alpha")
    # NaN and infinity in the samples are data, not bugs: they propagate to
    # the outputs they touch (and integer writers refuse them with a count),
    # so numpy's "invalid value" / "overflow" warnings would only be noise.
    with _non_finite_is_data():
        if _has_alpha(signal) and options.alpha != "channel":
            data = _filter_with_alpha(signal, kernels, options)
        else:
            data = _run_chain(signal.data, signal, kernels, options, owned=consume)
    nd = signal.spatial_ndim
    strides = per_axis(options.stride, nd, "stride", minimum=1)
    result = io.derive(signal, data, stride=strides, origin=chain_origin(steps, kernels, options, nd))
    result.meta["range"] = options.range or kernels[-1].range_default
    return result, steps


@contextlib.contextmanager
def _non_finite_is_data():
    """Silence numpy's floating-point warnings (inf - inf, overflow) for the filter's arithmetic.

    ``np.errstate`` covers this thread; the engine's band threads start with
    numpy's default state, so their warnings are filtered by message as well
    (warning filters are process-wide).
    """
    import warnings

    import numpy as np

    with np.errstate(invalid="ignore", over="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"(invalid value|overflow|divide by zero) encountered", RuntimeWarning)
        yield


def _run_chain(data, signal, kernels, options: FilterOptions, owned: bool = False):
    """Each kernel in turn; a step may overwrite what only this chain holds (``owned``, then every result)."""
    for i, kernel in enumerate(kernels):
        data = kernel.apply(data, convolve=options.convolve, overwrite_x=owned,
                            **_geometry(options, signal, last=i == len(kernels) - 1))
        owned = True
    return data


def _has_alpha(signal) -> bool:
    return bool(signal.meta.get("alpha")) and signal.channel_axis is not None and signal.data.shape[-1] >= 2


def alpha_full_scale(dtype) -> float:
    """The value of an opaque alpha sample: 255, 65535, or 1.0 for float samples."""
    import numpy as np

    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0


def _filter_with_alpha(signal, kernels, options: FilterOptions):
    """Filter colour and alpha under --alpha premultiply or keep (see ``premultiplied``)."""
    import numpy as np

    x = signal.data
    work = np.float64 if x.dtype == np.float64 or options.precision == "float64" else np.float32
    full = alpha_full_scale(x.dtype)
    colour = x[..., :-1].astype(work)
    alpha = x[..., -1:].astype(work)
    if options.alpha == "premultiply":
        weight = alpha / full
        filtered = _run_chain(np.concatenate([colour * weight, alpha], axis=-1), signal, kernels, options, owned=True)
        return unpremultiply(filtered, full)
    colour = _run_chain(colour, signal, kernels, options, owned=True)
    return np.concatenate([colour, _resample_alpha(alpha, signal, kernels, options)], axis=-1).astype(colour.dtype)


def unpremultiply(filtered, full: float):
    """Divide filtered premultiplied colour by the filtered alpha (last channel).

    Where the filtered alpha is below half a step (fully transparent), the
    colour is 0: transparent pixels never bleed their colour into the result.
    """
    import numpy as np

    alpha = filtered[..., -1:]
    weight = alpha / full
    colour = np.zeros_like(filtered[..., :-1])
    half_step = 0.5 if full > 1 else 0.5 / 255
    np.divide(filtered[..., :-1], weight, out=colour, where=alpha > half_step)
    return np.concatenate([colour, alpha], axis=-1)


def _resample_alpha(alpha, signal, kernels, options: FilterOptions):
    """Alpha moved onto the output grid unchanged: each kernel replaced by a one-tap kernel at its centre."""
    import numpy as np

    from .engine import correlate
    from .engine.geometry import per_axis

    data = alpha
    for i, kernel in enumerate(kernels):
        geometry = _geometry(options, signal, last=i == len(kernels) - 1)
        unit = all(s == 1 for s in per_axis(geometry["stride"], kernel.ndim, "stride", minimum=1))
        if unit and data.shape[:-1] == _planned_shape(data, kernel, geometry):
            continue  # same grid: alpha is kept exactly
        tap = np.zeros(kernel.shape)
        tap[tuple((k - 1) // 2 for k in kernel.shape)] = 1.0
        data = correlate(data, tap, **dict(geometry, method="direct"))
    return data


def _planned_shape(data, kernel, geometry):
    from .engine.geometry import plan_axes

    plans = plan_axes(data.shape[:-1], kernel.shape, stride=geometry["stride"], padding=geometry["padding"],
                      dilation=geometry["dilation"])
    return tuple(p.out for p in plans)


def chain_origin(steps, kernels, options: FilterOptions, ndim: int) -> tuple[float, ...]:
    """Per spatial axis, the input position of output sample 0 (the centre of its first window)."""
    from .engine.geometry import per_axis

    dilation = per_axis(options.dilation, ndim, "dilation", minimum=1)
    origin = [0.0] * ndim
    for step, kernel in zip(steps, kernels):
        for axis in range(ndim):
            before = step["padding"][axis][0]
            origin[axis] += -before + dilation[axis] * (kernel.shape[axis] - 1) / 2
    return tuple(origin)


def check_output(source: str, dest: str, in_place: bool) -> None:
    """Refuse an output that is the input file (also through a symlink or ``./``) unless `in_place`."""
    import os

    from .errors import OutputError

    if str(source) == "-" or str(dest) == "-" or in_place:
        return
    try:
        same = os.path.exists(dest) and os.path.samefile(source, dest)  # symlinks, ./, hard links
    except OSError:
        same = False
    if same:
        raise OutputError("is the input file; choose another output, or pass --in-place to replace the input",
                          subject=str(dest))


def filter_job(source: str, dest: str, options: FilterOptions) -> dict:
    """The batch unit of work: ``filter_file`` as a plain, picklable record."""
    return filter_file(source, dest, options).as_dict()


def filter_file(source: str, dest: str, options: FilterOptions) -> FilterReport:
    """Read ``source``, filter it and write ``dest`` atomically; raise a ConvcliError on failure."""
    from . import io

    start = time.perf_counter()
    check_output(source, dest, options.in_place)
    signal = io.read(source, kind=options.kind, key=options.key, auto_orient=options.auto_orient,
                     max_pixels=options.max_pixels, memory_budget=options.memory_budget,
                     stream=_may_stream(dest, options))
    if signal.meta.get("streamed"):
        return filter_streamed(signal, source, dest, options, start)
    result, steps = filter_signal(signal, options, consume=True)
    written = io.write(result, dest, format=options.out_format, compress_level=options.compress_level)
    return FilterReport(
        input=str(source), output=str(dest), input_shape=tuple(signal.data.shape),
        output_shape=tuple(result.data.shape), kernels=steps, seconds=time.perf_counter() - start,
        clipped=written.clipped, notes=input_notes(signal) + written.notes,
    )


def _may_stream(dest: str, options: FilterOptions) -> bool:
    """Whether an input over the memory budget may be streamed: only into a format written in place (.npy).

    The format is settled here only to decide; a bad one is reported by the
    writer, after the input, as for any other run.
    """
    from . import io
    from .errors import ConvcliError

    try:
        fmt = io.output_format(dest, options.out_format)
    except ConvcliError:
        return False
    # No format from the name (stdout): the input's own, .npy for a streamed input.
    return fmt is None or fmt in io.STREAMED_FORMATS


def streamed_why(method: str) -> str:
    return f"{method} (streamed: the input is over the memory budget)"


def streamed_band_bytes(plan, signal) -> tuple[int, int]:
    """Bytes a streamed run holds at once (about), and the output rows of one band.

    Every thread holds a band: its padded input rows, mapped and gathered,
    an intermediate as large for a separable pass, and its output rows,
    computed and mapped.
    """
    import math

    from .engine.bands import band_rows, workers

    trail = signal.data.shape[-1] if signal.channel_axis is not None else 1
    p0 = plan.axes[0]
    rows = band_rows(plan.axes, 1, trail, plan.dtype.itemsize, streamed=True)
    padded_row = plan.dtype.itemsize * trail * math.prod(p.before + p.length + p.after for p in plan.axes[1:])
    in_rows = (rows - 1) * p0.stride + p0.span
    return workers() * (3 * in_rows + 2 * rows) * padded_row, rows


def filter_streamed(signal, source: str, dest: str, options: FilterOptions, start: float) -> FilterReport:
    """Filter a memory-mapped input band by band straight into a memory-mapped output of its format.

    For an input over the memory budget (``signal.meta["streamed"]``): one
    kernel of one weight array, computed by a strategy that works band by
    band, with the pages of finished rows of both files let go as it goes,
    so the resident memory stays a few bands whatever the volume's size.
    A NIfTI volume (x fastest on disk) is filtered as its (z, y, x)
    transpose with the kernel and geometry transposed, so bands of rows are
    contiguous in both files.
    """
    import numpy as np

    from . import engine, io
    from .engine.geometry import per_axis
    from .errors import DataError
    from .io.limits import Limits, human

    kernels = resolve_kernels(options, signal)
    budget = Limits(memory_budget=options.memory_budget).memory_budget
    dims = "x".join(str(n) for n in signal.data.shape)
    over = f"{dims} samples are over the memory budget of {human(budget)}"
    if len(kernels) != 1 or len(kernels[0].weights) != 1:
        count = f"a chain of {len(kernels)} kernels" if len(kernels) != 1 else "a kernel of several weight arrays"
        raise DataError(
            f"{over}; such an input is filtered in streamed bands with a single kernel only, not {count} "
            "(run one kernel at a time, or raise --memory-budget)", subject=str(source))
    fmt = io.output_format(dest, options.out_format) or signal.meta.get("format")
    if fmt != signal.meta.get("format"):
        raise DataError(f"{over}; such an input is streamed only into a file of its own format "
                        f"({signal.meta.get('format')}), not {fmt}", subject=str(source))
    weights = kernels[0].weights[0]
    geometry = _geometry(options, signal, last=True)
    x = signal.data
    flipped = not x.flags.c_contiguous  # a NIfTI volume: run on its C-ordered (z, y, x) transpose
    if flipped:
        nd = signal.spatial_ndim
        x, weights = x.T, np.asarray(weights).T
        for name in ("stride", "dilation"):
            geometry[name] = per_axis(geometry[name], nd, name, minimum=1)[::-1]
        padding = geometry["padding"]
        if not isinstance(padding, str):
            geometry["padding"] = per_axis(padding, nd, "padding", minimum=0)[::-1]
    plan = engine.make_plan(x.shape, weights, x_dtype=x.dtype, streamed=True, **geometry)
    need, rows = streamed_band_bytes(plan, signal)
    if need > budget:
        raise DataError(f"{over}, and streaming it in bands of {rows} rows needs {human(need)}; "
                        "raise --memory-budget", subject=str(source))
    steps = plan_chain(signal, kernels, options)
    steps[0]["methods"] = [plan.method]  # planned on the C-ordered transpose of a NIfTI volume
    steps[0]["why"] = streamed_why(plan.method)
    out_shape = plan.output_shape[::-1] if flipped else plan.output_shape
    nd = signal.spatial_ndim
    like = io.derive(signal, np.broadcast_to(np.zeros((), plan.dtype), out_shape),
                     stride=per_axis(options.stride, nd, "stride", minimum=1),
                     origin=chain_origin(steps, kernels, options, nd))
    run = engine.convolve if options.convolve else engine.correlate
    drop_input = io.release_rows(x)
    with _non_finite_is_data(), io.mapped_output(dest, like, plan.dtype, format=fmt) as mapped:
        out = mapped.T if flipped else mapped
        drop_output = io.release_rows(out)

        def on_rows(input_rows: int, output_rows: int) -> None:
            drop_input(input_rows)
            drop_output(output_rows)

        run(x, weights, out=out, on_rows=on_rows, **geometry)
    return FilterReport(
        input=str(source), output=str(dest), input_shape=tuple(signal.data.shape),
        output_shape=tuple(out_shape), kernels=steps, seconds=time.perf_counter() - start,
        notes=input_notes(signal) + [f"streamed in bands: the input is over the memory budget of {human(budget)}"],
    )


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
