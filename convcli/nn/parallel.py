"""Sharing one layer's work between threads: numpy's matrix products release the interpreter."""
from __future__ import annotations

import itertools
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

_POOL: ThreadPoolExecutor | None = None


def shared(run, length: int, threads: int) -> None:
    """Call ``run(lo, hi)`` over ``range(length)`` cut in ``threads`` parts, the first in this thread.

    The pool is made on first use and kept: a hand-over costs ~30 us, a new
    pool far more.
    """
    threads = max(1, min(threads, length))
    if threads == 1:
        run(0, length)
        return
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=threads - 1, thread_name_prefix="convcli-nn")
    cuts = [round(length * t / threads) for t in range(threads + 1)]
    futures = [_POOL.submit(run, cuts[t], cuts[t + 1]) for t in range(1, threads)]
    run(cuts[0], cuts[1])
    for future in futures:
        future.result()


class _Helper:
    """A thread that joins in the parts of each step it is handed, if it gets to them before the caller does."""

    def __init__(self) -> None:
        self.queue = queue.SimpleQueue()
        threading.Thread(target=self._loop, name="convcli-nn-helper", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self.queue.get()()


_HELPER: _Helper | None = None


def share(parts: list) -> None:
    """Run ``parts`` (independent callables) in this thread and a helper thread, each taking the next one left.

    The helper is woken first; whichever thread is free claims the next
    part, so when another job holds the second core this thread simply
    does the parts the helper did not get to, and waits only for a part the
    helper already started.  A step cut in more parts than threads balances
    itself.
    """
    global _HELPER
    if _HELPER is None:
        _HELPER = _Helper()
    count = len(parts)
    claim, finish = itertools.count().__next__, itertools.count(1).__next__  # atomic under the interpreter lock
    done, errors = threading.Event(), []

    def work():
        while (i := claim()) < count:
            try:
                parts[i]()
            except BaseException as exc:  # reported by the caller
                errors.append(exc)
            if finish() == count:
                done.set()
    _HELPER.queue.put(work)
    work()
    done.wait()
    if errors:
        raise errors[0]
