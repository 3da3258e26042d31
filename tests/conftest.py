"""Shared test helpers and settings.

- :func:`convcli` runs the real ``convcli.cli.main(argv)`` in this process,
  with its own stdin, stdout, stderr and environment, and returns a
  :class:`Run` (exit code, the bytes and text of each stream): how a user's
  shell sees convcli, without the cost of a process per test.
- :func:`convcli_process` runs ``python -m convcli`` as a real process: for
  pipes, signals, closed descriptors and exit-by-signal.
- :func:`leftovers` lists the atomic writer's temporary files left in a tree.
- :func:`peak_memory` bounds what a block allocates (instead of timing it).
- A deterministic hypothesis profile for CI and everyday runs.

Test modules import these with ``from conftest import ...`` (pytest puts this
folder on the import path).
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
TEMP_MARKER = "convcli-tmp"  # in every temporary file name the atomic writer makes

settings.register_profile(
    "ci",
    derandomize=True,  # the same examples on every run and machine
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("thorough", max_examples=1000, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@dataclass
class Run:
    """What a run of convcli gave: its exit code and what it wrote on each stream."""

    exit_code: int
    stdout_bytes: bytes
    stderr_bytes: bytes

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def output(self) -> str:
        """Both streams, stdout first: what a terminal would show."""
        return self.stdout + self.stderr


class _Kept(io.BytesIO):
    """A byte stream whose contents survive ``close()`` (main closes nothing in-process, a library might)."""

    def close(self) -> None:
        self.kept = self.getvalue()
        super().close()

    def value(self) -> bytes:
        return self.getvalue() if not self.closed else self.kept


def _text(stream: io.BytesIO, name: str):
    wrapper = io.TextIOWrapper(stream, encoding="utf-8", errors="replace", write_through=True)
    wrapper.mode = "w" if name != "<stdin>" else "r"
    return wrapper


@contextlib.contextmanager
def _environment(env: dict | None):
    if not env:
        yield
        return
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update({name: str(value) for name, value in env.items()})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def convcli(*args, input: bytes | str | None = None, env: dict | None = None) -> Run:
    """Run ``convcli ARGS`` through ``convcli.cli.main`` in this process and return what it did.

    ``input`` is what stdin holds (bytes, or text encoded as UTF-8); ``env``
    adds environment variables for the run.
    """
    from convcli.cli import main

    if isinstance(input, str):
        input = input.encode("utf-8")
    out, err = _Kept(), _Kept()
    streams = (sys.stdin, sys.stdout, sys.stderr)
    sys.stdin = _text(io.BytesIO(input or b""), "<stdin>")
    sys.stdout, sys.stderr = _text(out, "<stdout>"), _text(err, "<stderr>")
    try:
        with _environment(env):
            code = main([str(a) for a in args])
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(ValueError):
                stream.flush()
        sys.stdin, sys.stdout, sys.stderr = streams
    return Run(code, out.value(), err.value())


def convcli_process(*args, text: bool = False, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m convcli ARGS`` as a real process (output captured) and wait for it."""
    return subprocess.run([sys.executable, "-m", "convcli", *map(str, args)], capture_output=True, text=text,
                          timeout=timeout, **kwargs)


def convcli_on_terminal(*args, stdout_too: bool = False, cwd=None, timeout: float = 120) -> tuple[int, str]:
    """Run ``python -m convcli ARGS`` with stderr (and stdout) on a pseudo-terminal: its exit code and what the terminal got."""
    leader, follower = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "convcli", *map(str, args)], stderr=follower,
                            stdout=follower if stdout_too else subprocess.DEVNULL, cwd=cwd,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal's other end closed: the run is over
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    return proc.wait(timeout=timeout), shown.decode("utf-8", "replace")


def session_members(sid: int) -> list[int]:
    """Live processes of the session ``sid``: a run's own, and any it would have left behind."""
    alive = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != b"Z":
            alive.append(int(entry))
    return alive


def leftovers(root) -> list[str]:
    """Names of the atomic writer's temporary files anywhere below ``root``, sorted."""
    return sorted(name for _, _, names in os.walk(root) for name in names if TEMP_MARKER in name)


@contextlib.contextmanager
def peak_memory():
    """Within the block, trace allocations (numpy's included); yields a function giving the peak bytes."""
    import tracemalloc

    tracemalloc.start()
    peak = [0]
    try:
        yield lambda: peak[0]
    finally:
        peak[0] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
