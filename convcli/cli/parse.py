"""Text typed on the command line into the typed values the pipeline takes, once.

Only the form is checked here (a number, a comma list); what values are
allowed is checked by the layer that owns them, against its one list.
"""
from __future__ import annotations

from ..errors import ParameterError

PADDING_WORDS = ("same", "valid", "full", "causal")
# Options whose value may be left out, and what they mean alone (click has no optional option values).
OPTIONAL_VALUES = {"--tail": "all"}


def optional_values(args: list[str]) -> list[str]:
    """``args`` with each option of :data:`OPTIONAL_VALUES` not followed by a value written as
    ``--option=<its meaning alone>``.

    A value is a number (a duration starts with a digit), so a file name after the option stays an input:
    ``--tail in.wav`` -> ``--tail=all in.wav``, ``--tail 2s`` stays as it is.
    """
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg in OPTIONAL_VALUES and (i + 1 == len(out) or not out[i + 1][:1].isdigit() and out[i + 1][:1] != "."):
            out[i] = f"{arg}={OPTIONAL_VALUES[arg]}"
    return out


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
    """``same``, ``valid``, ``full``, ``causal``, or samples as :func:`ints`."""
    word = str(text).strip().lower()
    if word in PADDING_WORDS:
        return word
    if not word.replace(",", "").replace(" ", "").isdigit():
        raise ParameterError(
            f"must be same, valid, full, causal, an integer or a comma list of integers, got {text!r}", subject="--padding")
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


def _number(text: str, flag: str, what: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise ParameterError(f"must be {what}, got {text!r}", subject=flag) from None
    if not math.isfinite(value):
        raise ParameterError(f"must be {what}, got {text!r}", subject=flag)
    return value


def duration(text: str | None, flag: str) -> float | None:
    """Seconds from ``2s``, ``500ms``, ``1.5`` (seconds) (None stays None)."""
    if text is None:
        return None
    word = str(text).strip().lower()
    scale = 1.0
    for unit, factor in (("ms", 1e-3), ("sec", 1.0), ("s", 1.0)):
        if word.endswith(unit):
            word, scale = word[:-len(unit)].strip(), factor
            break
    return _number(word, flag, "a duration such as 2s, 500ms or 1.5") * scale


def tail(text: str | None) -> tuple[bool, float | None]:
    """``--tail`` as (kept, seconds at most): absent, alone (``all``: the whole decay) or ``2s``."""
    if text is None:
        return False, None
    if text == OPTIONAL_VALUES["--tail"]:
        return True, None
    try:
        return True, duration(text, "--tail")
    except ParameterError:
        raise ParameterError(f"takes a duration such as 2s or 500ms, or nothing (all the decay), got {text!r}",
                             subject="--tail") from None


def decibels(text: str | None, flag: str) -> float | None:
    """Decibels from ``-6``, ``+3``, ``-1dB``, ``-1 dBFS`` (None stays None)."""
    if text is None:
        return None
    word = str(text).strip().lower()
    for unit in ("dbfs", "db"):
        if word.endswith(unit):
            word = word[:-len(unit)].strip()
            break
    return _number(word, flag, "decibels such as -6, +3 or -1dB")


def share(text: str | None, flag: str) -> float | None:
    """A share from ``0.3`` or ``30%`` (None stays None)."""
    if text is None:
        return None
    word = str(text).strip()
    if word.endswith("%"):
        return _number(word[:-1].strip(), flag, "a share such as 0.3 or 30%") / 100.0
    return _number(word, flag, "a share such as 0.3 or 30%")


def rate(text: str | None, flag: str = "--rate") -> int | None:
    """Samples per second from ``44100``, ``44.1k``, ``48khz`` (None stays None)."""
    if text is None:
        return None
    word = str(text).strip().lower()
    scale = 1.0
    for unit, factor in (("khz", 1e3), ("hz", 1.0), ("k", 1e3)):
        if word.endswith(unit):
            word, scale = word[:-len(unit)].strip(), factor
            break
    value = _number(word, flag, "a sample rate such as 44100 or 44.1k") * scale
    if value != int(value):
        raise ParameterError(f"must be a whole number of samples per second, got {text!r}", subject=flag)
    return int(value)
