"""The command line: parse, call the core, report.  No numerics live here.

Every command reports failures the same way: one line
``convcli: error: <subject>: <reason>`` on stderr and the exit code of the
error (see ``convcli.errors``); ``--debug`` re-raises for a traceback.
"""
from __future__ import annotations

import sys

import typer

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
) -> None:
    """Apply convolution kernels to audio, images and volumes; classify images with a CNN.

    Set CONVCLI_DEBUG=1 to get a traceback instead of the one-line error.
    """


# Each command lives in its own module and registers itself on `app`.
from . import filter_cmd  # noqa: E402,F401
from . import kernels_cmd  # noqa: E402,F401
from . import classify_cmd  # noqa: E402,F401


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app and map every failure to one line and an exit code."""
    from .report import run_guarded

    args = sys.argv[1:] if argv is None else list(argv)
    code = run_guarded(lambda: app(args=args or ["--help"], prog_name="convcli", standalone_mode=False))
    if code == EXIT_INTERRUPTED:
        _die_of_sigint()
    sys.exit(code)


def _die_of_sigint() -> None:
    # Exit "by the signal", after cleaning up, so a shell loop around convcli stops too.
    import os
    import signal

    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
