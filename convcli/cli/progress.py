"""A progress bar for one long file: shown on a terminal once the work has taken a second."""
from __future__ import annotations

import sys
import threading
import time


class FileProgress:
    """``progress(done, added)`` for :func:`convcli.pipeline.filter.filter_file`, drawn on stderr.

    Nothing is drawn for a file done within :data:`DELAY` seconds (most are):
    then a bar of the engine's units done (bands, planes, chunks), their
    total so far and an ETA, redrawn at most :data:`REDRAWS_PER_SECOND` times
    a second, erased when the file is done.  Called from the engine's threads.
    """

    DELAY = 1.0
    REDRAWS_PER_SECOND = 4

    def __init__(self, label: str, enabled: bool) -> None:
        self.done = 0
        self.total = 0
        self._label = label
        self._enabled = enabled
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._next = self._start + self.DELAY
        self._bar = None

    def __call__(self, done: int, added: int) -> None:
        with self._lock:
            self.done += done
            self.total += added
            now = time.monotonic()
            if not self._enabled or now < self._next:
                return
            self._next = now + 1 / self.REDRAWS_PER_SECOND
            if self._bar is None:
                self._open()
            self._bar.update(self._task, completed=self.done, total=max(self.total, 1))

    def _open(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("[bold]convcli"), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("blocks ETA"), TimeRemainingColumn(),
            console=Console(file=sys.stderr), transient=True, redirect_stdout=False, redirect_stderr=False,
            refresh_per_second=self.REDRAWS_PER_SECOND,
        )
        self._task = self._bar.add_task(self._label, total=max(self.total, 1), completed=self.done)
        self._bar.start()

    def close(self) -> None:
        with self._lock:
            self._enabled = False
            if self._bar is not None:
                self._bar.update(self._task, completed=self.done, total=max(self.total, 1))  # the last count
                self._bar.stop()
                self._bar = None


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False
