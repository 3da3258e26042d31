"""Where bytes come from and go to: input sources (a path or stdin) and atomic outputs.

An output is first written to a hidden temporary file in the destination's
folder and renamed over the final name only when the writer succeeded, so an
interrupted or failed run leaves neither a partial file nor a temporary one,
and a file already at that name stays intact until the new one is complete.
A run killed outright (SIGKILL) cannot clean up: its temporary carries its
pid, and the next run to the same destination removes it.
"""
from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from ..errors import DataError, OutputError

STDIO = "-"


@dataclass
class Source:
    """One input: a file path, or the bytes read from stdin (``path`` is None)."""

    name: str  # how messages name it
    path: str | None = None
    data: bytes | None = None

    @classmethod
    def open_input(cls, source, *, max_bytes: int | None = None) -> "Source":
        """Resolve a path or ``-`` (stdin) into a Source, refusing what cannot be read."""
        if str(source) == STDIO:
            return cls(name="<stdin>", data=_read_stdin(max_bytes))
        path = os.fspath(source)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise DataError("no such file", subject=path) from None
        except OSError as exc:
            raise DataError(exc.strerror or str(exc), subject=path) from None
        import stat

        if stat.S_ISDIR(st.st_mode):
            raise DataError("is a folder, not a file", subject=path)
        if not stat.S_ISREG(st.st_mode):
            # FIFOs and devices would block or never end; only regular files are read.
            raise DataError("not a regular file (FIFOs and devices are not read; use '-' for stdin)", subject=path)
        if not os.access(path, os.R_OK):
            raise DataError("permission denied", subject=path)
        return cls(name=path, path=path)

    @property
    def size(self) -> int:
        if self.data is not None:
            return len(self.data)
        return os.path.getsize(self.path)

    def head(self, n: int) -> bytes:
        """The first `n` bytes (fewer if the input is shorter)."""
        if self.data is not None:
            return self.data[:n]
        try:
            with open(self.path, "rb") as fh:
                return fh.read(n)
        except OSError as exc:
            raise DataError(exc.strerror or str(exc), subject=self.name) from None

    def open(self) -> BinaryIO:
        """A binary file object positioned at the start."""
        if self.data is not None:
            return io.BytesIO(self.data)
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise DataError(exc.strerror or str(exc), subject=self.name) from None

    @property
    def suffix(self) -> str:
        """The lower-case extension, ``.nii.gz`` counted as one (empty for stdin)."""
        return file_suffix(self.path or "")

    @contextlib.contextmanager
    def as_path(self, suffix: str = "") -> Iterator[str]:
        """A real path holding the bytes, for libraries that only read paths."""
        if self.path is not None:
            yield self.path
            return
        remove_stale(tempfile.gettempdir(), STDIN_PREFIX)
        fd, tmp = tempfile.mkstemp(prefix=f"{STDIN_PREFIX}{os.getpid()}-", suffix=f"{TEMP_MARKER}{suffix}")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.data)
            yield tmp
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


TEMP_MARKER = ".convcli-tmp"  # in every temporary file name, so a batch never reads one back
STDIN_PREFIX = "convcli-stdin-"  # a copy of stdin for a library that reads only paths, in the temporary folder
_NAME_MAX = 255  # bytes in one file name on common file systems
_PID_ROOM = 11  # "<pid>-": Linux pids stay below 2^22, other systems' below 2^31


def temp_prefix(name: str) -> str:
    """The start of every temporary file name made for the output file `name`.

    ``.<name>.``, with `name` shortened so that prefix, the writer's pid,
    mkstemp's random part, the marker and an extension still fit in one file
    name (a 250-character output name must not make its temporary file
    impossible to create).
    """
    room = _NAME_MAX - 2 - _PID_ROOM - 8 - len(TEMP_MARKER) - 16
    while len(name.encode("utf-8", "surrogateescape")) > room:
        name = name[:-1]
    return f".{name}."


def file_suffix(path: str) -> str:
    """The lower-case extension of `path`, treating ``.nii.gz`` as one suffix."""
    name = os.path.basename(str(path)).lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return os.path.splitext(name)[1]


def _read_stdin(max_bytes: int | None) -> bytes:
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        raise DataError("standard input is not available", subject="<stdin>")
    if sys.stdin.isatty():
        raise DataError("standard input is a terminal; pipe a file in, e.g. 'convcli filter - ... < in.png'",
                        subject="<stdin>")
    # Into one growing buffer, which getvalue() hands over without a copy: joining a list of
    # chunks held the input twice (1 GiB piped in peaked at 2 GiB).  Growing it reallocates
    # in place (the pages are remapped), so the peak is the bytes read, counted as they come.
    buffer, total = io.BytesIO(), 0
    while True:
        chunk = stream.read(1 << 20)
        if not chunk:
            break
        total += len(chunk)
        if max_bytes is not None and total > max_bytes:
            from .limits import human

            raise DataError(f"more than {human(max_bytes)} on stdin, over the memory budget (raise it with "
                            "--memory-budget)", subject="<stdin>")
        buffer.write(chunk)
    return buffer.getvalue()


@contextlib.contextmanager
def atomic_path(dest, *, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path beside `dest`; rename it onto `dest` only if the block succeeds.

    ``dest == "-"`` writes to a private temporary file and copies it to stdout
    at the end, so a failed writer never sends half a file down a pipe.  The
    temporary path keeps the destination's extension so libraries that choose
    a format or compression from it (nibabel's ``.nii.gz``) behave the same;
    `suffix` sets it explicitly (for stdout).
    Any failure removes the temporary file; an ``OSError`` becomes an
    :class:`OutputError` naming `dest`.
    """
    to_stdout = str(dest) == STDIO
    dest = str(dest)
    if suffix is None:
        suffix = file_suffix(dest) if not to_stdout else ""
    special = False
    if to_stdout:
        folder = None
        subject = "<stdout>"
    else:
        folder = os.path.dirname(os.path.abspath(dest))
        subject = dest
        if not os.path.isdir(folder):
            raise OutputError("the output folder does not exist", subject=dest)
        if os.path.isdir(dest):
            raise OutputError("is a folder; name an output file", subject=dest)
        special = _is_special(dest)
        if special:
            # A device or FIFO (/dev/null, /dev/stdout, a named pipe) is written
            # into, like stdout, never replaced by a regular file.
            folder = None
    base = os.path.basename(dest) if not to_stdout else "stdout"
    if len(suffix) > 16:
        suffix = ""  # no known format has such an extension; keep the name short
    prefix = temp_prefix(base)
    remove_stale(folder or tempfile.gettempdir(), prefix)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}-", suffix=f"{TEMP_MARKER}{suffix}", dir=folder)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot create a file here: {exc.strerror or exc}", subject=subject) from None
    try:
        yield tmp
        if to_stdout:
            _copy_to_stdout(tmp)
        elif special:
            _copy_to_special(tmp, dest)
        else:
            _set_mode_like(tmp, dest)
            os.replace(tmp, dest)
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise OutputError(f"cannot write: {exc.strerror or exc}", subject=subject) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def remove_stale(folder: str, prefix: str) -> list[str]:
    """Delete the temporaries ``<prefix><pid>-…`` in `folder` whose writer is gone; return their names.

    A run killed by SIGKILL (or a power cut) cannot remove its temporary;
    the next run to the same destination does.  The pid in the name says
    whose it is: the file is stale when no process has that pid, or when the
    process that has it started after the file was last written (the pid
    was reused).  A temporary whose writer still runs is never touched.
    Anything else in the folder, other destinations' temporaries included,
    is left alone.
    """
    removed = []
    marked = _temporaries_in(folder)
    for entry in [name for name in marked if name.startswith(prefix)]:
        pid = _writer_pid(entry[len(prefix):])
        path = os.path.join(folder, entry)
        if pid is None or pid == os.getpid() or not _is_stale(path, pid):
            continue
        with contextlib.suppress(OSError):
            os.unlink(path)
            removed.append(entry)
            marked.remove(entry)
    return removed


# Each folder's temporaries as this process first listed it: a batch writing 10,000 outputs
# into one folder lists it once, not once an output (36 ms each with 10,000 files there).
# A stale temporary is left by a process that is gone, so it is there at the first listing;
# those that later runs leave are the business of the runs after them.
_MARKED: dict[str, list[str]] = {}


def _temporaries_in(folder: str) -> list[str]:
    key = os.path.abspath(folder)
    if key not in _MARKED:
        try:
            _MARKED[key] = [name for name in os.listdir(folder) if TEMP_MARKER in name]
        except OSError:
            return []
    return _MARKED[key]


def _writer_pid(rest: str) -> int | None:
    """The pid in a temporary's name after its prefix (None for a name of another shape).

    The whole shape is checked, ``<pid>-<mkstemp's 8 characters><marker>``:
    the temporary of an output named ``out.npy.12-a`` starts with the
    prefix of ``out.npy`` too, and must not be taken for one of its own.
    """
    import re

    found = re.match(r"([0-9]{1,%d})-[a-z0-9_]{8}%s" % (_PID_ROOM - 1, re.escape(TEMP_MARKER)), rest)
    return int(found.group(1)) if found else None


def _is_stale(path: str, pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's process runs under that pid
    except OSError:
        return False
    started = _process_start(pid)
    try:
        written = os.stat(path).st_mtime
    except OSError:
        return False
    # The boot time is whole seconds: a writer is older than its file's last write by a second at most.
    return started is not None and started > written + 1


def _process_start(pid: int) -> float | None:
    """When process `pid` started, in seconds since the epoch (Linux /proc; None where unknown)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
        with open("/proc/stat", "rb") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith(b"btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime, in clock ticks
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _is_special(dest: str) -> bool:
    """True when `dest` exists and is neither a regular file nor a folder (a device, FIFO or socket)."""
    import stat

    try:
        mode = os.stat(dest).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _copy_to_special(tmp: str, dest: str) -> None:
    """Write the finished output into a device or FIFO; a FIFO nobody reads is an error, not a hang."""
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        import errno

        if exc.errno == errno.ENXIO:
            raise OutputError("is a FIFO that nobody reads (start the reader first)", subject=dest) from None
        raise
    os.set_blocking(fd, True)
    with os.fdopen(fd, "wb") as out, open(tmp, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            out.write(chunk)


def _set_mode_like(tmp: str, dest: str) -> None:
    # mkstemp creates 0600; give the output the permissions a plain open() would
    # (or those of the file it replaces).
    try:
        mode = os.stat(dest).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)


def _copy_to_stdout(tmp: str) -> None:
    out = sys.stdout.buffer
    with open(tmp, "rb") as fh:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            out.write(chunk)
    # Flush now so that a full disk or a closed pipe is an error of this run,
    # not something lost at interpreter exit.
    out.flush()
