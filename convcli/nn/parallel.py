"""Sharing one layer's work between threads: numpy's matrix products release the interpreter."""
from __future__ import annotations

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


def run_parts(parts: list) -> None:
    """Call every part, the first in this thread and the others in the pool's threads, and wait for all."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, len(parts) - 1), thread_name_prefix="convcli-nn")
    futures = [_POOL.submit(part) for part in parts[1:]]
    parts[0]()
    for future in futures:
        future.result()
