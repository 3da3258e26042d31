"""The one home of threads and processes: cores, the shared threads, BLAS, worker processes.

Everything in convcli that uses more than one core goes through here:

- :func:`cores` is the number of cores this process may run on;
- one pool of threads, made on first use and kept, runs the engine's bands,
  the network's shares, the PNG encoder's bands and the sample conversion
  (numpy, OpenCV and zlib release the interpreter while they compute).
  :func:`run_all` and :func:`map_ordered` hand it items, :func:`submit`
  one stage of a pipeline; :func:`split`
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
  number in flight; a worker that dies costs only the item it was running,
  and the workers die with their parent, however it ends; :class:`Forked`
  runs one stage in a forked copy of the process (a JPEG encoder that holds
  the GIL);
- :func:`stream_ahead` and :func:`stream_behind` run the ends of a stream (a video's
  decoder and encoder) in threads of their own beside the caller, with a
  bounded queue between each and the caller.
"""
from __future__ import annotations

import contextlib
import contextvars
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
    """How many threads the shared pool has: the cores, at most :data:`MAX_THREADS` (1 inside :func:`one_thread`)."""
    if getattr(_LOCAL, "single", False):
        return 1
    return min(cores(), MAX_THREADS)


def _mark_worker() -> None:
    _LOCAL.worker = True


def in_worker() -> bool:
    """Whether this thread is one of the pool's (its parallel work then runs inline)."""
    return getattr(_LOCAL, "worker", False) or getattr(_LOCAL, "single", False)


@contextlib.contextmanager
def one_thread():
    """Within the block, this thread's work runs on it alone, cut as if the machine had one core.

    For a chunk of a Dask graph: the chunks already keep the cores busy, and
    a chunk's result must not depend on how many cores its worker has (a box
    filter cut in one band per core sums in another order).
    """
    before = getattr(_LOCAL, "single", False)
    _LOCAL.single = True
    try:
        yield
    finally:
        _LOCAL.single = before


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
    this thread is itself one of the pool's.  Within :func:`progress_to`,
    the items are counted (bands, planes, chunks: the engine's units of work).
    """
    report = _progress.get()
    if report is None:
        map_ordered(work, items, parallel=parallel)
        return
    items = list(items)
    report(0, len(items))

    def counted(item) -> None:
        work(item)
        report(1, 0)
    map_ordered(counted, items, parallel=parallel)


_progress = contextvars.ContextVar("convcli_progress", default=None)


def progress_report():
    """The ``report(done, added)`` of the enclosing :func:`progress_to`, or None: for work counted outside run_all."""
    return _progress.get()


@contextlib.contextmanager
def progress_to(report):
    """Within the block, every :func:`run_all` of this thread calls ``report(done, added)`` as it goes.

    ``report(0, n)`` when n items are about to run, ``report(1, 0)`` as each
    finishes (on whichever thread ran it: ``report`` must be thread-safe).
    The engine keeps knowing nothing of who listens: a terminal's bar, a log.
    """
    token = _progress.set(report)
    try:
        yield
    finally:
        _progress.reset(token)


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


def submit(work):
    """Start ``work()`` on the shared threads and return its future (``result()`` waits, and raises what it raised).

    For a stage that overlaps the caller's next step (a JPEG stripe encoded
    while the next band is filtered).  With one thread, or from a pool
    thread, it runs at once in the caller's.
    """
    from concurrent.futures import Future

    run = _as_data(work)
    if _inline(2, True):
        future = Future()
        try:
            future.set_result(run())
        except BaseException as exc:  # handed over by result()
            future.set_exception(exc)
        return future
    return _pool().submit(run)


def background(target, name: str):
    """Start ``target()`` in a thread of its own beside the caller and return the thread.

    For a producer the caller consumes from while it works (the PNG band
    decoder's inflater): it must not wait in the pool's queue behind the
    very work that waits for it.
    """
    thread = threading.Thread(target=target, name=f"convcli-{name}", daemon=True)
    thread.start()
    return thread


def prefetched(items, *, depth: int = 2, name: str = "prefetch"):
    """Iterate over ``items`` (a generator that reads or decodes) in a thread of its own, ``depth`` items ahead.

    The caller computes on one item while the next is being read: a long
    sound's decoding overlaps its filtering.  An exception in ``items`` is
    raised at the caller's next step; a caller that stops early stops the
    thread and closes ``items`` there.
    """
    import queue

    ahead: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def offer(entry) -> bool:
        while not stop.is_set():
            try:
                ahead.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(("item", item)):
                    return
            offer(("done", None))
        except BaseException as exc:  # handed to the caller
            offer(("error", exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = background(produce, name)
    try:
        while True:
            kind, value = ahead.get()
            if kind == "error":
                raise value
            if kind == "done":
                return
            yield value
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def behind(consume, *, depth: int = 2, name: str = "behind"):
    """Yield ``put(item)``; a thread of its own calls ``consume(item)`` on every item, in order, ``depth`` behind.

    The caller computes the next item while the last is written: a long
    sound's encoding overlaps its filtering.  An exception in ``consume`` is
    raised at the next ``put`` or on leaving the block; leaving the block
    waits for every item to be consumed.
    """
    import queue

    waiting: queue.Queue = queue.Queue(maxsize=max(1, depth))
    failed: list = []

    def run() -> None:
        while True:
            item = waiting.get()
            if item is _END:
                return
            if not failed:
                try:
                    consume(item)
                except BaseException as exc:  # handed to the caller
                    failed.append(exc)

    consume = _as_data(consume)
    thread = background(run, name)

    def put(item) -> None:
        if failed:
            raise failed[0]
        waiting.put(item)

    try:
        yield put
    finally:
        waiting.put(_END)
        thread.join()
    if failed:
        raise failed[0]


_END = object()


@contextlib.contextmanager
def floats_as_data():
    """In this thread, NaN and infinity are data: no floating-point warnings from numpy."""
    import numpy as np

    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        yield


@contextlib.contextmanager
def opencv_threads(count: int):
    """OpenCV's own threads held to `count` inside the block (OpenCV is imported here), then put back.

    For work that runs its own stages side by side (a photo decoded,
    filtered and encoded at once): many small OpenCV calls each waking its
    threads fight those stages for the cores.
    """
    try:
        import cv2
    except ImportError:
        yield
        return
    before = cv2.getNumThreads()
    cv2.setNumThreads(count)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


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
class WorkerLost(Exception):
    """The worker process holding an item died (killed, out of memory) or could not return its result."""


# A worker is a fresh interpreter started with the parent's import path (sent first on its
# pipe, before anything of convcli is imported), then the function, then one item at a time.
_BOOT = ("import sys\n"
         "from multiprocessing.connection import Connection\n"
         "tasks, results = Connection(int(sys.argv[1]), writable=False), Connection(int(sys.argv[2]), readable=False)\n"
         "sys.path[:] = tasks.recv()\n"
         "from convcli.parallel import _serve\n"
         "_serve(tasks, results, int(sys.argv[3]))\n")
HELD_PER_WORKER = 2  # one running, one waiting in its pipe: a worker never idles for a round trip
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def run_processes(func, items, *, workers: int, on_result, on_lost, on_stopped=lambda item: None) -> None:
    """``func(item)`` for every item in ``workers`` processes; ``on_result(item, result)`` as each finishes.

    Each worker holds at most :data:`HELD_PER_WORKER` items, so memory stays
    flat whatever the number of items, and the item a worker was running is
    known when it dies: ``on_lost(item, WorkerLost)`` reports that one, and a
    fresh worker takes over the items it had not started.  ``func``, the
    items and the results must pickle; an exception ``func`` raises also
    comes back as ``on_lost``.  The workers die with this process, even when
    it is killed outright (a parent-death signal, armed in each).  Any
    exception from the callbacks, or an interrupt, kills the workers, waits
    for them, calls ``on_stopped(item)`` for every item they held (so a
    caller can remove what a worker was writing) and is raised again.
    """
    from collections import deque

    pending = iter(items)
    requeued: deque = deque()
    pool: list[_Worker] = []

    def next_item():
        if requeued:
            return requeued.popleft()
        return next(pending, _NONE)

    def feed(worker: "_Worker") -> None:
        while len(worker.held) < HELD_PER_WORKER and worker.alive:
            item = next_item()
            if item is _NONE:
                return
            worker.give(item, requeued)

    barren = 0  # workers in a row that died holding nothing: a broken interpreter, not an item

    try:
        for _ in range(max(1, workers)):
            pool.append(_Worker(func))
            feed(pool[-1])
        while any(w.held for w in pool) or requeued:
            for worker in _ready([w for w in pool if w.held]):
                outcome = worker.take()
                if outcome is None:  # it died: report what it was running, hand the rest on
                    item, why = worker.lost()
                    requeued.extendleft(reversed(worker.held))
                    worker.held.clear()
                    pool[pool.index(worker)] = worker = _Worker(func)
                    on_lost(item, why)
                else:
                    barren = 0
                    item, ok, value = outcome
                    if ok:
                        on_result(item, value)
                    else:
                        on_lost(item, WorkerLost(value))
                feed(worker)
            for i, worker in enumerate(pool):
                if not worker.alive and not worker.held:  # died between items: replace it
                    code = worker.close()
                    barren += 1
                    if barren > 2 * len(pool) + 2:
                        raise WorkerLost(f"worker processes end as soon as they start (exit {code})")
                    pool[i] = _Worker(func)
                    feed(pool[i])
    except BaseException:
        for worker in pool:
            worker.kill()
        for worker in pool:
            for item in worker.held:
                on_stopped(item)
        raise
    for worker in pool:
        worker.close()


_NONE = object()  # no item left


def _ready(workers: list["_Worker"]) -> list["_Worker"]:
    """The workers with a result (or an end) to read; waits, but a signal's handler still runs."""
    from multiprocessing.connection import wait

    by_pipe = {w.results: w for w in workers}
    return [by_pipe[conn] for conn in wait(list(by_pipe))]


class _Worker:
    """One worker process: a pipe of items to it, a pipe of results from it, the items it holds, in order."""

    def __init__(self, func) -> None:
        import subprocess
        import sys
        from collections import deque
        from multiprocessing.connection import Connection

        self.held: deque = deque()
        task_read, task_write = os.pipe()
        result_read, result_write = os.pipe()
        try:
            with _interrupts_held():
                # stdout stays the parent's data alone: whatever a library in a worker prints goes to stderr.
                self.process = subprocess.Popen(
                    [sys.executable, "-c", _BOOT, str(task_read), str(result_write), str(os.getpid())],
                    pass_fds=(task_read, result_write), stdin=subprocess.DEVNULL, stdout=2)
        except BaseException:
            for fd in (task_write, result_read):
                os.close(fd)
            raise
        finally:
            os.close(task_read)
            os.close(result_write)
        self.tasks = Connection(task_write, readable=False)
        self.results = Connection(result_read, writable=False)
        self.alive = self._send(sys.path) and self._send(func)

    def _send(self, message) -> bool:
        try:
            self.tasks.send(message)
            return True
        except OSError:  # it died; its pipe of results says so
            return False

    def give(self, item, requeued) -> None:
        if self._send(item):
            self.held.append(item)
        else:
            self.alive = False
            requeued.appendleft(item)

    def take(self):
        """The oldest held item, whether it succeeded and its result or error; None if the worker died."""
        try:
            ok, value = self.results.recv()
        except (EOFError, OSError):
            self.alive = False
            return None
        except Exception as exc:  # a result that does not unpickle
            ok, value = False, f"its result cannot be read back ({type(exc).__name__}: {exc})"
        return self.held.popleft(), ok, value

    def lost(self):
        """The item this dead worker was running, and why it is lost."""
        import signal

        code = self.close()
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            why = f"the worker process was killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
        else:
            why = f"the worker process ended (exit {code})"
        return self.held.popleft(), WorkerLost(why)

    def kill(self) -> None:
        """End the process at once (no unwinding: the caller removes what it was writing) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.close()

    def close(self) -> int | None:
        """Close the pipes (a live worker reads the end and exits) and reap the process; its exit code."""
        for conn in (self.tasks, self.results):
            conn.close()
        try:
            return self.process.wait(timeout=5)
        except Exception:  # still running after its pipe closed: a stuck library call
            self.process.kill()
            return self.process.wait()


@contextlib.contextmanager
def _interrupts_held():
    """Block SIGINT in this thread while a worker starts: the worker inherits the block, so a Ctrl-C
    during its start-up waits (here, for the parent) instead of printing a traceback from the worker."""
    import signal

    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _serve(tasks, results, parent: int) -> None:
    """A worker's loop: run the function on each item until the pipe ends; reply (ok, result or error)."""
    import signal

    _die_with(parent)
    # Ctrl-C reaches the whole process group: the parent decides.  SIGTERM keeps
    # its default and ends the worker at once; the parent, which outlives its
    # workers, removes whatever a stopped worker was writing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # held while it started
    # The processes already keep every core busy: BLAS threads in each would only fight.
    hold_blas_to_one_thread()
    try:
        func = tasks.recv()
    except EOFError:
        return
    while True:
        try:
            item = tasks.recv()
        except EOFError:
            return
        try:
            reply = (True, func(item))
        except Exception as exc:
            reply = (False, f"{type(exc).__name__}: {exc}")
        try:
            results.send(reply)
        except OSError:
            return  # the parent went away
        except Exception as exc:  # a result that does not pickle
            results.send((False, f"its result cannot be sent back ({type(exc).__name__}: {exc})"))


def _die_with(parent: int) -> None:
    """Make this process end when ``parent`` does, however that ends (SIGKILL included)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):  # not Linux: watch the parent instead
        background(lambda: _watch(parent), "parent-watch")
        return
    if os.getppid() != parent:  # it died before the signal was armed
        os._exit(1)


def _watch(parent: int) -> None:
    import time

    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(1)


class Forked:
    """``work()`` run in a forked copy of this process, beside the caller: a stage that must not share the GIL.

    Pillow's JPEG encoder holds the interpreter while it codes; in a copy of
    the process (no new interpreter to start, every module already loaded) it
    runs beside the filter instead of taking turns with it.  The copy talks
    to its parent only through what ``work`` was given (pipes, shared
    memory), ends with ``work`` (exit 0, or 1 if it raised), never runs the
    parent's cleanups, ignores Ctrl-C (the parent decides) and dies with the
    parent however that ends.  Fork from the thread that outlives the child:
    the death signal follows the forking thread.
    """

    def __init__(self, work) -> None:
        parent = os.getpid()
        with _interrupts_held():
            pid = os.fork()
            if pid == 0:
                _run_forked(work, parent)
        self.pid = pid
        self.code: int | None = None

    def wait(self) -> int:
        """Wait for the child to end; its exit code (minus the signal that killed it)."""
        if self.code is None:
            _, status = os.waitpid(self.pid, 0)
            self.code = os.waitstatus_to_exitcode(status)
        return self.code

    def kill(self) -> None:
        """End the child at once (no unwinding) and reap it."""
        import signal

        if self.code is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait()

    def why(self) -> str:
        """How the (ended) child ended, in words: ``killed by SIGKILL``, ``ended (exit 1)``."""
        import signal

        code = self.wait()
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"ended (exit {code})"


def _run_forked(work, parent: int) -> None:
    """The forked child's whole life: never returns into the parent's frames (their cleanups are the parent's)."""
    global _POOL

    code = 1
    try:
        import signal

        _POOL = None  # the parent's pool threads were not copied: a pool here starts its own
        _die_with(parent)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        work()
        code = 0
    except BaseException:  # reported by work() through its own pipe, if at all
        pass
    finally:
        os._exit(code)


# --------------------------------------------------------------------------- stages of a stream
_END = object()
_WAIT = 0.1  # seconds between looks at a stop flag while a queue is full or empty


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Ahead:
    """The items of an iterable, produced up to ``depth`` ahead by a thread of its own (see :func:`stream_ahead`)."""

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


def stream_ahead(items, *, depth: int, name: str) -> Ahead:
    """Iterate over ``items`` while a thread of its own makes the next ones, at most ``depth`` ahead.

    For a producer whose work releases the interpreter (a video decoder): it
    runs beside the consumer instead of before it.  An exception in the
    producer is raised by the consumer's ``next``; :meth:`Ahead.close` (call
    it in a ``finally``) stops the producer and waits for it, so nothing
    runs on after the consumer has gone.
    """
    return Ahead(items, depth, name)


class Behind:
    """A consumer running in a thread of its own, fed at most ``depth`` items ahead (see :func:`stream_behind`)."""

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


def stream_behind(consume, *, depth: int, name: str) -> Behind:
    """A thread of its own that calls ``consume(item)`` for each item put, in order, up to ``depth`` behind.

    For a consumer whose work releases the interpreter (a video encoder): it
    runs beside the producer instead of after it.  A failure in ``consume``
    is raised by the next :meth:`Behind.put` or by :meth:`Behind.close`;
    :meth:`Behind.abort` (call it when the producer fails) stops it.
    """
    return Behind(consume, depth, name)
