"""Exception types of convcli, each carrying the exit code the CLI reports.

Exit codes: 0 ok, 1 failed work (bad data, I/O error, partial batch),
2 usage (a bad parameter or flag), 130 interrupted (the process exits by the
signal itself, so a shell sees 130 for SIGINT, 143 for SIGTERM), 70 an
internal error (a bug; ``--debug`` shows its traceback).  Nothing below the CLI
prints: code raises one of these and ``convcli.cli`` turns it into one line
``convcli: error: <subject>: <reason>`` on stderr and the exit code.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_SOFTWARE = 70  # an internal error (a bug): never expected, reported in one line without --debug


class ConvcliError(Exception):
    """Base error: ``subject`` is the file or parameter the message is about."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str, *, subject: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.subject = subject

    def line(self) -> str:
        """The one-line report, without the ``convcli: error:`` prefix."""
        return f"{self.subject}: {self.message}" if self.subject else self.message


class UsageError(ConvcliError):
    """A parameter, flag or combination that is not allowed (exit 2)."""

    exit_code = EXIT_USAGE


class ParameterError(UsageError, ValueError):
    """A Python-API argument with a bad value; ``subject`` is the parameter name.

    It is also a ``ValueError`` so library users can catch it the usual way.
    """


def check_choice(value, allowed, subject: str):
    """``value`` if it is one of ``allowed``, else a :class:`ParameterError` naming them all (and the closest)."""
    if value not in allowed:
        raise ParameterError(f"must be one of {', '.join(allowed)}, got {shown(value)}{did_you_mean(value, allowed)}",
                             subject=subject)
    return value


def did_you_mean(value, allowed) -> str:
    """``"; did you mean mirror?"`` when one or two of ``allowed`` are close to ``value``, else ``""``."""
    import difflib

    close = difflib.get_close_matches(str(value).lower(), [str(a) for a in allowed], n=2, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def shown(value) -> str:
    """A value as a user typed it: text quoted, a number plain (``nan``, never ``np.float64(nan)``)."""
    if isinstance(value, str):
        return repr(value)
    try:
        return f"{float(value):g}" if not isinstance(value, (bool, int)) else str(value)
    except (TypeError, ValueError):
        return str(value)


class DataError(ConvcliError):
    """An input that cannot be read or processed as data (exit 1)."""


class OutputError(ConvcliError):
    """An output that cannot or must not be written (exit 1)."""


class FormatMismatch(OutputError):
    """An output format that cannot hold this result (an image to ``.wav``): a usage error (exit 2).

    Choosing the output's name is part of the command line, like an unknown
    extension: the same mistake gives the same code whatever the extension.
    """

    exit_code = EXIT_USAGE


class KernelMismatch(UsageError):
    """A kernel that does not fit the input (a 3D kernel on an image): exit 2, typed inline or read from a file."""


class KernelFileError(DataError, UsageError):
    """A kernel file that cannot be read or holds no valid kernel (exit 1).

    The file is data, like any input: a bad one is failed work, while a bad
    ``-k`` value typed on the command line stays a usage error (exit 2).  It
    is also a :class:`UsageError` because it arrives through ``-k``.
    """

    exit_code = EXIT_FAILED


class Interrupted(ConvcliError):
    """The run was stopped by SIGINT/SIGTERM (exit 130); ``signum`` says which signal."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str, *, subject: str | None = None, signum: int = 2) -> None:
        super().__init__(message, subject=subject)
        self.signum = signum


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that every cleanup runs the same way."""
