"""`convcli filter`: parse the flags, call the pipeline, report."""
from __future__ import annotations

import json
import sys
from typing import List, Optional

import typer

from . import app
from .report import guard

_MODES_HELP = (
    "Border mode: reflect (d c b|a b c d|c b a, default), symmetric (c b a|a b c d|d c b), "
    "replicate (a a a|a b c d|d d d), circular (b c d|a b c d|a b c), zeros, constant:V. "
    "Aliases: mirror, nearest, edge, wrap, ... (see the README)."
)


@app.command("filter")
@guard
def filter_command(
    inputs: List[str] = typer.Argument(
        ..., metavar="INPUT",
        help="Input files or folders ('-' for stdin). Several inputs or a folder run as a batch into the -o folder.",
    ),
    kernel: List[str] = typer.Option(
        ..., "-k", "--kernel", metavar="SPEC",
        help="Kernel: a name (sobel, gaussian:sigma=2, ...), a kernel file, or an inline matrix "
        "such as '[[1,0,-1],[2,0,-2],[1,0,-1]]'. Repeat to apply several in order.",
    ),
    output: Optional[str] = typer.Option(
        None, "-o", "--output", metavar="OUTPUT", help="Output file; in batch mode an output folder (mirrors the inputs)."
    ),
    stride: str = typer.Option("1", "--stride", metavar="S", help="Step between output samples: N or one per axis (2,1)."),
    padding: str = typer.Option("same", "--padding", metavar="P", help="same (TensorFlow rule) | valid | full | N | N,M."),
    pad_mode: str = typer.Option("reflect", "--pad-mode", metavar="MODE", help=_MODES_HELP),
    dilation: str = typer.Option("1", "--dilation", metavar="D", help="Spacing between kernel taps: N or one per axis."),
    convolve: bool = typer.Option(
        False, "--convolve",
        help="Flip the kernel (mathematical convolution). Without it convcli computes "
        "cross-correlation: the kernel is laid over the samples as written, as in PyTorch.",
    ),
    method: str = typer.Option("auto", "--method", metavar="METHOD", help="auto | direct | separable | fft (all agree)."),
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
    jobs: Optional[int] = typer.Option(None, "-j", "--jobs", metavar="N", help="Worker processes for a batch (default: the number of cores)."),
    suffix: Optional[str] = typer.Option(
        None, "--suffix", metavar="TEXT", help="Batch: write each output next to its input with this suffix (photo_edges.png)."
    ),
    out_format: Optional[str] = typer.Option(
        None, "--format", metavar="FMT", help="Output format (png, tiff, wav, npy, ...); in a batch it changes every output's extension."
    ),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Batch: skip inputs whose output exists (resume a run)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar and no summary unless something failed."),
) -> None:
    """Filter a signal, image or volume with one or more kernels.

    The default operation is cross-correlation (no kernel flip), as in PyTorch
    and CNNs; --convolve flips the kernel. Stride applies once, at the last
    kernel of a chain; padding, border mode and dilation apply to every kernel.
    """
    from .. import batch
    from ..errors import UsageError
    from ..filtering import FilterOptions, filter_file, filter_job, plan_chain, resolve_kernels

    options = FilterOptions(
        kernels=tuple(kernel), stride=stride, padding=padding, pad_mode=pad_mode, dilation=dilation,
        convolve=convolve, method=method, precision=precision, normalize=normalize, out_format=out_format,
    )
    if batch.is_batch(inputs, output):
        if explain:
            raise UsageError("--explain takes one input", subject="--explain")
        if jobs is not None and jobs < 1:
            raise UsageError(f"must be at least 1, got {jobs}", subject="-j/--jobs")
        from .batch_report import default_workers, run_batch

        plan = batch.plan(
            inputs, output=output, suffix=suffix, accept=lambda p: batch.media_format(p) is not None,
            extension=batch.extension_for(out_format) if out_format else None,
        )
        code = run_batch(plan, filter_job, options, workers=jobs or default_workers(), skip_existing=skip_existing,
                         quiet=quiet, as_json=as_json, verbose=verbose)
        raise typer.Exit(code)
    input = inputs[0]
    if explain:
        from .. import io

        signal = io.read(input)
        steps = plan_chain(signal, resolve_kernels(options, signal), options)
        _print_explain(steps, as_json)
        return
    if output is None:
        raise UsageError("no output given; name one with -o OUTPUT", subject="-o/--output")
    report = filter_file(input, output, options)
    if as_json:
        print(json.dumps(report.as_dict()))
    if verbose:
        for step in report.kernels:
            sys.stderr.write(
                f"convcli: {step['kernel'].get('spec', '?')}: {' '.join(map(str, step['input_shape']))} -> "
                f"{' '.join(map(str, step['output_shape']))}, method {step['why']}\n"
            )
        sys.stderr.write(f"convcli: {report.input} -> {report.output} in {report.seconds:.3f} s\n")


def _print_explain(steps: list[dict], as_json: bool) -> None:
    if as_json:
        print(json.dumps(steps))
        return
    for i, step in enumerate(steps, 1):
        k = step["kernel"]
        print(f"kernel {i}: {k.get('spec', '?')}")
        for key in ("shape", "sum", "separable", "rank"):
            if key in k:
                print(f"  {key}: {k[key]}")
        for axis, (before, after) in enumerate(step["padding"]):
            print(f"  padding axis {axis}: {before} before, {after} after")
        print(f"  input shape: {tuple(step['input_shape'])}")
        print(f"  output shape: {tuple(step['output_shape'])}")
        print(f"  method (auto): {step['why']}")
