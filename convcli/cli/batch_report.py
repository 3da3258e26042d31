"""Reporting a batch run: progress bar, one line per failure, JSON lines, summary, exit code."""
from __future__ import annotations

import json
import sys
from typing import Callable

from ..errors import EXIT_FAILED, EXIT_OK
from .report import error_line


def run_batch(
    plan,
    work: Callable,
    options,
    runs,
    *,
    quiet: bool = False,
    as_json: bool = False,
    json_of: Callable[[dict], dict] = lambda record: record,
    verbose: bool = False,
    on_ok: Callable[[dict], None] | None = None,
    ok_on_stdout: bool = False,
) -> int:
    """Run a planned batch (``runs``: its BatchOptions) and report it; return the exit code (0 all ok, 1 any failure).

    Records are reported in the plan's order (arguments, then each folder's
    sorted walk), each as soon as every earlier one is: workers finish in any
    order, a listing must not.  With ``as_json`` every record (ok, failed or
    skipped) is one JSON line, ``json_of(record)``; ``ok_on_stdout`` says
    ``on_ok`` prints there (a table).  With ``runs.fail_fast``
    the run stops at the first failure (an input refused while planning
    counts), and the summary says so.
    """
    from ..pipeline import batch

    if verbose:
        for path, why in plan.ignored:
            sys.stderr.write(f"convcli: skipped {printable(path)}: {why}\n")
    total = len(plan.jobs) + len(plan.refused)
    progress = _Progress(total, enabled=not quiet and _is_terminal(sys.stderr))

    # Lines on stderr go above the bar by themselves (rich redirects stderr); stdout on the same
    # terminal does not, so the bar steps aside while a result is printed there.
    stdout_shared = _is_terminal(sys.stdout)

    def report(record: dict) -> None:
        if stdout_shared and (as_json or (ok_on_stdout and record.get("status") == "ok")):
            with progress.paused():
                _report(record)
        else:
            _report(record)

    def _report(record: dict) -> None:
        if as_json:
            sys.stdout.write(json.dumps(json_of(record)) + "\n")
            sys.stdout.flush()
        if record.get("status") == "failed":
            error_line(record.get("error") or f"{record.get('input')}: failed")
        elif record.get("status") == "ok" and on_ok is not None:
            on_ok(record)

    in_order = InOrder(plan.order, report)

    def on_record(record: dict) -> None:
        if record.get("status") == "failed":
            progress.failed += 1
        progress.advance()
        in_order.add(record)

    for record in plan.refused:
        on_record(record)
    jobs = [] if runs.fail_fast and plan.refused else plan.jobs
    try:
        summary = batch.run(jobs, work, options, runs, on_record=on_record)
    finally:
        progress.close()
        in_order.flush()  # a stopped run (--fail-fast, Ctrl-C): what did finish, still in order
    summary.failed += len(plan.refused)
    summary.stopped = summary.stopped or (runs.fail_fast and bool(plan.refused))
    if not quiet or summary.failed:
        left = total - summary.total
        stopped = f"; stopped at the first failure (--fail-fast), {left} not done" if summary.stopped else ""
        ignored = f", {len(plan.ignored)} left out (-v says why)" if plan.ignored and not verbose else ""
        sys.stderr.write(
            f"convcli: {summary.done} done, {summary.failed} failed, {summary.skipped} skipped "
            f"(output exists){ignored} in {summary.seconds:.1f} s{stopped}\n"
            if summary.skipped else
            f"convcli: {summary.done} done, {summary.failed} failed{ignored} in {summary.seconds:.1f} s{stopped}\n"
        )
    if total == 0 and not quiet:
        sys.stderr.write("convcli: no media files found in the inputs\n")
    return EXIT_FAILED if summary.failed else EXIT_OK


def batch_scheduler(scheduler: str | None, jobs: int | None) -> str | None:
    """The Dask scheduler a batch runs on: ``--scheduler`` (or DASK_SCHEDULER_ADDRESS), unless ``-j`` says here.

    ``-j`` counts this machine's processes; with an explicit ``--scheduler``
    the cluster's workers run the files, so the two together are refused.
    Given with the address only in the environment, ``-j`` keeps the batch
    on this machine.
    """
    import os

    from ..errors import UsageError

    if not scheduler:
        return None
    if jobs is None:
        return scheduler
    if scheduler != os.environ.get("DASK_SCHEDULER_ADDRESS"):
        raise UsageError("counts this machine's worker processes; with --scheduler the cluster's workers run the "
                         "files (their number is set by 'dask worker --nworkers/--nthreads')", subject="-j/--jobs")
    return None


def failure_line(exc, input: str) -> str:
    """The one-line message of a failed input, as the error line says it (without ``convcli: error:``)."""
    from .report import cli_subject

    line = cli_subject(exc).line() if exc.subject else f"{input}: {exc.message}"
    return " ".join(line.split())


class InOrder:
    """Hands records to ``report`` in the plan's order, holding back each one until all earlier ones came."""

    def __init__(self, order: list[str], report: Callable[[dict], None]) -> None:
        from collections import deque

        self._order = deque(order)
        self._waiting: dict[str, list[dict]] = {}
        self._report = report

    def add(self, record: dict) -> None:
        self._waiting.setdefault(record.get("input"), []).append(record)
        while self._order and self._waiting.get(self._order[0]):
            self._report(self._waiting[self._order.popleft()].pop(0))

    def flush(self) -> None:
        """Report what is still held (the run stopped before some earlier inputs finished), in order."""
        while self._order:
            for record in self._waiting.pop(self._order.popleft(), []):
                self._report(record)
        for records in self._waiting.values():
            for record in records:
                self._report(record)
        self._waiting.clear()


def printable(path: str) -> str:
    """A path as one line of text: quoted and escaped if it holds a newline or other control character."""
    text = str(path)
    if text.isprintable():
        return text
    return json.dumps(text)


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _Progress:
    """A rich progress bar on stderr: files done/total, files per second, ETA, failures.

    Counting a file costs an addition; the bar is told the counts at most
    :data:`REDRAWS_PER_SECOND` times a second and redraws itself as often.
    Telling rich of every file cost 130 us each (its speed estimate sums up
    to 1000 samples a call): a core's worth on a batch of small files.
    """

    REDRAWS_PER_SECOND = 4

    def __init__(self, total: int, enabled: bool) -> None:
        import time

        self.done = 0
        self.failed = 0
        self._bar = None
        self._clock = time.monotonic
        self._start = self._clock()
        self._next = 0.0
        if not enabled or total < 2:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("[bold]convcli"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"), TimeRemainingColumn(), TextColumn("{task.fields[failures]}"),
            # stderr writes (failure lines) are shown above the bar; stdout stays pure data.
            console=Console(file=sys.stderr), transient=True, redirect_stdout=False,
            refresh_per_second=self.REDRAWS_PER_SECOND,
        )
        self._task = self._bar.add_task("files", total=total, rate="", failures="")
        self._bar.start()

    def advance(self) -> None:
        self.done += 1
        if self._bar is not None and self._clock() >= self._next:
            self._show()

    def _show(self) -> None:
        now = self._clock()
        self._next = now + 1 / self.REDRAWS_PER_SECOND
        speed = self.done / max(now - self._start, 1e-9)
        self._bar.update(self._task, completed=self.done, rate=f"{speed:.1f} files/s" if self.done else "",
                         failures=f"{self.failed} failed" if self.failed else "")

    def paused(self):
        """A block whose output goes above the bar (stdout's lines too, on the same terminal), never glued to it."""
        import contextlib

        return contextlib.nullcontext() if self._bar is None else _Paused(self._bar)

    def close(self) -> None:
        if self._bar is not None:
            self._show()
            self._bar.stop()
            self._bar = None  # later lines (records held back for order) print without it


class _Paused:
    """The bar taken off the terminal while lines are written, then drawn again below them.

    The bar lives on stderr; a table or a JSON line on stdout (the same
    terminal) written while it is shown would land after the bar's line and
    leave it there, stale, glued to the first file name.
    """

    def __init__(self, bar) -> None:
        self._bar = bar

    def __enter__(self):
        self._bar.stop()  # transient: the bar's line is erased
        return self

    def __exit__(self, *exc):
        try:
            sys.stdout.flush()
        except (OSError, ValueError):
            pass
        self._bar.start()
        return False
