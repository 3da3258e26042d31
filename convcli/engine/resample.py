"""Resampling as a convolution: up by L, an anti-aliasing low-pass, down by M, computing only the kept samples.

Changing the rate from ``fs`` to ``fs * L / M`` (48000 -> 44100: L = 147,
M = 160) is, on paper, three steps: put L - 1 zeros between samples, filter
with a low-pass that keeps only what both rates can hold, keep every M-th
sample.  Written out, output ``m`` is::

    y[m] = L sum_i h[m M + c - i L] x[i]        (h: N taps, centred at c = (N - 1) / 2)

(h has unit gain at 0 Hz; ``scipy.signal.resample_poly(x, L, M, window=h)`` computes the same).
Output ``m`` sits at time ``m / (fs L / M)``: the filter is linear-phase and
centred, so nothing moves in time, and the output has ``ceil(n L / M)``
samples, zeros taken beyond both ends of the signal.

The outputs repeat their pattern every L samples (a period reads M more
input samples), so a period is one row of input samples times a fixed matrix
``H`` (``W x L``, W the K taps of a phase plus M): the whole signal is a
matrix product of overlapping rows, done by BLAS a group of periods at a
time on every core.  That is the polyphase filter: about W / K times the
multiply-adds a phase needs (1.5 for 48 -> 44.1 kHz), none spent on the
inserted zeros or on dropped samples.

The low-pass is a Kaiser-windowed sinc (:func:`design`): passband to 95 % of
the lower rate's Nyquist frequency, stopband from that Nyquist frequency on,
so nothing aliases into the band the output holds; 120 dB of attenuation by
default (SoX's ``rate -h`` keeps 95 % and rejects 125 dB).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError

PASSBAND = 0.95  # passband edge, a fraction of the lower Nyquist frequency
ATTENUATION = 120.0  # stopband attenuation in dB
# H holds W x L weights; beyond this a ratio of two rates is too awkward (44100 -> 44101) to resample this way.
MAX_MATRIX = 1 << 24
# Bytes of input rows a group of periods holds: near a core's L2 cache with its products.
GROUP_BYTES = 1 << 20


@dataclass(frozen=True)
class Design:
    """An anti-aliasing filter for one rate change, and what it does."""

    rate_in: int
    rate_out: int
    up: int  # L
    down: int  # M
    taps: np.ndarray  # h: N float64 taps at the rate fs * L, centred, unit gain in the passband
    passband: float  # Hz: the response is within `ripple` dB of 1 below this
    stopband: float  # Hz: attenuated by at least `attenuation` dB from here on
    ripple: float  # measured: the largest passband deviation, dB
    attenuation: float  # measured: the smallest stopband attenuation, dB
    beta: float  # the Kaiser window's

    @property
    def phase_taps(self) -> int:
        """Multiply-adds per output sample in the filter itself (N / L)."""
        return -(-self.taps.size // self.up)

    def describe(self) -> dict:
        """The facts ``--explain`` shows."""
        return {"rate_in": self.rate_in, "rate_out": self.rate_out, "up": self.up, "down": self.down,
                "filter_taps": int(self.taps.size), "taps_per_output": self.phase_taps,
                "passband_hz": round(self.passband, 1), "stopband_hz": round(self.stopband, 1),
                "passband_ripple_db": float(f"{self.ripple:.2g}"), "stopband_attenuation_db": round(self.attenuation, 1),
                "window": f"kaiser (beta {self.beta:.2f})"}


def ratio(rate_in: int, rate_out: int) -> tuple[int, int]:
    """``(L, M)``: the rate change as a fraction in lowest terms."""
    g = math.gcd(int(rate_in), int(rate_out))
    return int(rate_out) // g, int(rate_in) // g


def design(rate_in: int, rate_out: int, *, passband: float = PASSBAND, attenuation: float = ATTENUATION) -> Design:
    """The Kaiser-windowed sinc low-pass for resampling ``rate_in`` -> ``rate_out`` Hz.

    The transition band runs from ``passband`` times the lower Nyquist
    frequency to that Nyquist frequency; the length and the window's beta
    follow Kaiser's formulas for ``attenuation`` dB, checked on the designed
    taps (lengthened until the stopband holds).

    >>> d = design(48000, 44100)
    >>> d.up, d.down, d.passband, d.stopband, d.attenuation >= 119.5, d.ripple < 1e-4
    (147, 160, 20947.5, 22050.0, True, True)
    """
    rate_in, rate_out = _rate(rate_in, "rate_in"), _rate(rate_out, "rate")
    up, down = ratio(rate_in, rate_out)
    nyquist = min(rate_in, rate_out) / 2.0
    stop, edge = nyquist, passband * nyquist
    fs = float(rate_in) * up  # the upsampled rate the taps run at
    width = 2 * math.pi * (stop - edge) / fs
    beta = 0.1102 * (attenuation - 8.7) if attenuation > 50 else (
        0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21) if attenuation > 21 else 0.0)
    count = int(math.ceil((attenuation - 8) / (2.285 * width))) | 1
    while True:
        if (count // up + 1 + down) * up > MAX_MATRIX:
            raise ParameterError(
                f"{rate_in} Hz to {rate_out} Hz is a ratio of {up}/{down}: its filter would need "
                f"{count:,} taps in {up} phases; choose a rate with a simpler ratio to {rate_in} Hz",
                subject="--rate")
        taps = _kaiser_sinc(count, (edge + stop) / 2.0, fs, beta)
        ripple, reached = _measure(taps, edge, stop, fs)
        if reached >= attenuation - 0.5 or count > 4 * int((attenuation - 8) / (2.285 * width)):
            break
        count = (int(count * 1.05) + 2) | 1
    return Design(rate_in, rate_out, up, down, taps, edge, stop, ripple, reached, beta)


def _rate(value, name: str) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or value <= 0:
        raise ParameterError(f"must be a positive whole number of samples per second, got {value!r}", subject=name)
    return int(value)


def _kaiser_sinc(count: int, cutoff: float, fs: float, beta: float) -> np.ndarray:
    """``count`` taps of a low-pass at ``cutoff`` Hz for the rate ``fs``, unit gain at 0 Hz."""
    centre = (count - 1) / 2.0
    t = np.arange(count) - centre
    h = (2.0 * cutoff / fs) * np.sinc(2.0 * cutoff / fs * t) * np.kaiser(count, beta)
    return h / h.sum()


def _measure(taps: np.ndarray, edge: float, stop: float, fs: float) -> tuple[float, float]:
    """The passband ripple (dB, largest deviation from 1) and the stopband attenuation (dB, the least)."""
    size = 1 << int(math.ceil(math.log2(max(16 * taps.size, 1 << 16))))
    response = np.abs(np.fft.rfft(taps, size))
    freqs = np.arange(response.size) * (fs / size)
    # The response changes fastest at the band edges, between two bins: those two are computed exactly.
    at = np.exp(-2j * np.pi * np.outer([edge, stop], np.arange(taps.size)) / fs) @ taps
    inside = np.append(response[freqs <= edge], abs(at[0]))
    outside = np.append(response[freqs >= stop], abs(at[1]))
    ripple = float(np.max(np.abs(20 * np.log10(np.maximum(inside, 1e-300)))))
    attenuation = float(-20 * np.log10(max(float(outside.max()), 1e-300)))
    return ripple, attenuation


class Resampler:
    """Resample a signal of known ``length`` that arrives in blocks, by a :class:`Design`.

    Blocks are 1-D, or ``(frames, channels)`` with ``channels`` given.  The
    outputs come in whole groups of periods, each group computed alike
    however the blocks were cut, so the result does not depend on them.

    >>> d = design(2, 3, attenuation=60)
    >>> r = Resampler(d, 4)
    >>> y = np.concatenate([r.push(np.ones(4)), r.finish()])
    >>> y.shape
    (6,)
    """

    def __init__(self, design: Design, length: int, *, channels: int | None = None, dtype=np.float32):
        self.design, self.length, self.channels = design, int(length), channels
        self.dtype = np.dtype(dtype)
        up, down = design.up, design.down
        n = design.taps.size
        centre = (n - 1) // 2
        # Period row j reads input t M + j; it holds taps h[r M + c - j L] for output t L + r.
        self.first = -(centre // up)
        self.width = ((up - 1) * down + centre) // up - self.first + 1
        j = np.arange(self.first, self.first + self.width)[:, None]
        index = np.arange(up)[None, :] * down + centre - j * up
        inside = (index >= 0) & (index < n)
        self.matrix = np.where(inside, design.taps[np.clip(index, 0, n - 1)] * up, 0.0).astype(self.dtype)
        self.out_length = -(-self.length * up // down)
        self.periods = -(-self.out_length // up)
        self.group = max(1, GROUP_BYTES // (self.width * self.dtype.itemsize))
        self.trail = 1 if channels is None else int(channels)
        self.pending: list[np.ndarray] = []
        self.start = 0  # input index of pending[0][0]
        self.received = 0
        self.next_period = 0

    def push(self, block) -> np.ndarray:
        """Take the next samples; return the outputs now final."""
        block = np.asarray(block)
        block = block.reshape(-1, 1) if self.channels is None else block
        if block.ndim != 2 or block.shape[1] != self.trail:
            raise ParameterError(f"must be {'1-D samples' if self.channels is None else f'(frames, {self.trail})'}"
                                 f", got shape {np.shape(block)}", subject="block")
        if self.received + len(block) > self.length:
            raise ParameterError(f"more than the {self.length} samples announced", subject="length")
        if len(block):
            self.pending.append(block)
            self.received += len(block)
        # A group is ready when its last period's row has arrived (rows past the end read zeros).
        ready = self.periods
        if self.received < self.length:
            last = (self.received - self.first - self.width) // self.design.down  # the last period whose row is in
            ready = max(0, (last + 1) // self.group * self.group)
        return self._run(min(ready, self.periods))

    def finish(self) -> np.ndarray:
        """The remaining outputs (a signal that ended early: up to the samples received)."""
        if self.received < self.length:
            self.length = self.received
            self.out_length = -(-self.length * self.design.up // self.design.down)
            self.periods = -(-self.out_length // self.design.up)
        return self._run(self.periods)

    def _run(self, stop: int) -> np.ndarray:
        from ..parallel import blas_limited, map_ordered

        first = self.next_period
        if stop <= first:
            return self._shape(np.empty((0, self.trail), dtype=self.dtype))
        starts = list(range(first, stop, self.group))
        rows = self._rows(first * self.design.down + self.first, (stop - 1) * self.design.down + self.first + self.width)

        def one(start: int) -> np.ndarray:
            count = min(self.group, stop - start)
            lo = (start - first) * self.design.down
            result = np.empty((count, self.design.up, self.trail), dtype=self.dtype)
            stacked = np.empty((count, self.width), dtype=self.dtype)
            for t in range(self.trail):
                line = rows[lo:lo + (count - 1) * self.design.down + self.width, t]
                stacked[...] = np.lib.stride_tricks.as_strided(
                    line, (count, self.width), (self.design.down * line.strides[0], line.strides[0]), writeable=False)
                np.matmul(stacked, self.matrix, out=result[:, :, t])
            return result.reshape(-1, self.trail)

        with blas_limited():
            parts = map_ordered(one, starts, parallel=len(starts) > 1)
        self.next_period = stop
        self._forget(stop * self.design.down + self.first)
        out = np.concatenate(parts) if len(parts) > 1 else parts[0]
        start_out = first * self.design.up
        keep = min(len(out), self.out_length - start_out)
        return self._shape(out[:keep])

    def _rows(self, lo: int, hi: int) -> np.ndarray:
        """Input samples ``lo..hi`` in the compute type, zeros outside the signal."""
        rows = np.zeros((hi - lo, self.trail), dtype=self.dtype)
        at = self.start
        for block in self.pending:
            end = at + len(block)
            a, b = max(lo, at), min(hi, end)
            if b > a:
                np.copyto(rows[a - lo:b - lo], block[a - at:b - at], casting="unsafe")
            at = end
        return rows

    def _forget(self, keep: int) -> None:
        while self.pending and self.start + len(self.pending[0]) <= keep:
            self.start += len(self.pending.pop(0))

    def _shape(self, out: np.ndarray) -> np.ndarray:
        return out[:, 0] if self.channels is None else out


def resample(x, design: Design, *, channel_axis: int | None = None, dtype=None) -> np.ndarray:
    """The whole signal ``x`` resampled by ``design`` (1-D, or frames x channels with ``channel_axis=-1``)."""
    x = np.asarray(x)
    channels = None if channel_axis is None else x.shape[-1]
    dtype = dtype or (np.float64 if x.dtype == np.float64 else np.float32)
    r = Resampler(design, x.shape[0], channels=channels, dtype=dtype)
    return np.concatenate([r.push(x), r.finish()])
