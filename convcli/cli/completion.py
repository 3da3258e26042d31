"""Shell completion: the values of every option with a fixed set, and ``--show-completion SHELL``.

Each list is imported from the module that owns it when the shell asks, so
completing costs nothing at start-up and never drifts from what is accepted.
"""
from __future__ import annotations

from typing import Callable, List

SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")


def _values(load: Callable[[], object]) -> Callable[[str], List[str]]:
    def complete(incomplete: str) -> List[str]:
        return [v for v in load() if v.startswith(incomplete)]
    return complete


def _methods():
    from ..engine.strategies import METHODS

    return METHODS


def _ranges():
    from ..io.samples import RANGE_MODES

    return RANGE_MODES


def _alphas():
    from ..pipeline.options import ALPHA_MODES

    return ALPHA_MODES


def _colorspaces():
    from ..pipeline.options import COLORSPACES

    return COLORSPACES


def _border_modes():
    from ..engine.borders import BORDER_MODES

    return [m.name for m in BORDER_MODES] + ["constant:"]


def _formats():
    from ..io.formats import _BY_FORMAT_NAME

    return sorted(name for name in _BY_FORMAT_NAME if "-" not in name)


def _kinds():
    from ..io import KINDS

    return KINDS


complete_method = _values(_methods)
complete_range = _values(_ranges)
complete_alpha = _values(_alphas)
complete_colorspace = _values(_colorspaces)
complete_pad_mode = _values(_border_modes)
complete_format = _values(_formats)
complete_kind = _values(_kinds)


def shown_completion(args: list[str]) -> str | None:
    """The completion script for ``--show-completion SHELL`` (or ``=SHELL``) in ``args``, else None.

    Typer's own flag takes no value and guesses the shell, so ``--show-completion
    zsh`` printed the bash script from a bash prompt.
    """
    from ..errors import UsageError

    shell = None
    for i, arg in enumerate(args):
        if arg.startswith("--show-completion="):
            shell = arg.split("=", 1)[1]
        elif arg == "--show-completion" and i + 1 < len(args) and not args[i + 1].startswith("-"):
            shell = args[i + 1]
    if shell is None:
        return None
    if shell not in SHELLS:
        from ..errors import did_you_mean

        raise UsageError(f"unknown shell {shell!r}; one of {', '.join(SHELLS)}{did_you_mean(shell, SHELLS)}",
                         subject="--show-completion")
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name="convcli", complete_var="_CONVCLI_COMPLETE", shell=shell)
