"""The ``-k`` spec grammar: what kind of spec it is, its name and parameters, and their values.

``NAME``, ``NAME:VALUE`` (the first parameter), ``NAME:key=value,key=value``;
a value may be a comma list (``sigma=2,2,0.5``: the bare numbers after a
``key=`` belong to it).  Numbers may carry units: lengths ``5ms`` (needs a
sample rate) or ``1.5mm`` (needs a voxel spacing); frequencies ``2k``,
``2khz``, ``2000`` (Hz).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from .files import ALL_EXTS, is_imagemagick


@dataclass
class NamedSpec:
    """A parsed ``NAME:params`` spec."""

    name: str
    positional: list[str] = field(default_factory=list)
    keywords: dict[str, list[str]] = field(default_factory=dict)

    @property
    def has_params(self) -> bool:
        return bool(self.positional or self.keywords)


def classify(spec: str) -> str:
    """One of ``inline``, ``imagemagick``, ``ir``, ``file``, ``named``."""
    s = spec.strip()
    if s.startswith("["):
        return "inline"
    if is_imagemagick(s):
        return "imagemagick"
    if s.startswith("ir:"):
        return "ir"
    if s.startswith("file:"):
        return "file"
    name, sep, rest = s.partition(":")
    if sep and _NAME.match(name.strip()) and "=" in rest:
        return "named"  # erode:footprint=masks/cross.txt names a file as a parameter
    if "/" in s or "\\" in s or Path(s).suffix.lower() in ALL_EXTS:
        return "file"
    return "named"


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.+-]*$")


def parse_named(spec: str) -> NamedSpec:
    """Split ``NAME:params`` into the name, positional values and ``key=value`` lists."""
    s = spec.strip()
    name, sep, rest = s.partition(":")
    name = name.strip()
    if not _NAME.match(name):
        raise UsageError(
            "not a kernel name, file or matrix (names look like 'gaussian:sigma=2'; "
            "files need an extension or a path; matrices start with '[')",
            subject=spec,
        )
    parsed = NamedSpec(name)
    if not sep:
        return parsed
    if not rest.strip():
        raise UsageError(f"nothing after '{name}:'; give a value or key=value parameters", subject=spec)
    current: list[str] | None = None
    for token in rest.split(","):
        token = token.strip()
        if not token:
            raise UsageError("an empty parameter (two commas in a row, or a trailing comma)", subject=spec)
        if "=" in token:
            key, _, value = token.partition("=")
            key, value = key.strip().lower(), value.strip()
            if not key or not value:
                raise UsageError(f"'{token}' is not key=value", subject=spec)
            if key in parsed.keywords:
                raise UsageError(f"{key} is given twice", subject=spec)
            current = parsed.keywords[key] = [value]
        elif current is None:
            parsed.positional.append(token)
        else:
            current.append(token)  # sigma=2,2,0.5: later bare values extend the last key
    return parsed


# ---------------------------------------------------------------- values

_NUMBER = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([A-Za-zµ]*)\s*$")
TIME_UNITS = {"s": 1.0, "sec": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
DISTANCE_UNITS = {"mm": 1.0, "um": 1e-3, "µm": 1e-3, "nm": 1e-6, "cm": 10.0, "m": 1000.0}  # voxel spacing is in mm
SAMPLE_UNITS = {"": 1.0, "px": 1.0, "samples": 1.0, "sample": 1.0, "vox": 1.0, "voxels": 1.0}
FREQ_UNITS = {"": 1.0, "hz": 1.0, "k": 1e3, "khz": 1e3, "mhz": 1e6}


def split_unit(text: str, *, param: str, spec: str) -> tuple[float, str]:
    """``"1.5mm"`` -> ``(1.5, "mm")``; a plain number has the unit ``""``."""
    m = _NUMBER.match(text)
    if not m:
        raise UsageError(f"{param}={text} is not a number", subject=spec)
    return float(m.group(1)), m.group(2).lower()


def parse_float(text: str, *, param: str, spec: str) -> float:
    value, unit = split_unit(text, param=param, spec=spec)
    if unit:
        raise UsageError(f"{param}={text}: {param} is a plain number, without a unit", subject=spec)
    return value


def parse_int(text: str, *, param: str, spec: str) -> int:
    value = parse_float(text, param=param, spec=spec)
    if value != int(value):
        raise UsageError(f"{param}={text}: {param} must be a whole number", subject=spec)
    return int(value)


def parse_frequency(text: str, *, param: str, spec: str) -> float:
    """A frequency in Hz from ``2000``, ``2k``, ``2khz``, ``2kHz``, ``440hz``."""
    value, unit = split_unit(text, param=param, spec=spec)
    if unit not in FREQ_UNITS:
        raise UsageError(f"{param}={text}: a frequency is written 2000, 2k or 2khz", subject=spec)
    return value * FREQ_UNITS[unit]


def length_in_samples(
    text: str,
    *,
    axis: int,
    param: str,
    spec: str,
    sample_rate: float | None,
    spacing: tuple[float, ...] | None,
) -> float:
    """A length along ``axis`` in samples: plain numbers are samples, ``5ms`` uses the
    sample rate (of the first axis: audio's samples, a video's frames), ``1.5mm`` the
    voxel spacing of that axis."""
    value, unit = split_unit(text, param=param, spec=spec)
    if unit in SAMPLE_UNITS:
        return value * SAMPLE_UNITS[unit]
    if unit in TIME_UNITS:
        if not sample_rate:
            raise UsageError(
                f"{param}={text} is a time, but this input has no sample rate; give {param} in samples",
                subject=spec,
            )
        if axis != 0:
            # The rate counts samples along the first axis only: audio's one axis, a video's frames.
            raise UsageError(
                f"{param}={text} is a time, but axis {axis} is not: only the first axis (a video's frames) is "
                f"timed; give one value per axis, e.g. {param}={text},2,2",
                subject=spec,
            )
        return value * TIME_UNITS[unit] * sample_rate
    if unit in DISTANCE_UNITS:
        if not spacing:
            raise UsageError(
                f"{param}={text} is a distance, but this input has no voxel/pixel spacing; "
                f"give {param} in samples",
                subject=spec,
            )
        return value * DISTANCE_UNITS[unit] / spacing[axis]
    units = ", ".join(sorted({*TIME_UNITS, *DISTANCE_UNITS} - {"µs", "µm", "sec"}))
    raise UsageError(f"{param}={text}: unknown unit {unit!r} (use samples or one of {units})", subject=spec)
