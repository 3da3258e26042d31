"""Filter one file: read -> chain of kernels -> write, returning a report.

``filter_file`` is the whole work for one input: a picklable function of
(source, destination, options) that returns a :class:`FilterReport`, so a
batch can schedule it in worker processes.  The chain is :mod:`.chain`'s;
a large JPEG photo is filtered band by band as it decodes (:mod:`.banded`),
an input over the memory budget takes the streamed path (:mod:`.streamed`), a
video the path of frames (:mod:`.video`).
Nothing here prints.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from .chain import filter_signal, prepare, resolve_kernels
from .options import FilterOptions


@dataclass
class FilterReport:
    """What happened to one input (the CLI reports it; ``--json`` prints it)."""

    input: str
    output: str | None
    status: str = "ok"
    input_shape: tuple[int, ...] = ()
    output_shape: tuple[int, ...] = ()
    kernels: list[dict] = field(default_factory=list)  # one step of Chain.plan per kernel
    clipped: int = 0  # integer samples outside the output range, clipped
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what the reader, the filter or the writer changed or left out
    error: str | None = None

    def as_dict(self) -> dict:
        return {
            "input": self.input, "output": self.output, "status": self.status,
            "input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
            "kernels": self.kernels, "clipped": self.clipped, "seconds": round(self.seconds, 6),
            "notes": self.notes, "error": self.error,
        }


def filter_job(source: str, dest: str, options: FilterOptions) -> dict:
    """The batch unit of work: ``filter_file`` as a plain, picklable record."""
    return filter_file(source, dest, options).as_dict()


def filter_file(source: str, dest: str, options: FilterOptions, progress=None, *, on_frames=None) -> FilterReport:
    """Read ``source``, filter it and write ``dest`` atomically; raise a ConvcliError on failure.

    ``progress(done, added)``, if given, hears of the engine's units of work
    (bands, planes, chunks) as they are added and done; see
    :func:`convcli.parallel.progress_to`.  A sound counts its own blocks
    instead (of all its passes: two with ``--normalize-peak``); a Zarr store
    (or a TIFF over the memory budget or written to Zarr) is filtered chunk by chunk (:mod:`.chunked`), its chunks counted as they
    are written; a video is streamed into a video (:mod:`.video`) and counts
    frames instead: ``on_frames(done, expected)``.
    """
    from ..parallel import progress_to

    with progress_to(progress):
        return _filter_file(source, dest, options, progress, on_frames)


def _filter_file(source: str, dest: str, options: FilterOptions, progress, on_frames) -> FilterReport:
    from .. import io
    from ..io.tiff_chunked import read_in_chunks
    from ..io.zarr import is_zarr
    from ..parallel import progress_report, progress_to
    from . import audio
    from .banded import filter_in_bands
    from .outputs import refuse_input_as_output
    from .streamed import filter_streamed, may_stream

    start = time.perf_counter()
    refuse_input_as_output(source, dest, options.in_place)
    refuse_kernel_file_as_output(dest, options)
    if is_zarr(source) or read_in_chunks(source, dest, options.memory_budget, options.max_pixels):
        from .chunked import filter_chunked

        done = filter_chunked(source, dest, options, progress=progress_report())
        return FilterReport(input=str(source), output=str(dest), input_shape=done.input_shape,
                            output_shape=done.output_shape, kernels=done.steps, clipped=done.clipped,
                            seconds=time.perf_counter() - start, notes=done.notes)
    source_name = str(source)
    src, fmt = io.open_source(source, memory_budget=options.memory_budget)
    if io.formats.family_of(fmt) == "video":
        from .video import filter_video

        with progress_to(None):  # the engine's blocks of every frame would be a second, endless count
            run = filter_video(src, dest, options, on_progress=on_frames)
        return FilterReport(input=source_name, output=str(dest), input_shape=run.input_shape,
                            output_shape=run.output_shape, kernels=run.steps, clipped=run.clipped,
                            seconds=time.perf_counter() - start, notes=run.notes)
    if options.kind in (None, "image"):
        banded = filter_in_bands(src, dest, options)
        if banded is not None:
            banded.input, banded.seconds = source_name, time.perf_counter() - start
            return banded
    signal = io.read(src, kind=options.kind, key=options.key, auto_orient=options.auto_orient,
                     max_pixels=options.max_pixels, memory_budget=options.memory_budget,
                     stream=may_stream(dest, options) or audio.may_stream(dest, options))
    if audio.is_sound(signal):
        with progress_to(None):  # the engine's chunks are not counted twice
            done = audio.filter_audio(signal, dest, options, progress)
        note = audio.streamed_note(signal, options)
        return FilterReport(
            input=source_name, output=str(dest), input_shape=tuple(signal.data.shape), output_shape=done.output_shape,
            kernels=done.steps, seconds=time.perf_counter() - start, clipped=done.clipped,
            notes=input_notes(signal) + ([note] if note else []) + done.notes)
    refuse_audio_options(signal, options)
    if signal.streamed:
        streamed = filter_streamed(signal, source_name, dest, options)
        return FilterReport(
            input=source_name, output=str(dest), input_shape=tuple(signal.data.shape),
            output_shape=streamed.output_shape, kernels=streamed.steps, seconds=time.perf_counter() - start,
            notes=input_notes(signal) + [streamed.note])
    filtered = filter_signal(signal, options, consume=True)
    written = io.write(filtered.signal, dest, format=options.out_format, compress_level=options.compress_level,
                       range=filtered.range, depth=options.depth, quality=options.quality)
    return FilterReport(
        input=source_name, output=str(dest), input_shape=tuple(signal.data.shape),
        output_shape=tuple(filtered.signal.data.shape), kernels=filtered.steps, seconds=time.perf_counter() - start,
        clipped=written.clipped, notes=input_notes(signal) + filtered.notes + written.notes,
    )


def explain(source: str, options: FilterOptions) -> list[dict]:
    """The plan of every kernel for ``source``: nothing is filtered or written (a large .npy is only mapped).

    Each step also says the colour space filtered and what is done with alpha
    (None for an input without alpha).
    """
    from .. import io

    opened, fmt = io.open_source(source, memory_budget=options.memory_budget)
    if io.formats.family_of(fmt) == "video":
        from .video import explain_video

        return explain_video(opened, options)
    signal = io.read(opened, kind=options.kind, key=options.key, auto_orient=options.auto_orient,
                     max_pixels=options.max_pixels, memory_budget=options.memory_budget, stream=True)
    from . import audio

    if audio.is_sound(signal):
        return audio.explain(signal, options)
    refuse_audio_options(signal, options)
    run = prepare(signal, resolve_kernels(options, signal), options)
    return [dict(step, **run.describe()) for step in run.steps]


def refuse_kernel_file_as_output(dest: str, options: FilterOptions) -> None:
    """Refuse an output that is a kernel file the run reads (an ``ir:`` response named as the output by mistake)."""
    from ..kernels import file_of
    from .outputs import refuse_input_as_output

    for spec in options.kernels:
        path = file_of(spec)
        if path is not None:
            refuse_input_as_output(path, dest, advice=f"is the kernel file of -k {spec}; choose another output")


def refuse_audio_options(signal, options: FilterOptions) -> None:
    """The options for sound (tail, mix, gain, level, rate) given for an input that is not audio: one line."""
    from ..errors import ParameterError

    given = options.audio.given()
    if given:
        what = {"image": "an image", "volume": "a volume", "audio": "samples without a sample rate"}.get(
            signal.kind, "a signal (not read as audio)")
        raise ParameterError(f"applies to audio, and this input is {what}", subject=given[0])
    if not options.kernels:
        raise ParameterError("give at least one kernel", subject="kernel")


def input_notes(signal) -> list[str]:
    """What the reader changed or left out that a user should hear about."""
    meta, notes = signal.meta, []
    if meta.get("oriented"):
        notes.append(f"EXIF orientation {meta['oriented']} applied (the output is upright)")
    if meta.get("thumbnails_dropped"):
        notes.append(f"{meta['thumbnails_dropped']} reduced-resolution TIFF page(s) (thumbnails) were not read")
    if meta.get("transparency_dropped"):
        notes.append("the PNG's transparent colour key (tRNS) was dropped")
    if meta.get("short_read"):
        present, declared = meta["short_read"]
        notes.append(f"cut short: the header declares {declared:,} frames but the file holds {present:,}; "
                     "those were filtered")
    if meta.get("metadata_damaged"):
        notes.append(f"damaged metadata ({meta['metadata_damaged']}): what could not be read was left out")
    if meta.get("spacing_invalid"):
        notes.append(f"voxel sizes {meta['spacing_invalid']} are invalid and were ignored")
    return notes
