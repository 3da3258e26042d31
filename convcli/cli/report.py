"""The one place that turns exceptions into the one-line report and the exit code.

:func:`exit_code_of` runs a command and maps whatever it raises: a
:class:`~convcli.errors.ConvcliError` to its own exit code and one line
``convcli: error: <subject>: <reason>`` on stderr, Click's usage errors to
exit 2, an interrupt to 130, a reader that went away (``| head``) to 0, and
anything unexpected to 70 (a bug) or 1 (an I/O failure).
"""
from __future__ import annotations

import os
import sys
from typing import Callable

from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SOFTWARE, EXIT_USAGE, ConvcliError

# Parameter names (as the pipeline and the engine name them) that are not spelled --name on the command line.
FLAG_NAMES = {"x": "input", "jobs": "-j/--jobs"}


def error_line(text: str) -> None:
    """Write ``convcli: error: <text>`` as one line on stderr."""
    text = " ".join(str(text).split())  # one line, whatever the message held
    try:
        sys.stderr.write(f"convcli: error: {text}\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


_debug = False
interrupted_by: int | None = None  # the signal that stopped the run, for main() to exit by it


def set_debug(value: bool) -> None:
    """Turn on tracebacks instead of one-line errors (the global --debug option)."""
    global _debug
    _debug = bool(value)


def debug_enabled() -> bool:
    """--debug was given, or CONVCLI_DEBUG is set to something other than 0."""
    return _debug or os.environ.get("CONVCLI_DEBUG", "") not in ("", "0")


def _note_interrupt(exc: BaseException) -> None:
    import signal

    from ..errors import Terminated

    global interrupted_by
    signum = getattr(exc, "signum", None)
    if signum is None:
        # Click turns a KeyboardInterrupt (or our Terminated) into Abort: look at the cause.
        chain = [exc, exc.__cause__, exc.__context__]
        signum = signal.SIGTERM if any(isinstance(e, Terminated) for e in chain) else signal.SIGINT
    interrupted_by = int(signum)


def _reported(exc: ConvcliError) -> int:
    """Note an interrupt and print the one-line error (unless --debug wants the traceback); return the exit code."""
    if exc.exit_code == EXIT_INTERRUPTED:
        _note_interrupt(exc)
    if not debug_enabled():
        error_line(cli_subject(exc).line())
    return exc.exit_code


def cli_subject(exc: ConvcliError) -> ConvcliError:
    """Name an engine parameter the way the user typed it: ``pad_mode`` -> ``--pad-mode``."""
    from ..errors import ParameterError

    if isinstance(exc, ParameterError) and exc.subject and exc.subject.isidentifier():
        exc.subject = FLAG_NAMES.get(exc.subject) or "--" + exc.subject.replace("_", "-")
    return exc


def _quiet_broken_pipe() -> None:
    # The reader went away (`| head`): drop what is buffered so Python does not
    # print "Exception ignored ... BrokenPipeError" at exit.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def close_stdout(code: int, close: bool = True) -> int:
    """Flush (and ``close``) stdout explicitly, so a lost write is never reported as success.

    Returns the exit code to use: a write that fails here (a full disk) turns
    success into failed work with one line on stderr; a reader that went away
    (``| head``) is not an error.
    """
    try:
        sys.stdout.flush()
        if close:
            sys.stdout.close()
    except BrokenPipeError:
        _quiet_broken_pipe()
    except (OSError, ValueError) as exc:
        _quiet_broken_pipe()  # nothing more can go out; keep the interpreter from retrying at exit
        if code == EXIT_OK:
            error_line(f"<stdout>: cannot write: {getattr(exc, 'strerror', None) or exc}")
            return EXIT_FAILED
    return code


def exit_code_of(run: Callable[[], object]) -> int:
    """Run the Typer app in non-standalone mode and return the process exit code.

    Click's exceptions are recognised by their public attributes, because
    Typer vendors its own copy of Click in recent releases.
    """
    import typer

    try:
        result = run()
        return result if isinstance(result, int) else EXIT_OK
    except typer.Exit as exc:
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt) as exc:
        _note_interrupt(exc)
        try:
            sys.stderr.write("\n")
        except (OSError, ValueError):
            pass
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _quiet_broken_pipe()
        return EXIT_OK
    except SystemExit as exc:
        # Click ends the process itself (exit 1) when a write to stdout finds
        # the pipe closed: a reader that went away is not an error.
        if isinstance(exc.__context__, BrokenPipeError):
            _quiet_broken_pipe()
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    except ConvcliError as exc:
        code = _reported(exc)
        if debug_enabled():
            _traceback()
        return code
    except MemoryError:
        if debug_enabled():
            _traceback()
            return EXIT_FAILED
        error_line("out of memory: the input is too large for this machine (try a smaller input or --precision float32)")
        return EXIT_FAILED
    except Exception as exc:
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            if debug_enabled():
                _traceback()
                return EXIT_FAILED if isinstance(exc, OSError) else EXIT_SOFTWARE
            return _unexpected(exc)
        ctx = getattr(exc, "ctx", None)
        message = exc.format_message()
        if exc.exit_code == EXIT_USAGE and ctx is not None and ctx.command_path:
            message = f"{message} (see '{ctx.command_path} --help')"
        error_line(message)
        return exc.exit_code


def _traceback() -> None:
    """The traceback of the exception being handled, on stderr (--debug): the exit code stays the error's own."""
    import traceback

    try:
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def _unexpected(exc: Exception) -> int:
    """One line for an exception no code path expected: an I/O failure, or a bug."""
    if isinstance(exc, OSError):
        # A write that failed outside the atomic writers (a full disk under a
        # table printed to stdout): failed work, not a bug.
        where = exc.filename if getattr(exc, "filename", None) else "<stdout>"
        error_line(f"{where}: {exc.strerror or exc}")
        return EXIT_FAILED
    error_line(f"internal error: {type(exc).__name__}: {exc} (this is a bug; run with --debug for the traceback)")
    return EXIT_SOFTWARE
