"""Where bytes come from and go to: input sources (a path or stdin) and atomic outputs.

An output is first written to a hidden temporary file in the destination's
folder and renamed over the final name only when the writer succeeded, so an
interrupted or failed run leaves neither a partial file nor a temporary one,
and a file already at that name stays intact until the new one is complete.
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
        fd, tmp = tempfile.mkstemp(prefix="convcli-stdin-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(self.data)
            yield tmp
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


TEMP_MARKER = ".convcli-tmp"  # in every temporary file name, so a batch never reads one back
_NAME_MAX = 255  # bytes in one file name on common file systems


def temp_prefix(name: str) -> str:
    """The start of every temporary file name made for the output file `name`.

    ``.<name>.``, with `name` shortened so that prefix, mkstemp's random part,
    the marker and an extension still fit in one file name (a 250-character
    output name must not make its temporary file impossible to create).
    """
    room = _NAME_MAX - 2 - 8 - len(TEMP_MARKER) - 16
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
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(base), suffix=f"{TEMP_MARKER}{suffix}", dir=folder)
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
