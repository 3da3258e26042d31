"""`convcli filter`: parse the flags, call the pipeline, report."""
from __future__ import annotations

import json
import os
import sys
from typing import List, Optional

import typer

from ..engine import help_text
from ..errors import ConvcliError, UsageError
from ..parallel import cores, hold_blas_to_one_thread
from . import Command, app, completion, parse
from .kernels_cmd import complete_kernel


@app.command("filter", cls=Command)
def filter_command(
    inputs: List[str] = typer.Argument(
        ..., metavar="INPUT...",
        help="Input files or folders ('-' for stdin). Several inputs or a folder run as a batch into the -o folder.",
    ),
    kernel: List[str] = typer.Option(
        [], "-k", "--kernel", metavar="SPEC", autocompletion=complete_kernel,
        help="Kernel: a name (sobel, gaussian:sigma=2, ...), a kernel file, an impulse response (ir:hall.wav), "
        "or an inline matrix such as '[[1,0,-1],[2,0,-2],[1,0,-1]]'. Repeat to apply several in order.",
    ),
    output: Optional[str] = typer.Option(
        None, "-o", "--output", metavar="OUTPUT", help="Output file; in batch mode an output folder (mirrors the inputs)."
    ),
    stride: str = typer.Option("1", "--stride", metavar="S", help="Step between output samples: N or one per axis (2,1)."),
    padding: str = typer.Option(
        "same", "--padding", metavar="P",
        help="same (TensorFlow rule) | valid | full | causal (all before: out[i] reads no later sample) | N | N,M."),
    pad_mode: Optional[str] = typer.Option(
        None, "--pad-mode", metavar="MODE", autocompletion=completion.complete_pad_mode,
        help=help_text() + " An impulse response (ir:) takes zeros unless told otherwise: silence around the sound."),
    dilation: str = typer.Option("1", "--dilation", metavar="D", help="Spacing between kernel taps: N or one per axis."),
    convolve: bool = typer.Option(
        False, "--convolve",
        help="Flip the kernel (mathematical convolution). Without it convcli computes "
        "cross-correlation: the kernel is laid over the samples as written, as in PyTorch.",
    ),
    method: str = typer.Option("auto", "--method", metavar="METHOD", autocompletion=completion.complete_method, help="auto | direct | separable | lowrank | box | toeplitz | fft | opencv; all agree, auto picks the fastest."),
    precision: Optional[str] = typer.Option(
        None, "--precision", metavar="TYPE", help="float32 | float64 (default: float64 for float64 input, else float32)."
    ),
    normalize: bool = typer.Option(False, "--normalize", help="Divide a custom kernel by its sum."),
    explain: bool = typer.Option(
        False, "--explain", help="Print the kernel, padding, output shape and chosen method; compute nothing."
    ),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Report the method used and timings on stderr."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the report (or --explain) as JSON on stdout; in batch mode one JSON line per file."
    ),
    jobs: Optional[int] = typer.Option(None, "-j", "--jobs", metavar="N", help="Worker processes for a batch on this machine (default: the number of cores); given, "
        "the batch runs here even if DASK_SCHEDULER_ADDRESS is set."),
    suffix: Optional[str] = typer.Option(
        None, "--suffix", metavar="TEXT", help="Batch: write each output next to its input with this suffix (photo_edges.png)."
    ),
    out_format: Optional[str] = typer.Option(
        None, "--format", metavar="FMT", autocompletion=completion.complete_format, help="Output format (png, tiff, wav, npy, ...); in a batch it changes every output's extension."
    ),
    compress_level: Optional[int] = typer.Option(
        None, "--compress-level", metavar="N",
        help="Compression 0-9 for PNG (default 2: fast; 6-9: smaller, several times slower), TIFF, FLAC, .npz.",
    ),
    depth: Optional[str] = typer.Option(
        None, "--depth", metavar="BITS",
        help="Output sample type: 1 (black and white), 8, 16, 24, 32 (integers; 8 -> 16 multiplies by 257) or "
        "32f, 64f (floats, in the input's units). Default: the input's.",
    ),
    quality: Optional[int] = typer.Option(
        None, "--quality", metavar="Q", help="JPEG/WebP quality 1-100 (default: a JPEG input's own, else 90)."
    ),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Batch: skip inputs whose output exists (resume a run)."),
    fail_fast: bool = typer.Option(
        False, "--fail-fast",
        help="Batch: stop at the first file that fails (finished outputs are kept). Video: a corrupt packet or a "
        "clip cut short fails the file instead of a warning.",
    ),
    quiet: bool = typer.Option(
        False, "-q", "--quiet", help="No warnings (notes on what was changed or left out), no progress bar, "
        "and no summary unless something failed."),
    kind: Optional[str] = typer.Option(
        None, "--kind", metavar="KIND", autocompletion=completion.complete_kind, help="Read the input as audio | image | volume | signal (default: from its content)."
    ),
    alpha: str = typer.Option(
        "auto", "--alpha", metavar="MODE", autocompletion=completion.complete_alpha,
        help="Transparency: auto (default: premultiply for smoothing kernels; for any other, alpha kept and "
        "colour filtered with transparent pixels taking the colour of the visible ones around them), "
        "premultiply (colour times alpha filtered, then divided by the filtered alpha: edges soften), "
        "keep (alpha unchanged, colour filtered as stored), channel (alpha filtered like a colour).",
    ),
    colorspace: str = typer.Option(
        "stored", "--colorspace", metavar="SPACE", autocompletion=completion.complete_colorspace,
        help="Images: the values filtered. stored (default: the samples as stored), linear (linear light: "
        "the sRGB or ICC tone curve undone, then redone; blurs do not darken), luma (only the BT.709 luma, "
        "colour differences kept: sharpening without colour fringes). Videos: stored (Y, U and V as stored, "
        "each at its own size), luma (Y only), rgb (converted to RGB and back).",
    ),
    axes: Optional[str] = typer.Option(
        None, "--axes", metavar="AXES",
        help="Run the kernel along these axes only: x, y, z (last, second-to-last, third-to-last spatial "
        "axis), t (frames), e.g. '--axes x' (a 1D kernel along rows) or '--axes y,x' on a volume (a 2D "
        "kernel on every slice). The kernel has one axis per name, in that order. Videos: t,y,x (kernels "
        "over time too, the first axis in frames) or y,x (frame by frame); default from the kernel.",
    ),
    range_mode: Optional[str] = typer.Option(
        None, "--range", metavar="MODE", autocompletion=completion.complete_range,
        help="How results become integer samples: clip | abs | offset (signed results around mid-grey) | "
        "rescale (min..max to the full range). Default: the kernel's choice (offset for edge kernels), else clip.",
    ),
    no_auto_orient: bool = typer.Option(False, "--no-auto-orient", help="Keep a photo's stored pixels; ignore its EXIF orientation."),
    max_pixels: Optional[int] = typer.Option(
        None, "--max-pixels", metavar="N", help="Largest image accepted, in pixels (default 89478485, Pillow's bomb limit)."
    ),
    memory_budget: Optional[str] = typer.Option(
        None, "--memory-budget", metavar="SIZE", help="Memory a file may cost, e.g. 4G (default: half the available memory)."
    ),
    in_place: bool = typer.Option(False, "--in-place", help="Replace the input with the result (atomically)."),
    tail: Optional[str] = typer.Option(
        None, "--tail", metavar="[DURATION]", rich_help_panel="Audio",
        help="Audio: write the input plus the kernels' decay (n + k - 1 samples for an impulse response of k) "
        "instead of cutting the reverb at the input's end; --tail 2s keeps at most 2 s of it, the cut faded out."),
    fade: Optional[str] = typer.Option(
        None, "--fade", metavar="DURATION", rich_help_panel="Audio",
        help="Audio: fade the end of the output out over this long (default: 50ms where --tail DURATION cuts the "
        "decay, else none; 0 for a hard cut)."),
    mix: Optional[str] = typer.Option(
        None, "--mix", metavar="WET", rich_help_panel="Audio",
        help="Audio: the filtered (wet) share, 0-1 or 0%-100% (default 1): a linear crossfade with the input; "
        "0 gives the input back exactly."),
    gain: Optional[str] = typer.Option(
        None, "--gain", metavar="DB", rich_help_panel="Audio", help="Audio: multiply the result by 10^(DB/20)."),
    normalize_peak: Optional[str] = typer.Option(
        None, "--normalize-peak", metavar="DB", rich_help_panel="Audio",
        help="Audio: scale the result so that its largest sample is DB below full scale (e.g. -1); nothing "
        "clips. Two passes over the input."),
    ir_norm: str = typer.Option(
        "energy", "--ir-norm", metavar="MODE", rich_help_panel="Audio",
        help="Level of ir: impulse responses: energy (default: unit energy, the wet as loud as the dry), "
        "peak (largest tap 1) or none (as recorded). One gain for all of a response's channels."),
    rate: Optional[str] = typer.Option(
        None, "--rate", metavar="HZ", rich_help_panel="Audio",
        help="Audio: resample the result to this rate (44100, 48k) by a polyphase FIR; -k may then be left out."),
    key: Optional[str] = typer.Option(None, "--key", metavar="NAME", help="The array to take from a .npz archive."),
    codec: Optional[str] = typer.Option(
        None, "--codec", metavar="NAME", help="Video: encode as h264, hevc, vp9, av1, ffv1, prores, mjpeg (default: the input's)."
    ),
    crf: Optional[int] = typer.Option(
        None, "--crf", metavar="N", help="Video: constant quality, lower is better (default: x264 23, x265 28, VP9 31, AV1 35)."
    ),
    bitrate: Optional[str] = typer.Option(None, "--bitrate", metavar="RATE", help="Video: bits per second instead, e.g. 5M."),
    pix_fmt: Optional[str] = typer.Option(
        None, "--pix-fmt", metavar="FMT", help="Video: the pixel format written, e.g. yuv444p, yuv420p10le, gray (default: the input's)."
    ),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", metavar="ADDRESS", envvar="DASK_SCHEDULER_ADDRESS", show_envvar=False,
        help="Run a batch's files, or a Zarr input's chunks, on the Dask cluster at ADDRESS (tcp://host:8786; "
        "env DASK_SCHEDULER_ADDRESS); one other file runs here. Workers must see the same files.",
    ),
    resume: bool = typer.Option(
        False, "--resume", help="Complete an interrupted chunked output (OUT.zarr.partial): only missing chunks are computed."
    ),
) -> None:
    """Filter a signal, image or volume with one or more kernels.

    The default operation is cross-correlation (no kernel flip), as in PyTorch
    and CNNs; --convolve flips the kernel. Stride applies once, at the last
    kernel of a chain; padding, border mode and dilation apply to every kernel.
    """
    hold_blas_to_one_thread()
    from ..pipeline import batch
    from ..io.zarr import is_zarr
    from ..pipeline.filter import explain as plan_of, filter_file, filter_job
    from ..pipeline.options import AudioOptions, BatchOptions, FilterOptions, Geometry, VideoOptions
    from .batch_report import batch_scheduler, run_batch

    geometry = Geometry(stride=parse.ints(stride, "--stride"), padding=parse.padding(padding),
                        dilation=parse.ints(dilation, "--dilation"), pad_mode=pad_mode)
    chunked = len(inputs) == 1 and is_zarr(inputs[0])
    several = batch.is_batch(inputs, output)
    mix_share = parse.share(mix, "--mix")
    keep_tail, tail_max = parse.tail(tail)
    sound = AudioOptions(tail=keep_tail, tail_max=tail_max, fade=parse.duration(fade, "--fade"),
                         mix=1.0 if mix_share is None else mix_share, gain=parse.decibels(gain, "--gain") or 0.0,
                         normalize_peak=parse.decibels(normalize_peak, "--normalize-peak"), ir_norm=ir_norm,
                         rate=parse.rate(rate))
    video = VideoOptions(codec=codec, crf=crf, bitrate=parse.bitrate(bitrate), pix_fmt=pix_fmt, fail_fast=fail_fast)
    options = FilterOptions(
        kernels=tuple(kernel), geometry=geometry, convolve=convolve, method=method, precision=precision,
        normalize=normalize, out_format=out_format, compress_level=compress_level, depth=depth, quality=quality,
        kind=kind, alpha=alpha, colorspace=colorspace, axes=parse.names(axes), range=range_mode,
        auto_orient=not no_auto_orient, max_pixels=max_pixels,
        memory_budget=parse.size(memory_budget), key=key, in_place=in_place, audio=sound, video=video,
        scheduler=scheduler if chunked and scheduler and not several else None,
        resume=resume,
    )
    if scheduler and not (chunked or several) and scheduler != os.environ.get("DASK_SCHEDULER_ADDRESS"):
        raise UsageError("runs the chunks of a Zarr input, or a batch's files, on a Dask cluster; one other "
                         "file runs on this machine", subject="--scheduler")
    # Checked for one input too: -j 0 is the same mistake whatever follows it.
    runs = BatchOptions(workers=cores() if jobs is None else jobs, skip_existing=skip_existing, fail_fast=fail_fast,
                        scheduler=batch_scheduler(scheduler, jobs) if several else None)
    if runs.scheduler:
        from dataclasses import replace

        from ..pipeline.cluster import absolute_kernels

        options = replace(options, kernels=absolute_kernels(options.kernels))
    if several:
        if explain:
            raise UsageError("--explain takes one input", subject="--explain")
        plan = batch.plan(
            inputs, output=output, suffix=suffix, accept=lambda p: batch.media_format(p) is not None,
            extension=batch.extension_for(out_format) if out_format else None,
        )
        on_ok = None if quiet else (lambda record: warn_notes(record.get("input"), record.get("notes") or ()))
        raise typer.Exit(run_batch(plan, filter_job, options, runs, quiet=quiet, as_json=as_json, verbose=verbose,
                                   on_ok=on_ok))
    input = inputs[0]
    if explain:
        _print_explain(plan_of(input, options), as_json)
        return
    output = _single_output(input, output, in_place)
    from .frame_progress import FrameProgress
    from .progress import FileProgress, stderr_is_terminal

    progress = FileProgress(_short(input), enabled=not quiet and stderr_is_terminal())
    frames = FrameProgress(enabled=not quiet)
    try:
        report = filter_file(input, output, options, progress=progress, on_frames=frames.update)
    except ConvcliError as exc:
        if as_json:  # one JSON object per input, failures too; the error line and exit code as always
            from .batch_report import failure_line

            record = {"input": input, "output": output, "status": "failed", "error": failure_line(exc, input)}
            (sys.stderr if output == "-" else sys.stdout).write(json.dumps(record) + "\n")
        raise
    finally:
        progress.close()
        frames.close()
    if not quiet:
        warn_notes(report.input, report.notes)
    if report.clipped and not quiet and (verbose or _is_audio(report.output)):
        # Clipped audio is audible distortion, so it is reported unless asked not to.
        sys.stderr.write(f"convcli: warning: {report.output}: {report.clipped} samples clipped to the output range\n")
    if as_json:
        # With the data on stdout, the report goes to stderr so the two never mix.
        stream = sys.stderr if output == "-" else sys.stdout
        stream.write(json.dumps(report.as_dict()) + "\n")
    if verbose:
        for step in report.kernels:
            sys.stderr.write(
                f"convcli: {step['kernel'].get('spec', '?')}: {' '.join(map(str, step['input_shape']))} -> "
                f"{' '.join(map(str, step['output_shape']))}, method: {step['why']}\n"
            )
        sys.stderr.write(f"convcli: {report.input} -> {report.output} in {report.seconds:.3f} s\n")


def warn_notes(input: str, notes) -> None:
    """Each note the reader, the filter or the writer made, as one warning line on stderr."""
    from .batch_report import printable

    for note in notes:
        sys.stderr.write(f"convcli: warning: {printable(input)}: {' '.join(str(note).split())}\n")


def _single_output(input: str, output: str | None, in_place: bool) -> str:
    """The output of a one-file run: -o, the input itself with --in-place, or stdout when it is a pipe."""
    if in_place:
        if output is not None and output != input:
            raise UsageError("takes no -o: the result replaces the input", subject="--in-place")
        if input == "-":
            raise UsageError("needs an input file, not stdin", subject="--in-place")
        return input
    if output == "-" and sys.stdout.isatty():
        raise UsageError("stdout is a terminal; name a file with -o OUTPUT, or pipe or redirect the result",
                         subject="-o -")
    if output is not None:
        return output
    if sys.stdout.isatty():
        raise UsageError(
            "no output given and stdout is a terminal; name a file with -o OUTPUT "
            "(e.g. -o edges.png), or pipe the result: -o - | other-program",
            subject="-o/--output",
        )
    return "-"


def _short(path: str) -> str:
    from .batch_report import printable

    name = printable(path.rsplit("/", 1)[-1] or path)
    return name if len(name) <= 24 else name[:21] + "..."


def _is_audio(path: str) -> bool:
    from ..io.formats import family_of, from_extension

    fmt = from_extension(path) if path != "-" else None
    return family_of(fmt) == "audio"


def _print_explain(steps: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(steps))
        return
    if steps and not steps[0].get("audio"):
        first = steps[0]
        print(f"colour space: {first.get('colorspace', 'stored')}")
        if first.get("alpha"):
            print(f"alpha: {first['alpha']}")
        flipped = first.get("operation") == "convolution"
        print(f"operation: {'convolution (the kernel flipped)' if flipped else 'cross-correlation (the kernel as written)'}")
        print(f"border mode: {first.get('pad_mode')}")
        print(f"range (integer outputs): {first.get('range')}")
    for i, step in enumerate(steps, 1):
        k = step["kernel"]
        print(f"kernel {i}: {k.get('spec', '?')}")
        for key in ("shape", "operator", "sum", "separable", "rank"):
            if key in k:
                print(f"  {key}: {k[key]}")
        if k.get("causal"):
            print("  causal: its first tap is time zero (padding all before)")
        if k.get("routing"):
            r = k["routing"]
            print(f"  channels: {r['layout']}, {r['input_channels']} in, {r['output_channels']} out")
        print(f"  axes: {', '.join(step['axes'])}")
        for axis, (before, after) in zip(step["axes"], step["padding"]):
            print(f"  padding axis {axis}: {before} before, {after} after")
        print(f"  input shape: {tuple(step['input_shape'])}")
        print(f"  output shape: {tuple(step['output_shape'])}")
        print(f"  precision: {step['precision']}")
        print(f"  method: {step['why']}")
    if steps and steps[0].get("audio"):
        _print_audio(steps[0]["audio"])


def _print_audio(facts: dict) -> None:
    """The sound's own plan: length, channels, rate, mix, level; the resampler's filter."""
    print(f"audio: {facts['frames']:,} frames x {facts['channels']} at {facts['sample_rate']:g} Hz -> "
          f"{facts['output_frames']:,} frames x {facts['output_channels']} at {facts['output_rate']:g} Hz")
    if facts["tail"]:
        print(f"  tail: kept ({facts['kept_frames']:,} frames before resampling, the last {facts['fade_frames']:,} "
              "faded out)")
    elif facts["fade_frames"]:
        print(f"  fade-out: the last {facts['fade_frames']:,} frames")
    print(f"  mix: {facts['mix']:g} wet, {1 - facts['mix']:g} dry")
    if facts["gain_db"]:
        print(f"  gain: {facts['gain_db']:+g} dB")
    if facts["peak_dbfs"] is not None:
        print(f"  peak: set to {facts['peak_dbfs']:g} dBFS (two passes)")
    print(f"  in blocks: {'yes' if facts['in_blocks'] else 'no (the kernels need the whole signal)'}")
    r = facts.get("resampling")
    if r:
        print(f"  resampling: {r['rate_in']} -> {r['rate_out']} Hz, up {r['up']}, down {r['down']}; "
              f"{r['window']} low-pass of {r['filter_taps']:,} taps ({r['taps_per_output']} per output)")
        print(f"    passband: 0-{r['passband_hz']:g} Hz, ripple {r['passband_ripple_db']:g} dB")
        print(f"    stopband: from {r['stopband_hz']:g} Hz, attenuated {r['stopband_attenuation_db']:g} dB or more")
    for note in facts.get("notes") or ():
        print(f"  note: {note}")
