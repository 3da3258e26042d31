"""Text typed on the command line into the typed values the pipeline takes, once.

Only the form is checked here (a number, a comma list); what values are
allowed is checked by the layer that owns them, against its one list.
"""
from __future__ import annotations

from ..errors import ParameterError

PADDING_WORDS = ("same", "valid", "full")


def ints(text: str, flag: str) -> int | tuple[int, ...]:
    """``"2"`` -> 2, ``"2,1"`` -> (2, 1): one integer for every axis, or one per axis."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ParameterError(f"must be an integer or a comma list of integers (one per axis), got {text!r}",
                             subject=flag) from None
    return values[0] if len(values) == 1 else values


def padding(text: str) -> str | int | tuple[int, ...]:
    """``same``, ``valid``, ``full``, or samples as :func:`ints`."""
    word = str(text).strip().lower()
    if word in PADDING_WORDS:
        return word
    if not word.replace(",", "").replace(" ", "").isdigit():
        raise ParameterError(
            f"must be same, valid, full, an integer or a comma list of integers, got {text!r}", subject="--padding")
    return ints(word, "--padding")


def size(text: str | None, flag: str = "--memory-budget") -> int | None:
    """A byte count such as ``4G``, ``512M`` or ``1000000`` (None stays None: the default)."""
    if text is None:
        return None
    from ..io.limits import parse_size

    return parse_size(text, subject=flag)


def names(text: str | None) -> tuple[str, ...] | None:
    """``"y,x"`` -> ("y", "x"): a comma list of names, lower-cased (None stays None)."""
    if text is None:
        return None
    return tuple(p.strip().lower() for p in str(text).split(","))


_SI = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def bitrate(text: str | None, flag: str = "--bitrate") -> int | None:
    """Bits per second as FFmpeg writes them: ``800k``, ``5M``, ``2500000`` (None stays None)."""
    if text is None:
        return None
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)(?:b(?:it)?/?s|bps)?\s*", str(text))
    if not m or float(m.group(1)) <= 0:
        raise ParameterError(f"must be a positive bit rate such as 800k or 5M, got {text!r}", subject=flag)
    return int(float(m.group(1)) * _SI[m.group(2).lower()])


def seconds(text: str, flag: str) -> float:
    """A time in seconds: ``1s``, ``500ms``, ``2.5`` (seconds)."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?|\.\d+)\s*(s|sec|ms)?\s*", str(text), re.IGNORECASE)
    value = float(m.group(1)) * (1e-3 if (m.group(2) or "").lower() == "ms" else 1.0) if m else 0.0
    if not value > 0:
        raise ParameterError(f"must be a positive time such as 1s or 500ms, got {text!r}", subject=flag)
    return value
