"""Border modes: how a signal is extended past its ends before a kernel is laid over it.

One table, :data:`BORDER_MODES`, feeds the code, the ``--pad-mode`` help
(:func:`help_text`) and the README's table (:func:`markdown_table`; a test
holds the README to it).  Each drawing shows how the samples ``a b c d`` are
extended by three samples on each side.  Padding wider than the signal
repeats the rule, as ``numpy.pad`` does.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParameterError, did_you_mean


@dataclass(frozen=True)
class BorderMode:
    name: str
    numpy_mode: str  # the numpy.pad mode that extends the same way
    drawing: str  # how ``a b c d`` is extended by three samples on each side
    aliases: tuple[str, ...]  # other spellings accepted by --pad-mode and pad_mode=
    elsewhere: str  # what the same rule is called by scipy.ndimage, numpy and OpenCV


BORDER_MODES: tuple[BorderMode, ...] = (
    BorderMode(
        "reflect", "reflect", "d c b | a b c d | c b a",
        ("mirror", "reflect101", "reflect-101", "reflect_101", "border_reflect_101"),
        "scipy `mirror`, numpy `reflect`, OpenCV `BORDER_REFLECT_101`",
    ),
    BorderMode(
        "symmetric", "symmetric", "c b a | a b c d | d c b",
        ("grid-mirror", "half-symmetric", "border_reflect"),
        "scipy `reflect`, numpy `symmetric`, OpenCV `BORDER_REFLECT`",
    ),
    BorderMode(
        "replicate", "edge", "a a a | a b c d | d d d",
        ("nearest", "edge", "clamp", "border_replicate"),
        "scipy `nearest`, numpy `edge`, OpenCV `BORDER_REPLICATE`",
    ),
    BorderMode(
        "circular", "wrap", "b c d | a b c d | a b c",
        ("wrap", "tile", "periodic", "grid-wrap", "border_wrap"),
        "scipy and numpy `wrap`, OpenCV `BORDER_WRAP`",
    ),
    BorderMode(
        "zeros", "constant", "0 0 0 | a b c d | 0 0 0",
        ("zero", "constant", "border_constant"),
        "scipy and numpy `constant`, OpenCV `BORDER_CONSTANT`; `constant:V` pads with the value V",
    ),
)
DEFAULT = "reflect"

_BY_NAME = {m.name: m for m in BORDER_MODES}
_BY_NAME.update({alias: m for m in BORDER_MODES for alias in m.aliases})


def help_text() -> str:
    """The ``--pad-mode`` help: every mode and its drawing.

    >>> help_text().split(";")[0]
    'Border mode: reflect (d c b|a b c d|c b a, the default)'
    """
    modes = "; ".join(f"{m.name} ({m.drawing.replace(' | ', '|')}{', the default' if m.name == DEFAULT else ''})"
                      for m in BORDER_MODES)
    return f"Border mode: {modes}; constant:V. Aliases such as mirror, nearest, edge and wrap: see the README."


def markdown_table() -> str:
    """The README's table of border modes, one row per mode."""
    rows = ["| mode | extension | also accepted as | elsewhere called |", "|---|---|---|---|"]
    for m in BORDER_MODES:
        name = f"`{m.name}`" + (" (default)" if m.name == DEFAULT else "")
        drawing = m.drawing.replace("|", "\\|")
        aliases = ", ".join(f"`{a}`" for a in m.aliases)
        rows.append(f"| {name} | `{drawing}` | {aliases} | {m.elsewhere} |")
    return "\n".join(rows)


def parse_pad_mode(spec: str) -> tuple[BorderMode, float]:
    """Resolve a mode name, alias or ``constant:V`` into (mode, constant value)."""
    if not isinstance(spec, str):
        raise ParameterError(f"must be a border mode name, got {spec!r}", subject="pad_mode")
    text = spec.strip().lower()
    value = 0.0
    if ":" in text:
        head, _, tail = text.partition(":")
        if head not in ("constant", "zeros", "zero"):
            raise ParameterError(f"only 'constant:V' takes a value, got {spec!r}", subject="pad_mode")
        try:
            value = float(tail)
        except ValueError:
            raise ParameterError(f"'constant:V' needs a number for V, got {tail!r}", subject="pad_mode") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ParameterError(f"the constant must be finite, got {tail!r}", subject="pad_mode")
        text = "zeros"
    mode = _BY_NAME.get(text)
    if mode is None:
        allowed = ", ".join(m.name for m in BORDER_MODES)
        hint = did_you_mean(text, [m.name for m in BORDER_MODES] + list(_BY_NAME))
        raise ParameterError(f"unknown border mode {spec!r}; use one of {allowed} or constant:V{hint}",
                             subject="pad_mode")
    return mode, value


def extend_indices(n: int, before: int, after: int, pad_mode: str):
    """Which of ``n`` samples each position of an axis padded by ``before`` and ``after`` reads, and the constant.

    Returns ``(indices, value)``: ``indices[i]`` is the sample that position
    ``i - before`` of the axis takes under the border mode, or -1 where the
    mode pads with the constant ``value``.  For a caller that extends an axis
    it never holds whole (a video's frames, which arrive one by one).

    >>> extend_indices(4, 2, 3, "reflect")[0].tolist()
    [2, 1, 0, 1, 2, 3, 2, 1, 0]
    """
    import numpy as np

    mode, value = parse_pad_mode(pad_mode)
    extra = {"constant_values": -1} if mode.numpy_mode == "constant" else {}
    return np.pad(np.arange(n), (before, after), mode=mode.numpy_mode, **extra), value


def reads_far_end(pad_mode: str) -> bool:
    """Whether the border before an axis's first sample reads its last ones (circular): the whole axis is needed first."""
    return parse_pad_mode(pad_mode)[0].numpy_mode == "wrap"
