"""Batch runs: walk inputs, map them to outputs, run one pure function per file.

The work for one file is a picklable module-level function
``work(source, dest, options) -> dict``; this module plans the jobs and runs
them, in this process (one worker), in worker processes
(:func:`convcli.parallel.run_processes`, a bounded number of jobs in flight,
so memory stays flat whatever the number of files) or on a Dask cluster
(:func:`convcli.pipeline.cluster.run_files`, whose workers read and write
the files themselves).  Nothing here prints:
records are reported through a callback as they finish.
"""
from __future__ import annotations

import os
import signal
import stat
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..errors import ConvcliError, Interrupted, OutputError, Terminated, UsageError
from ..io.files import TEMP_MARKER  # part of every temporary file name the atomic writer makes
from .options import BatchOptions


@dataclass(frozen=True)
class Job:
    """One input and where its output goes (``dest`` None for commands without output files)."""

    source: str
    dest: str | None


@dataclass
class BatchPlan:
    jobs: list[Job] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)  # (path, why): not media, link out of tree, ...
    refused: list[dict] = field(default_factory=list)  # records of inputs refused before any work
    order: list[str] = field(default_factory=list)  # the input of every job and refusal, in argument then walk order


@dataclass
class Summary:
    done: int = 0
    failed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    stopped: bool = False  # --fail-fast ended the run at the first failure

    @property
    def total(self) -> int:
        return self.done + self.failed + self.skipped


# --------------------------------------------------------------------------- planning
def is_batch(inputs: list[str], output: str | None) -> bool:
    """Batch mode: several inputs, a folder, or an output that is an existing folder (a Zarr store is one input)."""
    from ..io.zarr import is_zarr, names_zarr

    return len(inputs) > 1 or any(os.path.isdir(p) and not is_zarr(p) for p in inputs if p != "-") or (
        output is not None and output != "-" and not names_zarr(output)
        and (os.path.isdir(output) or output.endswith(os.sep))
    )


def plan(
    inputs: Iterable[str],
    *,
    output: str | None,
    suffix: str | None = None,
    extension: str | None = None,
    accept: Callable[[str], bool],
    needs_output: bool = True,
) -> BatchPlan:
    """Walk ``inputs`` and pair every accepted file with its output path.

    Folders are walked recursively and mirrored below ``output``; a file given
    directly lands at ``output/<name>``.  ``suffix`` writes next to each input
    instead (``photo.png`` -> ``photo_edges.png``).  ``extension`` (".png")
    replaces every output's extension.  ``accept(path)`` says whether a file
    is media this command can read; others are ignored (and listed).
    """
    if needs_output and output is None and suffix is None:
        raise UsageError(
            "several inputs or a folder need an output folder (-o OUT/) or, to write next to each "
            "input, an explicit --suffix; convcli never writes into the input tree by itself",
            subject="-o/--output",
        )
    out_root = os.path.realpath(output) if output else None
    if out_root is not None:
        _check_folder_name(output, out_root)
    inputs = list(inputs)
    if out_root is not None:
        _check_output_folder(inputs, output, out_root)
    result = BatchPlan()
    claimed: dict[str, str] = {}
    walked = []
    for item in inputs:
        if item == "-":
            raise UsageError("'-' (stdin) cannot be mixed with other inputs or folders", subject="-")
        if os.path.isdir(item):
            walked.append(_walk(item, out_root, result))
        elif os.path.lexists(item):
            walked.append([(item, os.path.basename(item))])
        else:
            walked.append([(item, None)])
    # Every input file, so that no output may land on any of them (not only its own).
    sources = {os.path.realpath(path) for pairs in walked for path, relative in pairs if relative is not None}
    own_outputs = _own_outputs(walked, output, suffix, extension) if needs_output else set()
    for pairs in walked:
        for path, relative in pairs:
            if relative is None:
                result.order.append(path)
                result.refused.append(_refusal(path, "no such file or folder"))
                continue
            if os.path.realpath(path) in own_outputs:
                result.ignored.append((path, "an output of this command (another input's --suffix name)"))
                continue
            if not _regular(path):
                result.ignored.append((path, "not a regular file"))
                continue
            if not accept(path):
                result.ignored.append((path, "not a media file convcli reads"))
                continue
            dest = None
            if needs_output:
                dest = _destination(path, relative, output, suffix, extension)
                problem = _clash(path, dest, claimed, sources - own_outputs)
                result.order.append(path)
                if problem:
                    result.refused.append(_refusal(path, problem, dest))
                    continue
                claimed[os.path.realpath(dest)] = path
            else:
                result.order.append(path)
            result.jobs.append(Job(path, dest))
    return result


def _own_outputs(walked: list, output: str | None, suffix: str | None, extension: str | None) -> set[str]:
    """Inputs that are the ``--suffix`` outputs of other inputs: a rerun must not filter its own results again.

    ``photo.jpg`` with ``--suffix _soft`` writes ``photo_soft.jpg`` beside
    it; on the next run that file is in the folder too.  Taking it as an input
    would make ``photo_soft_soft.jpg`` and refuse ``photo.jpg`` (its output
    would overwrite an input).  With ``-o`` outputs go elsewhere: nothing to
    leave out.
    """
    if output is not None or not suffix:
        return set()
    files = [(path, relative) for pairs in walked for path, relative in pairs if relative is not None]
    present = {os.path.realpath(path) for path, _ in files}
    made = {os.path.realpath(_destination(path, relative, None, suffix, extension)) for path, relative in files}
    return present & made


def _check_folder_name(output: str, out_root: str) -> None:
    """Several outputs need a folder: refuse a name that is, or reads as, one file; nothing is created.

    A folder is an existing one, a name ending in ``/``, or a new name
    without a media extension (created).  ``-o single.png`` would otherwise
    become a folder called ``single.png``.
    """
    from ..io.formats import from_extension

    advice = "several inputs or a folder write several outputs; name a folder (out/, ending in /), or give one input"
    if os.path.exists(out_root) and not os.path.isdir(out_root):
        raise UsageError(f"is a file; {advice}", subject=output)
    if not os.path.exists(out_root) and not output.endswith(os.sep) and from_extension(output) is not None:
        raise UsageError(f"names a file (a media extension); {advice}", subject=output)


def _check_output_folder(inputs: list[str], output: str, out_root: str) -> None:
    """Refuse an output folder that is an input folder or holds one: outputs could replace inputs.

    An output folder *inside* an input folder is fine: it is left out of the walk.
    """
    for item in inputs:
        if item == "-" or not os.path.isdir(item):
            continue
        real = os.path.realpath(item)
        if real == out_root:
            raise UsageError(
                f"is also the input folder {item}; the results would replace the inputs "
                "(choose another folder, or --suffix to write beside each input)",
                subject=output,
            )
        if _inside(real, out_root):
            raise UsageError(
                f"holds the input folder {item}; mirrored outputs could land on input files "
                "(choose an output folder outside it)",
                subject=output,
            )


def _walk(root: str, out_root: str | None, result: BatchPlan) -> list[tuple[str, str]]:
    real_root = os.path.realpath(root)
    pairs = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        # Never read our own output back, wherever it sits in the tree.
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(folder, d)) != out_root)
        for name in sorted(files):
            path = os.path.join(folder, name)
            if TEMP_MARKER in name:
                continue
            if os.path.islink(path) and not _inside(os.path.realpath(path), real_root):
                result.ignored.append((path, "symbolic link leaving the input folder"))
                continue
            pairs.append((path, os.path.relpath(path, root)))
    return pairs


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _destination(path: str, relative: str, output: str | None, suffix: str | None, extension: str | None) -> str:
    from ..io.files import file_suffix

    ext = file_suffix(path)
    stem = relative[: len(relative) - len(ext)] if ext else relative
    new_ext = extension if extension is not None else ext
    if output is None:
        folder = os.path.dirname(path)
        return os.path.join(folder, os.path.basename(stem) + (suffix or "") + new_ext)
    return os.path.join(output, stem + (suffix or "") + new_ext)


def _clash(path: str, dest: str, claimed: dict[str, str], sources: set[str]) -> str | None:
    real_dest = os.path.realpath(dest)
    if real_dest == os.path.realpath(path):
        return "its output would overwrite the input; choose another -o folder or a --suffix"
    if real_dest in sources:
        return f"its output {dest} would overwrite another input; choose another -o folder or a --suffix"
    if real_dest in claimed:
        return f"has the same output name as {claimed[real_dest]} ({dest}); rename one of them"
    return None


def _refusal(path: str, error: str, dest: str | None = None) -> dict:
    return _failure(Job(path, dest), f"{path}: {error}")


def media_format(path: str) -> str | None:
    """The media format of a file: what its first bytes announce, else what its name claims.

    None means "not media" (``notes.txt``, ``Thumbs.db``): such files are
    skipped.  A file whose name claims a media format but whose bytes do not
    (an empty or corrupt ``photo.png``) counts as media, so that reading it
    reports the problem instead of skipping it silently.  Only regular files
    are opened (a FIFO would block).
    """
    from ..io.detect import sniff
    from ..io.formats import from_extension

    if not _regular(path):
        return None
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return "unreadable"  # let the work report the real problem for this file
    fmt = sniff(head)
    if fmt == "gzip" and not path.lower().endswith(".nii.gz"):
        fmt = None
    return fmt or from_extension(path)


def extension_for(fmt_name: str) -> str:
    """The file extension for a --format name (``png`` -> ``.png``, ``nii.gz`` -> ``.nii.gz``)."""
    from ..io import formats

    return formats.get(formats.format_from_name(fmt_name)).extension


# --------------------------------------------------------------------------- running
def run_one(work: Callable, job: Job, options) -> dict:
    """Run ``work`` on one job and always return a record; failures become status 'failed'."""
    start = time.perf_counter()
    try:
        if job.dest is not None and job.dest != "-":
            _make_folder(job.dest)
        record = {"input": job.source, "output": job.dest, "status": "ok"}
        record.update(work(job.source, job.dest, options))
    except ConvcliError as exc:
        subject = exc.subject or job.source
        record = _failure(job, f"{subject}: {exc.message}")
    except MemoryError:
        record = _failure(job, f"{job.source}: out of memory")
    except OSError as exc:  # the user's environment (a read-only or full file system), not a bug
        record = _failure(job, f"{exc.filename or job.source}: {exc.strerror or exc}")
    except Exception as exc:  # a bug must not stop the other files; name it for a report
        record = _failure(job, f"{job.source}: internal error: {type(exc).__name__}: {exc}")
    record["seconds"] = round(time.perf_counter() - start, 6)
    return record


def _make_folder(dest: str) -> None:
    folder = os.path.dirname(dest) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create its folder {folder}: {exc.strerror or exc}", subject=dest) from None


def _failure(job: Job, error: str) -> dict:
    return {"input": job.source, "output": job.dest, "status": "failed", "seconds": 0.0, "error": error}


class _FailFast(Exception):
    """Raised by ``finish`` at the first failure of a --fail-fast run."""


@dataclass(frozen=True)
class _Task:
    """One job as a picklable callable for a worker process."""

    work: Callable
    options: object

    def __call__(self, job: Job) -> dict:
        return run_one(self.work, job, self.options)


@dataclass(frozen=True)
class _RemoteTask:
    """One job for a cluster's worker, whose working folder is not ours: ``(job, job with absolute paths)``.

    The record names the files as the user did, like a local run's.
    """

    work: Callable
    options: object

    def __call__(self, jobs: tuple[Job, Job]) -> dict:
        job, there = jobs
        record = _renamed(run_one(self.work, there, self.options), {there.source: job.source, there.dest: job.dest})
        error = record.get("error")
        if error and error.startswith(there.source + ":"):
            record["error"] = job.source + error[len(there.source):]
        return record


def _renamed(value, names: dict):
    """``value`` with every string that is a key of ``names`` replaced, in dicts and lists (a video's frames)."""
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, dict):
        return {key: _renamed(item, names) for key, item in value.items()}
    if isinstance(value, list):
        return [_renamed(item, names) for item in value]
    return value


def _absolute(job: Job) -> Job:
    return Job(os.path.abspath(job.source), job.dest and os.path.abspath(job.dest))


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def run(
    jobs: list[Job],
    work: Callable,
    options,
    batch: BatchOptions = BatchOptions(),
    *,
    on_record: Callable[[dict], None] = lambda record: None,
) -> Summary:
    """Run every job, reporting each record through ``on_record`` as it finishes.

    The jobs run in this process, in ``batch.workers`` worker processes, or,
    with ``batch.scheduler``, as tasks on that Dask cluster (:mod:`.cluster`:
    small files share a task; a file that keeps killing workers is a failed
    record).

    With ``batch.fail_fast``, the first failure cancels the jobs not yet
    started and stops the workers (their temporaries removed);
    ``Summary.stopped`` is then True.  Raises :class:`Interrupted` (with the
    summary so far in its message, and the signal in ``signum``) on
    SIGINT/SIGTERM after stopping the workers and removing their temporaries.
    """
    summary = Summary()
    start = time.perf_counter()

    def finish(record: dict) -> None:
        status = record.get("status", "failed")
        if status == "ok":
            summary.done += 1
        elif status == "skipped":
            summary.skipped += 1
        else:
            summary.failed += 1
        on_record(record)
        if batch.fail_fast and status == "failed":
            raise _FailFast

    def lost(job: Job, why: Exception) -> None:
        remove_temporaries(job.dest)  # a killed worker may have been writing it
        finish(_failure(job, f"{job.source}: {why}"))

    with _interrupts_raised():
        try:
            pending = []
            for job in jobs:
                if batch.skip_existing and job.dest is not None and os.path.exists(job.dest):
                    finish({"input": job.source, "output": job.dest, "status": "skipped", "seconds": 0.0,
                            "error": None})
                else:
                    pending.append(job)
            if batch.scheduler is not None and pending:
                from .cluster import run_files

                try:
                    run_files(batch.scheduler, _RemoteTask(work, options), [(job, _absolute(job)) for job in pending],
                              size_of=lambda jobs: _size(jobs[1].source),
                              name_of=lambda jobs: os.path.basename(jobs[0].source),
                              on_result=lambda jobs, record: finish(record),
                              on_lost=lambda jobs, why: lost(jobs[0], why))
                finally:
                    # Nobody hears when a worker dies mid-write and its file runs elsewhere.
                    remove_temporaries_of([job.dest for job in pending])
            elif batch.workers <= 1 or len(pending) <= 1:
                for job in pending:
                    finish(run_one(work, job, options))
            else:
                from ..parallel import run_processes

                run_processes(_Task(work, options), pending, workers=batch.workers,
                              on_result=lambda job, record: finish(record), on_lost=lost,
                              on_stopped=lambda job: remove_temporaries(job.dest))
        except _FailFast:
            summary.stopped = True
        except KeyboardInterrupt as exc:
            summary.seconds = time.perf_counter() - start
            raise Interrupted(
                f"interrupted: {summary.done} done, {summary.failed} failed, "
                f"{len(jobs) - summary.total} not started or stopped",
                signum=signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT,
            ) from None
    summary.seconds = time.perf_counter() - start
    return summary


def _raise_terminated(signum, frame):
    raise Terminated


def remove_temporaries(dest: str | None) -> None:
    """Delete temporary files the atomic writer may have left for ``dest``."""
    if not dest or dest == "-":
        return
    from ..io.files import temp_prefix

    folder, name = os.path.split(os.path.abspath(dest))
    prefix = temp_prefix(name)
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        if entry.startswith(prefix) and TEMP_MARKER in entry:
            try:
                os.unlink(os.path.join(folder, entry))
            except OSError:
                pass


def remove_temporaries_of(dests: list[str | None]) -> None:
    """Delete the atomic writer's temporary files for any of ``dests``: one listing per folder, not per file."""
    from ..io.files import temp_prefix

    wanted: dict[str, set[str]] = {}
    for dest in dests:
        if dest and dest != "-":
            folder, name = os.path.split(os.path.abspath(dest))
            wanted.setdefault(folder, set()).add(temp_prefix(name))
    for folder, prefixes in wanted.items():
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            marker = entry.rfind(TEMP_MARKER)
            if marker < 0:
                continue
            head = entry[:marker]  # .<name>.<pid>-<random>: the random part has no dot
            if head[: head.rfind(".") + 1] in prefixes:
                try:
                    os.unlink(os.path.join(folder, entry))
                except OSError:
                    pass


class _interrupts_raised:
    """Within the block, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt) as SIGINT raises its own."""

    def __enter__(self):
        try:
            self._previous = signal.signal(signal.SIGTERM, _raise_terminated)
        except ValueError:  # not the main thread
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False

