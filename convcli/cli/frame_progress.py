"""Progress of one long file on a terminal: frames done of the expected, frames per second, time left."""
from __future__ import annotations

import sys
import time

# A run shorter than this shows no bar: it would only flicker.
DELAY = 0.5


class FrameProgress:
    """A rich progress bar on stderr, shown only on a terminal, from the first update after :data:`DELAY` seconds.

    ``update(done, expected)`` is the pipeline's progress callback; with
    ``expected`` None the bar counts without a total.  The bar is transient:
    it leaves nothing in the scrollback, so the report lines follow the
    command directly.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and _is_terminal(sys.stderr)
        self._bar = None
        self._task = None
        self._start = time.monotonic()

    def close(self) -> None:
        """Take the bar off the terminal (it is transient: nothing stays in the scrollback)."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def update(self, done: int, expected: int | None) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            if time.monotonic() - self._start < DELAY:
                return
            self._open(expected)
        fps = done / max(time.monotonic() - self._start, 1e-9)
        self._bar.update(self._task, completed=done, total=expected, fps=f"{fps:.1f} fps")

    def _open(self, expected: int | None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._bar = Progress(
            TextColumn("[bold]convcli"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
            TextColumn("{task.fields[fps]}"), TextColumn("ETA"),
            TimeRemainingColumn(), console=Console(file=sys.stderr), transient=True, redirect_stdout=False)
        self._task = self._bar.add_task("frames", total=expected, fps="")
        self._bar.start()


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
