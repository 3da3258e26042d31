"""Which values of an image the kernels see (``--colorspace``): stored, linear light, or luma only.

- ``stored`` filters the samples as the file holds them (gamma-encoded for
  almost every photo);
- ``linear`` decodes the transfer curve first (sRGB's, IEC 61966-2-1, or the
  tone curves of the image's ICC profile when it has readable ones), filters
  in linear light and encodes again: a blur then mixes light as light mixes,
  and the edge between two bright colours does not darken;
- ``luma`` filters only the luma Y' = 0.2126 R' + 0.7152 G' + 0.0722 B'
  (BT.709's weights: sRGB has BT.709's primaries) and adds the change to
  every channel, which leaves the colour-difference signals Cb and Cr as they
  were: sharpening without colour fringes.  A grey image is its own luma.

Values are kept in sample units (0..255, 0..65535, 0..1 for float), so
alpha, border constants and range modes mean what they say in every space.
Decoding is odd-symmetric (a negative value decodes to minus its mirror), as
scRGB extends sRGB, so signed kernel responses survive the round trip.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..errors import UsageError

LUMA_WEIGHTS = (0.2126, 0.7152, 0.0722)  # BT.709 (ITU-R BT.709-6, item 3.2)


@dataclass(frozen=True)
class Parametric:
    """An ICC parametric curve (ICC.1:2010 table 65, function types 0-4): encoded X -> linear Y.

    Type 3 with g 2.4, a 1/1.055, b 0.055/1.055, c 1/12.92, d 0.04045 is sRGB's.
    """

    kind: int
    g: float
    a: float = 1.0
    b: float = 0.0
    c: float = 0.0
    d: float = 0.0
    e: float = 0.0
    f: float = 0.0

    def decode(self, x: np.ndarray) -> np.ndarray:
        g, a, b, c, d, e, f = self.g, self.a, self.b, self.c, self.d, self.e, self.f
        if self.kind == 0:
            return np.power(x, g)
        power = np.power(np.maximum(a * x + b, 0.0), g)
        if self.kind == 1:
            return np.where(x >= -b / a, power, 0.0)
        if self.kind == 2:
            return np.where(x >= -b / a, power + c, c)
        if self.kind == 3:
            return np.where(x >= d, power, c * x)
        return np.where(x >= d, power + e, c * x + f)

    def encode(self, y: np.ndarray) -> np.ndarray:
        g, a, b, c, d, e, f = self.g, self.a, self.b, self.c, self.d, self.e, self.f
        if self.kind == 0:
            return np.power(y, 1.0 / g)
        root = lambda v: (np.power(np.maximum(v, 0.0), 1.0 / g) - b) / a  # noqa: E731
        if self.kind == 1:
            return root(y)
        if self.kind == 2:
            return root(y - c)
        knee = (a * d + b) ** g if a * d + b > 0 else 0.0
        if self.kind == 3:
            return np.where(y >= knee, root(y), y / c if c else d)
        return np.where(y >= knee + e, root(y - e), (y - f) / c if c else d)


@dataclass(frozen=True)
class Table:
    """An ICC ``curv`` table: encoded values at equal steps of [0, 1] -> linear, interpolated linearly."""

    values: tuple[float, ...]

    def decode(self, x: np.ndarray) -> np.ndarray:
        grid = np.linspace(0.0, 1.0, len(self.values))
        return np.interp(x, grid, self.values)

    def encode(self, y: np.ndarray) -> np.ndarray:
        # The inverse of a piecewise-linear increasing curve is piecewise linear: exact, not approximated.
        grid = np.linspace(0.0, 1.0, len(self.values))
        return np.interp(y, self.values, grid)


SRGB = Parametric(3, 2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)


def decode(curve, v: np.ndarray) -> np.ndarray:
    """Encoded values (full scale 1) -> linear light, odd-symmetric beyond zero."""
    return np.sign(v) * curve.decode(np.abs(v))


def encode(curve, v: np.ndarray) -> np.ndarray:
    """Linear light -> encoded values (full scale 1), odd-symmetric beyond zero."""
    return np.sign(v) * curve.encode(np.abs(v))


def profile_curves(icc: bytes | None, channels: int) -> tuple[list, str | None]:
    """The tone curve of each colour channel from an ICC profile, and a note when sRGB's is used instead.

    Matrix/TRC profiles (sRGB, Adobe RGB, Display P3, ProPhoto, grey
    profiles) carry one curve per channel (``rTRC gTRC bTRC``, or
    ``kTRC``); a profile built on lookup tables alone, or one that cannot be
    read, falls back to sRGB's curve with a note.
    """
    if not icc:
        return [SRGB] * channels, None
    try:
        curves = _trc_curves(bytes(icc), channels)
    except (struct.error, ValueError, IndexError, ZeroDivisionError, OverflowError):
        curves = None
    if curves is None:
        return [SRGB] * channels, ("linear light: the image's ICC profile has no tone curve convcli reads; "
                                   "sRGB's transfer curve was used")
    return curves, None


_TAGS = {3: (b"rTRC", b"gTRC", b"bTRC"), 1: (b"kTRC",)}
_SPACES = {3: b"RGB ", 1: b"GRAY"}
_PARAMETERS = {0: 1, 1: 3, 2: 4, 3: 5, 4: 7}  # parameters of each parametric function type


def _trc_curves(icc: bytes, channels: int) -> list | None:
    if len(icc) < 132 or icc[36:40] != b"acsp" or icc[16:20] != _SPACES.get(channels):
        return None
    (count,) = struct.unpack_from(">I", icc, 128)
    table = {}
    for i in range(min(count, (len(icc) - 132) // 12)):
        sig, offset, size = struct.unpack_from(">4sII", icc, 132 + 12 * i)
        table[sig] = icc[offset:offset + size]
    if not all(table.get(tag) for tag in _TAGS[channels]):
        return None
    curves = [_curve(table[tag]) for tag in _TAGS[channels]]
    return None if None in curves else curves


def _curve(data: bytes):
    kind = data[:4]
    if kind == b"curv":
        (n,) = struct.unpack_from(">I", data, 8)
        if n == 0:
            return Parametric(0, 1.0)
        if n == 1:
            gamma = struct.unpack_from(">H", data, 12)[0] / 256.0
            return Parametric(0, gamma) if gamma > 0 else None
        values = np.frombuffer(data, ">u2", count=n, offset=12).astype(np.float64) / 65535.0
        return Table(tuple(values)) if np.all(np.diff(values) >= 0) and values[-1] > values[0] else None
    if kind == b"para":
        (function,) = struct.unpack_from(">H", data, 8)
        if function not in _PARAMETERS:
            return None
        params = [v / 65536.0 for v in struct.unpack_from(f">{_PARAMETERS[function]}i", data, 12)]
        curve = Parametric(function, *params)
        usable = curve.g > 0 and (function == 0 or curve.a > 0) and (function < 3 or curve.c >= 0)
        return curve if usable else None
    return None


@dataclass
class Space:
    """An image's colour samples in the values to filter, and the way back (see the module docstring)."""

    name: str  # stored | linear | luma
    colour: int  # colour channels (alpha, if any, follows them)
    full: float  # the value of full scale: 255, 65535, 1.0
    curves: list | None = None  # linear: one tone curve per colour channel
    note: str | None = None
    stacked: bool = True  # the samples have a last axis of channels (a grey image may have none)

    def to_working(self, x: np.ndarray, work) -> np.ndarray:
        """The samples the kernels see: linear colour, or luma (with alpha, if any, after it)."""
        if self.name == "stored":
            return x
        if not self.stacked:
            return self._to_working(x[..., None], work)[..., 0]
        return self._to_working(x, work)

    def _to_working(self, x: np.ndarray, work) -> np.ndarray:
        colour = x[..., :self.colour].astype(work)
        rest = x[..., self.colour:].astype(work)
        if self.name == "linear":
            samples = x[..., :self.colour]
            for c, curve in enumerate(self.curves):
                if samples.dtype.kind == "u" and np.iinfo(samples.dtype).max == self.full:  # each value once
                    table = decode(curve, np.arange(int(self.full) + 1) / self.full) * self.full
                    colour[..., c] = table[samples[..., c]]
                else:
                    colour[..., c] = decode(curve, colour[..., c] / self.full) * self.full
            return np.concatenate([colour, rest], axis=-1) if rest.shape[-1] else colour
        return np.concatenate([luma(colour), rest], axis=-1)

    def from_working(self, filtered: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
        """Filtered working values back to sample values; ``base`` is the colour on the output grid (luma)."""
        if self.name == "stored":
            return filtered
        if not self.stacked:
            return self._from_working(filtered[..., None], base)[..., 0]
        return self._from_working(filtered, base)

    def _from_working(self, filtered: np.ndarray, base: np.ndarray | None) -> np.ndarray:
        if self.name == "linear":
            out = filtered.copy()
            for c, curve in enumerate(self.curves):
                out[..., c] = encode(curve, filtered[..., c] / self.full) * self.full
            return out
        base = base.astype(filtered.dtype, copy=False)
        change = filtered[..., :1] - luma(base)
        return np.concatenate([base + change, filtered[..., 1:]], axis=-1)

    def pad_value(self, value: float) -> float:
        """A border constant given in stored sample units, in working units."""
        if self.name == "linear":
            return float(decode(self.curves[0], np.float64(value) / self.full) * self.full)
        return value


def luma(colour: np.ndarray) -> np.ndarray:
    """BT.709 luma of R'G'B' samples (last axis), kept as a last axis of one channel."""
    r, g, b = LUMA_WEIGHTS
    return (r * colour[..., 0:1] + g * colour[..., 1:2]) + b * colour[..., 2:3]


def colour_space(signal, name: str, alpha: bool) -> Space:
    """How ``--colorspace name`` applies to ``signal``; refuse it for what is not an RGB or grey image."""
    data = signal.data
    channels = 1 if signal.channel_axis is None else data.shape[-1]
    colour = channels - int(alpha)
    dtype = np.dtype(signal.meta.get("dtype") or data.dtype)
    full = float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0
    if name == "stored":
        return Space(name, colour, full)
    if name == "rgb":
        raise UsageError("rgb converts a video's Y, U and V planes to RGB and back; an image is filtered as "
                         "stored (its RGB)", subject="--colorspace")
    if signal.kind != "image":
        raise UsageError(f"{name} applies to images (RGB or grey), and this input is {_a(signal.kind)}",
                         subject="--colorspace")
    if colour not in (1, 3) or signal.meta.get("mode") == "CMYK":
        raise UsageError(f"{name} applies to RGB and grey images, not {signal.meta.get('mode') or colour} channels",
                         subject="--colorspace")
    if dtype.kind in "iu" and dtype.itemsize > 2 or dtype.kind == "i":
        raise UsageError(f"{name} needs 8- or 16-bit or float samples whose full scale is white, "
                         f"not {dtype.name} samples", subject="--colorspace")
    if name == "luma":
        return Space("stored" if colour == 1 else "luma", colour, full)
    curves, note = profile_curves(signal.meta.get("icc_profile"), colour)
    return Space(name, colour, full, curves, note, stacked=signal.channel_axis is not None)


def _a(kind: str) -> str:
    return {"audio": "audio", "volume": "a volume", "signal": "a signal"}.get(kind, kind)
