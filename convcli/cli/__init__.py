"""The command line: parse, call the core, report.  No numerics live here.

Every command reports failures the same way: one line
``convcli: error: <subject>: <reason>`` on stderr and the exit code of the
error (see ``convcli.errors``); ``--debug`` (or ``CONVCLI_DEBUG=1``) shows
the traceback instead.
"""
from __future__ import annotations

import sys

import typer
import typer.core

from ..errors import EXIT_INTERRUPTED

app = typer.Typer(
    name="convcli",
    help="Apply convolution kernels to audio, images and volumes; classify images with a CNN.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class Command(typer.core.TyperCommand):
    """A command whose usage line reads as users type it: ``INPUT...``, not Typer's ``{INPUT}``."""

    def collect_usage_pieces(self, ctx):
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]


def _set_debug(value: bool) -> None:
    from .report import set_debug

    set_debug(value)  # every run sets it, so one in-process --debug run does not leak into the next


def _show_version(value: bool) -> None:
    if value:
        from .. import __version__

        typer.echo(f"convcli {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(
        False, "--debug", callback=_set_debug, is_eager=True,
        help="Show the traceback of a failure (for a bug report) instead of the one-line error. "
        "CONVCLI_DEBUG=1 does the same.",
    ),
) -> None:
    """Apply convolution kernels to audio, images and volumes; classify images with a CNN."""


# Each command lives in its own module and registers itself on `app`.
from . import filter_cmd  # noqa: E402,F401
from . import kernels_cmd  # noqa: E402,F401
from . import classify_cmd  # noqa: E402,F401


def main(argv: list[str] | None = None) -> int:
    """Run convcli on ``argv`` and return its exit code; every failure becomes one line and an exit code.

    With ``argv`` None this is the process itself (the console script, or
    ``python -m convcli``): the arguments come from ``sys.argv``, stdout is
    closed at the end so a lost write is an error, and a run stopped by a
    signal ends the process by that signal.  With ``argv`` given (a test, a
    program embedding convcli) the code is returned and the signal handlers
    are put back as they were.
    """
    import signal

    from . import parse, report

    process = argv is None
    args = parse.optional_values(_debug_first(sys.argv[1:] if process else [str(a) for a in argv]))
    _guard_closed_streams()
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    saved_hook = sys.unraisablehook
    report.interrupted_by = None
    _terminate_like_interrupt()
    sys.unraisablehook = _redeliver_swallowed_signals(saved_hook)
    try:
        code = report.exit_code_of(lambda: _run(args))
        code = report.close_stdout(code, close=process)
    finally:
        sys.unraisablehook = saved_hook
        if not process:
            for signum, handler in saved.items():
                signal.signal(signum, handler)
    if process and code == EXIT_INTERRUPTED:
        _die_of_signal(report.interrupted_by)
    if process:
        # The interpreter's shutdown collections would walk every object the
        # imports made (20-40 ms of a short run); nothing left is garbage worth it.
        import gc

        gc.freeze()
    return code


def _run(args: list[str]):
    from .completion import shown_completion

    script = shown_completion(args[:1] + args[1:2]) if args[:1] == ["--show-completion"] or (
        args and args[0].startswith("--show-completion=")) else None
    if script is not None:
        sys.stdout.write(script + "\n")
        return 0
    return app(args=args or ["--help"], prog_name="convcli", standalone_mode=False)


def _debug_first(args: list[str]) -> list[str]:
    """``--debug`` anywhere on the line (before a ``--``) moved in front of the command, where Click reads it.

    The error line says "run with --debug": appending it to the command just
    run must work, not be refused as an unknown option of the subcommand.
    """
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    return ["--debug"] + [a for a in args[:end] if a != "--debug"] + args[end:]


class _ClosedStdout:
    """Standard output when the shell closed it (``>&-``): every write fails, so a lost result is an error."""

    def write(self, data):
        import errno

        raise OSError(errno.EBADF, "standard output is closed")

    def flush(self) -> None:
        pass  # nothing is ever buffered: every write has already failed

    @property
    def buffer(self):
        return self

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise ValueError("standard output is closed")

    def close(self) -> None:
        pass


def _guard_closed_streams() -> None:
    # With descriptor 0, 1 or 2 closed, the next file convcli opens would get
    # that number, and anything written to "stdout" or "stderr" (by us or a C
    # library) would land in it.  Hold them with /dev/null, and make Python's
    # missing sys.stdout fail loudly instead of crashing.
    import io
    import os

    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
    if sys.stdout is None:
        sys.stdout = _ClosedStdout()
    if sys.stderr is None:
        sys.stderr = io.TextIOWrapper(open(os.devnull, "wb"), errors="replace")  # nowhere to report to


def _raise_terminated(signum, frame):
    from ..errors import Terminated
    from . import report

    report.interrupted_by = signum
    raise Terminated()


def _raise_interrupt(signum, frame):
    from . import report

    report.interrupted_by = signum
    raise KeyboardInterrupt


def _terminate_like_interrupt() -> None:
    # SIGTERM unwinds like Ctrl-C, so atomic writers remove their temporary
    # files and a batch stops its workers, instead of dying mid-write.  Both
    # handlers remember the signal: Click turns the exception into exit code
    # 130 and main() must still exit by the right signal.
    import signal

    signal.signal(signal.SIGTERM, _raise_terminated)
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not if the shell made us ignore it
        signal.signal(signal.SIGINT, _raise_interrupt)


def _redeliver_swallowed_signals(previous):
    """An unraisable-exception hook that sends a signal again when its exception landed in a finaliser.

    The handlers raise where the interpreter happens to be; inside a
    ``__del__`` or a weakref callback the exception cannot propagate, so
    Python would print "Exception ignored ... KeyboardInterrupt" and the run
    would go on as if no signal had come.  Sent again a moment later (from
    another thread, so not into this hook), the signal is raised where the
    main thread is then, past the finaliser, and unwinds the run.
    """
    def hook(unraisable) -> None:
        from . import report

        if isinstance(unraisable.exc_value, KeyboardInterrupt) and report.interrupted_by is not None:
            import os
            import threading

            again = threading.Timer(0.01, os.kill, (os.getpid(), report.interrupted_by))
            again.daemon = True
            again.start()
            return
        previous(unraisable)
    return hook


def _die_of_signal(signum: int | None) -> None:
    # Exit "by the signal", after cleaning up, so a shell loop around convcli
    # stops too (the shell shows 130 for SIGINT, 143 for SIGTERM).
    import os
    import signal

    signum = signum or signal.SIGINT
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
