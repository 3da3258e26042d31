"""A Dask distributed cluster, reached by its scheduler's address: where chunked work runs off this machine.

The workers must see the files at the same paths (a shared file system or
object store): they read the inputs and write the outputs themselves; only
task descriptions and small results travel through the scheduler.
"""
from __future__ import annotations

import contextlib

from ..errors import DataError, UsageError

EXTRA = "scale"
CONNECT_SECONDS = 10


@contextlib.contextmanager
def client_for(address: str):
    """A ``distributed.Client`` connected to the scheduler at ``address``, closed on the way out."""
    try:
        from distributed import Client
    except ImportError:
        raise UsageError(f"a Dask cluster needs the '{EXTRA}' extra: pip install 'convcli[{EXTRA}]'",
                         subject="--scheduler") from None
    try:
        client = Client(address, timeout=CONNECT_SECONDS)
    except (OSError, TimeoutError, ValueError) as exc:
        raise DataError(f"cannot reach the Dask scheduler at {address} ({exc})", subject="--scheduler") from None
    try:
        yield client
    finally:
        client.close()


GROUP_BYTES = 1 << 20  # small files share a task until their inputs add up to this
GROUP_FILES = 16  # ... or this many files
TASKS_PER_THREAD = 4  # ... and every worker thread gets a few tasks, for the slowest not to end the run alone


def run_files(address: str, func, items: list, *, size_of, name_of, on_result, on_lost) -> None:
    """``func(item)`` for every item, as Dask tasks on the cluster at ``address``; small files share a task.

    ``on_result(item, result)`` hears of each item as its task comes back
    (tasks finish in any order).  A task that killed a worker each time it
    ran (Dask's ``distributed.scheduler.allowed-failures``) is run again one
    item per task, so that only the item that kills workers is lost:
    ``on_lost(item, why)``.  A worker that dies once costs nothing: the
    scheduler runs its tasks elsewhere.  ``size_of(item)`` (bytes, or None)
    groups the items (:func:`groups`); ``name_of(item)`` names a task on the
    dashboard.  An exception from a callback, or an interrupt, cancels the
    tasks not finished and is raised again; tasks already running finish on
    their workers (whatever they write is written atomically).
    """
    from distributed import as_completed

    with client_for(address) as client:
        futures: dict = {}
        running = as_completed()

        def submit(group: list) -> None:
            future = client.submit(_run_group, func, group, pure=False, key=_key(name_of(group[0])))
            futures[future] = group
            running.add(future)

        try:
            threads = sum(client.nthreads().values())
            for group in groups(items, [size_of(item) for item in items], threads):
                submit(group)
            for future in running:
                group = futures.pop(future)
                results, killed = _results(future, group)
                if killed is not None:  # one item per task, so that only the item that kills is lost
                    if len(group) > 1:
                        for item in group:
                            submit([item])
                    else:
                        on_lost(group[0], killed)
                    continue
                for item, result in zip(group, results):
                    on_result(item, result)
        finally:
            if futures:
                client.cancel(list(futures))


def groups(items: list, sizes: list[int | None], threads: int) -> list[list]:
    """The items cut into the groups that run as one task each, in order.

    A task costs the scheduler and the network a few milliseconds whatever
    it does; a tiny file takes less than that to filter, so small files go
    together (their sizes up to :data:`GROUP_BYTES`, at most
    :data:`GROUP_FILES`), a large file (or one of unknown size) is a task of
    its own, and a short batch is still spread over every worker thread.
    """
    most = max(1, min(GROUP_FILES, len(items) // (TASKS_PER_THREAD * max(1, threads))))
    out: list[list] = []
    total = 0
    for item, size in zip(items, sizes):
        size = GROUP_BYTES if size is None else size
        if not out or total + size > GROUP_BYTES or len(out[-1]) >= most:
            out.append([])
            total = 0
        out[-1].append(item)
        total += size
    return out


class WorkerKilled(Exception):
    """A task killed every Dask worker that ran it (Dask's allowed failures)."""


def _run_group(func, group: list) -> list:
    return [func(item) for item in group]


def _key(name: str) -> str:
    import uuid

    return f"convcli-{name}-{uuid.uuid4().hex}"


def _results(future, group: list) -> tuple[list | None, WorkerKilled | None]:
    """The group's results, or why its task killed its workers; a lost scheduler or task ends the run."""
    from distributed import KilledWorker

    try:
        return future.result(), None
    except KilledWorker as exc:
        times = getattr(exc, "allowed_failures", 3) + 1
        return None, WorkerKilled(f"it killed the Dask worker each time it ran ({times} times: Dask's "
                                  "distributed.scheduler.allowed-failures)")
    except Exception as exc:  # the scheduler went away, or a worker cannot run the task (convcli missing?)
        raise DataError(f"the cluster lost the task of {len(group)} file(s) ({type(exc).__name__}: {exc})",
                        subject="--scheduler") from None


def absolute_kernels(specs: tuple[str, ...]) -> tuple[str, ...]:
    """The ``-k`` specs with each kernel file's path made absolute: the workers read it, from another folder.

    ``edge.txt`` becomes ``/home/me/edge.txt``, ``ir:hall.wav`` ``ir:/home/me/hall.wav``; names and
    inline matrices are kept as they are.
    """
    import os

    from ..kernels.resolve import file_of

    out = []
    for spec in specs:
        path = file_of(spec)
        if path is None or os.path.isabs(path):
            out.append(spec)
            continue
        head, _, _ = spec.strip().partition(":") if spec.strip().startswith(("ir:", "file:")) else ("", "", "")
        out.append((head + ":" if head else "") + os.path.abspath(path))
    return tuple(out)
