"""Impulse responses: an audio file as a causal kernel, its level, and how its channels meet the input's.

An impulse response ``h`` (a room, a hall, a cabinet, recorded as the
answer to a click) filters by ``out[n] = sum_k h[k] x[n - k]``: its first
sample is time zero, so the reverberation starts at the sound and follows
it.  As a correlation kernel that is ``h`` reversed, with its window ending
at the output sample (the engine's ``causal`` padding).

Level (``--ir-norm``): a recorded response's level is arbitrary (a sum of
-33.6 is common), so by default it is scaled to unit energy, ``sum h^2 =
1``: white noise comes out as loud as it went in, and speech or music about
so.  ``peak`` scales the largest tap to 1 instead, ``none`` keeps the file's
values.  One gain serves all of a response's channels (FFmpeg's ``afir``
links them too), so their balance is kept: the output channel with the most
energy, summed over the input channels that feed it, gets unit energy.

Channels (:data:`LAYOUTS`): a mono response filters every channel; a
response with as many channels as the input filters channel by channel; a
four-channel response on a stereo input is *true stereo*, its channels in
the order L->L, L->R, R->L, R->R (left out = L * h_LL + R * h_RL, right out =
L * h_LR + R * h_RR); a response of N channels on a mono input gives N
channels (mono into a stereo room).  Nothing else has one meaning, so
anything else is refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UsageError

NORMS = ("energy", "peak", "none")
LAYOUTS = ("a mono response on any input", "N channels on N channels, channel by channel",
           "4 channels on stereo: true stereo (L->L, L->R, R->L, R->R)", "N channels on a mono input: N channels out")


@dataclass(frozen=True, eq=False)
class Routing:
    """How a multichannel response's channels meet the input's: passes of one correlation per output channel.

    Each pass correlates, for every output channel ``o``, input channel
    ``inputs[o]`` with response channel ``responses[o]``; the passes add up.
    ``weights`` holds each response channel as a correlation kernel (reversed).
    """

    layout: str
    inputs_count: int
    passes: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    weights: tuple[np.ndarray, ...]

    @property
    def outputs(self) -> int:
        return len(self.passes[0][0])

    def pass_weights(self, index: int) -> np.ndarray:
        """The ``(outputs, k)`` per-channel weights of one pass."""
        return np.stack([self.weights[r] for r in self.passes[index][1]])

    def describe(self) -> dict:
        return {"layout": self.layout, "input_channels": self.inputs_count, "output_channels": self.outputs,
                "response_channels": len(self.weights)}


def read(path, *, subject: str, budget=None) -> tuple[np.ndarray, int]:
    """The response in a WAV/FLAC/... file as ``(channels, taps)`` float64 samples, and its sample rate.

    ``budget`` (a :class:`~convcli.kernels.files.KernelBudget`) bounds the file's size and its samples
    before they are read.
    """
    import soundfile

    from .files import KernelBudget, _check_regular
    from .kernel import MAX_WEIGHTS

    path = Path(str(path))
    if not path.exists():
        raise UsageError("no such impulse-response file", subject=subject)
    budget = budget or KernelBudget()
    _check_regular(path, subject, budget)
    try:
        with soundfile.SoundFile(str(path)) as snd:
            # A lying header must not make us allocate: at most as many frames as
            # the bytes present can hold (even 8-bit samples take one byte).
            frames = min(snd.frames, path.stat().st_size // max(snd.channels, 1))
            if frames <= 0:
                raise UsageError("the impulse response holds no samples", subject=subject)
            if frames * snd.channels > MAX_WEIGHTS:
                raise UsageError(f"an impulse response of {frames:,} samples in {snd.channels} channels is too "
                                 "long for a kernel", subject=subject)
            budget.check_weights(frames * snd.channels, subject, verb="would have")
            rate = snd.samplerate
            data = snd.read(frames=frames, dtype="float64", always_2d=True)
    except (RuntimeError, OSError, ValueError, TypeError, soundfile.LibsndfileError) as exc:
        raise UsageError(f"cannot read the impulse response as audio ({exc})", subject=subject) from None
    if len(data) == 0:
        raise UsageError("the impulse response holds no samples", subject=subject)
    from .kernel import check_weights

    check_weights(data, subject=subject)
    return np.ascontiguousarray(data.T), int(rate)


def matched_rate(h: np.ndarray, rate: int, sample_rate: float | None, *, subject: str) -> tuple[np.ndarray, str | None]:
    """``h`` at the input's rate: resampled (and said) when its file has another.

    A response is a filter of the sound at its own rate; played at another it
    would be another room, so it is resampled as ``--rate`` resamples audio.
    """
    if sample_rate is None or abs(rate - sample_rate) < 1e-6:
        return h, None
    if not float(sample_rate).is_integer():
        raise UsageError(f"the impulse response is sampled at {rate} Hz and the input at {sample_rate:g} Hz, "
                         "which is no whole number to resample it to", subject=subject)
    from ..engine.resample import design, resample

    plan = design(rate, int(sample_rate))
    h = resample(h.T, plan, channel_axis=-1, dtype=np.float64).T
    return np.ascontiguousarray(h), (f"the impulse response {Path(subject).name} was resampled from {rate} Hz to "
                                     f"the input's {sample_rate:g} Hz")


def route(channels: int, inputs: int | None, *, subject: str) -> tuple[str, tuple]:
    """The layout name and passes for a response of ``channels`` on an input of ``inputs`` channels.

    ``inputs`` None (no input known, as in ``kernels show``): channel by channel.

    >>> route(4, 2, subject="hall.wav")
    ('true stereo', (((0, 1), (0, 3)), ((1, 0), (2, 1))))
    """
    if inputs is None:
        inputs = channels
    if channels == 1:
        return "mono", ((tuple(range(inputs)), (0,) * inputs),)
    if channels == inputs:
        return "channel by channel", ((tuple(range(inputs)), tuple(range(inputs))),)
    if channels == 4 and inputs == 2:
        return "true stereo", (((0, 1), (0, 3)), ((1, 0), (2, 1)))
    if inputs == 1:
        return f"mono to {channels} channels", (((0,) * channels, tuple(range(channels))),)
    raise UsageError(f"an impulse response of {channels} channels does not fit an input of {inputs} channels; "
                     f"the layouts are: {'; '.join(LAYOUTS)}", subject=subject)


def gain(h: np.ndarray, passes, norm: str) -> float:
    """The one factor that gives response ``h`` (``(channels, taps)``) the level ``norm`` asks for."""
    if norm == "none":
        return 1.0
    if norm == "peak":
        top = float(np.abs(h).max())
    else:
        energy = (h * h).sum(axis=1)
        outputs = len(passes[0][0])
        top = float(np.sqrt(max(sum(energy[p[1][o]] for p in passes) for o in range(outputs))))
    if top == 0:
        raise UsageError("the impulse response is silent (all its samples are 0): it cannot be normalised; "
                         "use --ir-norm none to apply it as it is", subject="--ir-norm")
    return 1.0 / top


def kernel(spec: str, path, *, sample_rate: float | None, channels: int | None, norm: str, budget=None):
    """The :class:`~convcli.kernels.kernel.Kernel` of an ``ir:`` spec for an input of ``channels`` channels."""
    from ..errors import check_choice
    from .kernel import Kernel

    check_choice(norm, NORMS, "ir_norm")
    subject = str(path)
    h, rate = read(path, subject=subject, budget=budget)
    h, note = matched_rate(h, rate, sample_rate, subject=subject)
    layout, passes = route(h.shape[0], channels, subject=subject)
    h = h * gain(h, passes, norm)
    reversed_ = tuple(np.ascontiguousarray(c[::-1]) for c in h)
    inputs = max(max(p[0]) for p in passes) + 1
    routing = None if layout == "mono" else Routing(layout, inputs, passes, reversed_)
    what = f"impulse response, {layout}" if layout != "mono" else "impulse response"
    level = {"energy": "unit energy", "peak": "peak 1", "none": "as recorded"}[norm]
    return Kernel(spec, f"ir:{Path(subject).name}", (reversed_[0],), description=f"{what} (causal; {level})",
                  causal=True, routing=routing, notes=(note,) if note else ())
