"""The one home of threads and processes: cores, the shared threads, BLAS, worker processes.

Everything in convcli that uses more than one core goes through here:

- :func:`cores` is the number of cores this process may run on;
- one pool of threads, made on first use and kept, runs the engine's bands,
  the network's shares, the PNG encoder's bands and the sample conversion
  (numpy, OpenCV and zlib release the interpreter while they compute).
  :func:`run_all` and :func:`map_ordered` hand it items; :func:`split`
  cuts a range between the caller and the pool; :func:`share` lets the
  caller and one pool thread claim parts as they get free.  Work that a
  pool thread asks to run in parallel runs in that thread: nested work
  never waits for the pool it occupies;
- every item runs with NaN and infinity treated as data (no floating-point
  warnings): they propagate to the outputs they touch and writers refuse
  them with a count, so numpy's warnings would only be noise;
- BLAS is held to one thread: convcli splits its work over the cores
  itself, and BLAS threads started for every small product fight those
  threads (3-5x slower when the cores are busy);
- :func:`run_processes` runs batch jobs in worker processes, a bounded
  number in flight, and stops them cleanly on an interrupt;
- :func:`ahead` and :func:`behind` run the ends of a stream (a video's
  decoder and encoder) in threads of their own beside the caller, with a
  bounded queue between each and the caller.
"""
from __future__ import annotations

import contextlib
import os
import threading

MAX_THREADS = 8  # beyond this a band is too small to pay for its hand-over
BLAS_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_POOL = None
_POOL_LOCK = threading.Lock()
_LOCAL = threading.local()  # .worker: this thread belongs to the pool


def cores() -> int:
    """The number of cores this process may run on (its affinity mask, else the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def thread_count() -> int:
    """How many threads the shared pool has: the cores, at most :data:`MAX_THREADS`."""
    return min(cores(), MAX_THREADS)


def _mark_worker() -> None:
    _LOCAL.worker = True


def in_worker() -> bool:
    """Whether this thread is one of the pool's (its parallel work then runs inline)."""
    return getattr(_LOCAL, "worker", False)


def _pool():
    global _POOL
    if _POOL is None:
        with _POOL_LOCK:
            if _POOL is None:
                from concurrent.futures import ThreadPoolExecutor

                _POOL = ThreadPoolExecutor(max_workers=thread_count(), thread_name_prefix="convcli",
                                           initializer=_mark_worker)
    return _POOL


def _as_data(work):
    """``work`` run with floating-point warnings off, as every item on every thread is."""
    import numpy as np

    def run(*args):
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            return work(*args)
    return run


def _inline(count: int, parallel: bool) -> bool:
    return not parallel or count <= 1 or thread_count() == 1 or in_worker()


def run_all(work, items, *, parallel: bool = True) -> None:
    """``work(item)`` for every item on the shared threads; an exception in any item is raised here.

    Runs in this thread when there is one thread or one item, when
    ``parallel`` is false (too little work to pay for a hand-over), or when
    this thread is itself one of the pool's.
    """
    map_ordered(work, items, parallel=parallel)


def map_ordered(work, items, *, parallel: bool = True) -> list:
    """``[work(item) for item in items]``, computed on the shared threads (see :func:`run_all`)."""
    items = list(items)
    run = _as_data(work)
    if _inline(len(items), parallel):
        return [run(item) for item in items]
    return list(_pool().map(run, items))


def split(run, length: int, parts: int) -> None:
    """``run(lo, hi)`` over ``range(length)`` cut in ``parts`` pieces, the first in this thread.

    For work the caller should share rather than hand off (a network layer:
    a hand-over costs ~30 us, so the caller computes too).
    """
    parts = max(1, min(parts, length, thread_count()))
    run = _as_data(run)
    if _inline(parts, True):
        run(0, length)
        return
    cuts = [round(length * t / parts) for t in range(parts + 1)]
    futures = [_pool().submit(run, cuts[t], cuts[t + 1]) for t in range(1, parts)]
    run(cuts[0], cuts[1])
    for future in futures:
        future.result()


def run_parts(parts: list) -> None:
    """Call every part (independent callables), the first in this thread, the others on the pool."""
    if _inline(len(parts), True):
        for part in parts:
            part()
        return
    futures = [_pool().submit(_as_data(part)) for part in parts[1:]]
    _as_data(parts[0])()
    for future in futures:
        future.result()


def share(parts: list) -> None:
    """Run ``parts`` (independent callables) in this thread and a pool thread, each taking the next one left.

    The pool thread is woken first; whichever thread is free claims the
    next part, so when another job holds the second core this thread simply
    does the parts the other did not get to, and waits only for a part
    already started.  A step cut in more parts than threads balances itself.
    """
    import itertools

    count = len(parts)
    if _inline(count, True):
        for part in parts:
            part()
        return
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
    _pool().submit(_as_data(work))
    _as_data(work)()
    done.wait()
    if errors:
        raise errors[0]


def background(target, name: str):
    """Start ``target()`` in a thread of its own beside the caller and return the thread.

    For a producer the caller consumes from while it works (the PNG band
    decoder's inflater): it must not wait in the pool's queue behind the
    very work that waits for it.
    """
    thread = threading.Thread(target=target, name=f"convcli-{name}", daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def floats_as_data():
    """In this thread, NaN and infinity are data: no floating-point warnings from numpy."""
    import numpy as np

    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        yield


# --------------------------------------------------------------------------- BLAS
def hold_blas_to_one_thread() -> None:
    """Ask BLAS for one thread in this process and the processes it starts, unless the user chose otherwise.

    Must run before numpy loads (BLAS reads its thread count once, when it
    loads); the commands call it before they import numpy.  An idle
    OpenBLAS thread also spins for about 100 ms of CPU after numpy loads,
    which a short run pays in wall time.
    """
    for name in BLAS_VARIABLES:
        os.environ.setdefault(name, "1")


def blas_single_threaded() -> bool:
    """Whether BLAS was asked for one thread (OpenBLAS reads OPENBLAS_NUM_THREADS, then OMP_NUM_THREADS)."""
    value = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    return value is not None and value.strip() == "1"


_CONTROLLER = None


@contextlib.contextmanager
def blas_limited():
    """Hold an already loaded BLAS to one thread inside the block (threadpoolctl); yield whether it could.

    For matrix products run on the shared threads: BLAS threads woken for
    every band's small product cost more than the product when the cores
    are busy, and two threads each starting BLAS threads oversubscribe them.
    Without a way to hold BLAS (the block gets False), a caller should run
    its products one after another and let BLAS spread each one.
    """
    global _CONTROLLER
    if thread_count() == 1:
        yield False
        return
    try:
        if _CONTROLLER is None:
            from threadpoolctl import ThreadpoolController

            _CONTROLLER = ThreadpoolController()
        limiter = _CONTROLLER.limit(limits=1, user_api="blas")
    except Exception:  # threadpoolctl missing, or a BLAS it cannot drive
        yield False
        return
    with limiter:
        yield True


# --------------------------------------------------------------------------- processes
class _Stop(BaseException):
    """Raised in a worker process by SIGTERM, to unwind (and clean up) the job it is running."""


_working = False


def _worker_init() -> None:
    import signal
    import warnings

    # Ctrl-C goes to the whole process group: the parent decides, workers
    # ignore it.  SIGTERM from the parent unwinds the job in progress (so an
    # atomic writer removes its temporary file), then ends the worker quietly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)
    # The processes already keep every core busy: BLAS threads in each would only fight.
    hold_blas_to_one_thread()
    # A file object caught half-open by that unwinding is closed by the
    # collector; under -W default it would print a ResourceWarning.
    warnings.simplefilter("ignore", ResourceWarning)


def _stop_worker(signum, frame):
    if _working:
        raise _Stop
    os._exit(1)


def _in_process(func, item):
    global _working
    _working = True
    try:
        return func(item)
    except _Stop:
        os._exit(1)
    finally:
        _working = False


def run_processes(func, items, *, workers: int, on_result, on_lost, on_stopped=lambda item: None) -> None:
    """``func(item)`` for every item in ``workers`` processes; ``on_result(item, result)`` as each finishes.

    At most twice ``workers`` items are in flight, so memory stays flat
    whatever the number of items.  ``func`` and the items must pickle.  A
    worker that dies (killed, out of memory) gives ``on_lost(item,
    exception)`` instead of a result.  Any exception from the callbacks or
    an interrupt stops the workers (SIGTERM, then SIGKILL), calls
    ``on_stopped(item)`` for every unfinished item, and is raised again.
    """
    import concurrent.futures as cf
    import multiprocessing

    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    _start_quiet_resource_tracker()
    executor = cf.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_worker_init)
    in_flight: dict = {}
    queue = iter(items)
    try:
        for item in queue:
            in_flight[executor.submit(_in_process, func, item)] = item
            if len(in_flight) >= 2 * workers:
                break
        while in_flight:
            done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
            for future in done:
                item = in_flight.pop(future)
                try:
                    result = future.result()
                except Exception as exc:  # the worker process died
                    on_lost(item, exc)
                else:
                    on_result(item, result)
                following = next(queue, None)
                if following is not None:
                    in_flight[executor.submit(_in_process, func, following)] = following
    except BaseException:
        _stop_workers(executor)
        for item in in_flight.values():
            on_stopped(item)
        raise
    executor.shutdown(wait=True)


def _start_quiet_resource_tracker() -> None:
    """Start multiprocessing's resource tracker with its stderr on /dev/null.

    After workers are stopped mid-batch it may warn that a semaphore it
    tracks was already released (a race inside multiprocessing, harmless);
    that is not for the user's terminal.  The tracker keeps the stderr it
    starts with.
    """
    from multiprocessing import resource_tracker

    try:
        saved = os.dup(2)
    except OSError:
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        resource_tracker.ensure_running()
    except OSError:
        pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _stop_workers(executor) -> None:
    import time

    processes = list(getattr(executor, "_processes", {}).values())
    executor.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()  # SIGTERM: the worker cleans up after itself
    deadline = time.monotonic() + 1.5
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(0.5)
    # Join the pool's manager thread: it sees the dead workers and closes the
    # queues, so their semaphores are released before the process exits.
    try:
        executor.shutdown(wait=True, cancel_futures=True)
    except Exception:  # a broken pool has nothing left to shut down
        pass


# --------------------------------------------------------------------------- stages of a stream
_END = object()
_WAIT = 0.1  # seconds between looks at a stop flag while a queue is full or empty


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Ahead:
    """The items of an iterable, produced up to ``depth`` ahead by a thread of its own (see :func:`ahead`)."""

    def __init__(self, items, depth: int, name: str) -> None:
        import queue

        self._items = iter(items)
        self._queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = background(self._produce, name)

    def _produce(self) -> None:
        try:
            for item in self._items:
                if not self._offer(item):
                    break
            else:
                self._offer(_END)
        except BaseException as exc:  # raised again in the consumer, where it is reported
            self._offer(_Failed(exc))
        finally:
            close = getattr(self._items, "close", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    close()  # a generator stopped early runs its cleanup in the thread that ran it

    def _offer(self, item) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_WAIT)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> "Ahead":
        return self

    def __next__(self):
        item = self._queue.get()
        if item is _END:
            self._thread.join()
            raise StopIteration
        if isinstance(item, _Failed):
            self._thread.join()
            raise item.exc
        return item

    def close(self) -> None:
        """Stop the producer after the item it is making and wait for it (its iterable is closed in its thread)."""
        import queue

        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=_WAIT)
        self._thread.join()


def ahead(items, *, depth: int, name: str) -> Ahead:
    """Iterate over ``items`` while a thread of its own makes the next ones, at most ``depth`` ahead.

    For a producer whose work releases the interpreter (a video decoder): it
    runs beside the consumer instead of before it.  An exception in the
    producer is raised by the consumer's ``next``; :meth:`Ahead.close` (call
    it in a ``finally``) stops the producer and waits for it, so nothing
    runs on after the consumer has gone.
    """
    return Ahead(items, depth, name)


class Behind:
    """A consumer running in a thread of its own, fed at most ``depth`` items ahead (see :func:`behind`)."""

    def __init__(self, consume, depth: int, name: str) -> None:
        import queue

        self._consume = consume
        self._queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = background(self._run, name)

    def _run(self) -> None:
        import queue

        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=_WAIT)
            except queue.Empty:
                continue
            if item is _END:
                return
            try:
                self._consume(item)
            except BaseException as exc:  # raised again in the feeder, at its next put or at close
                self._error = exc
                return

    def put(self, item) -> None:
        """Hand ``item`` to the consumer, waiting while ``depth`` items wait; raise the consumer's failure."""
        import queue

        while True:
            if self._error is not None or not self._thread.is_alive():
                self._raise()
            try:
                self._queue.put(item, timeout=_WAIT)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Wait until every item is consumed; raise the consumer's failure."""
        self.put(_END)
        self._thread.join()
        if self._error is not None:
            self._raise()

    def abort(self) -> None:
        """Stop the consumer after the item it is on, dropping the rest, and wait for it."""
        self._stop.set()
        self._thread.join()

    def _raise(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error
        raise RuntimeError("the consumer thread ended before its work")


def behind(consume, *, depth: int, name: str) -> Behind:
    """A thread of its own that calls ``consume(item)`` for each item put, in order, up to ``depth`` behind.

    For a consumer whose work releases the interpreter (a video encoder): it
    runs beside the producer instead of after it.  A failure in ``consume``
    is raised by the next :meth:`Behind.put` or by :meth:`Behind.close`;
    :meth:`Behind.abort` (call it when the producer fails) stops it.
    """
    return Behind(consume, depth, name)
