"""The guard every command runs before it writes: an output must never replace an input by accident."""
from __future__ import annotations

import os

from ..errors import OutputError

REPLACE_ADVICE = "is the input file; choose another output, or pass --in-place to replace the input"


def refuse_input_as_output(source: str, dest: str, in_place: bool = False, *, advice: str = REPLACE_ADVICE,
                           error: type = OutputError) -> None:
    """Refuse an output that is the input file (also through a symlink, a hard link or ``./``) unless `in_place`.

    Raises ``error(advice)`` naming the output.
    """
    if str(source) == "-" or dest is None or str(dest) == "-" or in_place:
        return
    try:
        same = os.path.exists(dest) and os.path.samefile(source, dest)
    except OSError:
        same = False
    if same:
        raise error(advice, subject=str(dest))
