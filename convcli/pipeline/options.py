"""What a command asks for, as typed values.

The command line turns its text into these once (``"2,1"`` into ``(2, 1)``,
``"4G"`` into bytes); everything below takes them as they are.  Each value
is checked against the one list of what is allowed, kept by the layer that
owns it: border modes and methods by the engine, range modes, kinds and
sizes by ``io``, transparency modes, colour spaces and axis names here.  A bad value raises a
:class:`~convcli.errors.ParameterError` naming the parameter.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParameterError, check_choice, shown

ALPHA_MODES = ("auto", "premultiply", "keep", "channel")
# The values filtered: as stored (a video's Y, U and V each at its own resolution), linear light
# (images), luma only, or a video's planes converted to RGB and back.
COLORSPACES = ("stored", "linear", "luma", "rgb")
AXIS_NAMES = ("x", "y", "z", "t")  # last, second-to-last, third-to-last spatial axis; frames


@dataclass(frozen=True)
class Geometry:
    """How every kernel of a chain is laid over the samples.

    Per-axis values are one int for every spatial axis or a tuple of one per
    axis; the engine checks them against the input's axes.
    """

    stride: int | tuple[int, ...] = 1  # step between outputs; applied once, by the last kernel of a chain
    padding: str | int | tuple[int, ...] = "same"  # same | valid | full | samples per axis; every kernel
    dilation: int | tuple[int, ...] = 1  # spacing between taps; every kernel
    # A border mode, an alias or constant:V (see convcli.engine.BORDER_MODES); None: each kernel's own,
    # reflect, or zeros for an impulse response (silence before the sound and after it).
    pad_mode: str | None = None

    def step(self, last: bool) -> dict:
        """The engine's keyword arguments for one kernel of the chain (stride only at the ``last``)."""
        return {"stride": self.stride if last else 1, "padding": self.padding, "pad_mode": self.pad_mode,
                "dilation": self.dilation}

    def strides(self, ndim: int) -> tuple[int, ...]:
        """The stride of each of ``ndim`` spatial axes."""
        from ..engine import per_axis

        return per_axis(self.stride, ndim, "stride", minimum=1)

    def dilations(self, ndim: int) -> tuple[int, ...]:
        from ..engine import per_axis

        return per_axis(self.dilation, ndim, "dilation", minimum=1)

    def reversed_axes(self, ndim: int) -> "Geometry":
        """The same geometry for the transpose of the input (its axes in reverse order)."""
        from ..engine import per_axis

        padding = self.padding if isinstance(self.padding, str) else per_axis(self.padding, ndim, "padding",
                                                                                minimum=0)[::-1]
        return Geometry(self.strides(ndim)[::-1], padding, self.dilations(ndim)[::-1], self.pad_mode)


@dataclass(frozen=True)
class VideoOptions:
    """How a filtered video is encoded (None keeps the input's choice) and how damage in it is treated."""

    codec: str | None = None  # h264, hevc, vp9, av1, ffv1, prores, mjpeg, or an FFmpeg encoder name
    crf: int | None = None  # constant quality (lower is better); None: the encoder's usual default
    bitrate: int | None = None  # bits per second instead of constant quality
    pix_fmt: str | None = None  # the pixel format written: yuv420p, yuv444p, yuv420p10le, gray, ...
    fail_fast: bool = False  # a corrupt packet or a clip cut short fails the file instead of being noted

    def __post_init__(self) -> None:
        if self.crf is not None and (isinstance(self.crf, bool) or not isinstance(self.crf, int) or self.crf < 0):
            raise ParameterError(f"must be a whole number from 0, got {self.crf!r}", subject="crf")
        if self.bitrate is not None and (isinstance(self.bitrate, bool) or not isinstance(self.bitrate, int)
                                         or self.bitrate <= 0):
            raise ParameterError(f"must be a positive number of bits per second, got {self.bitrate!r}",
                                 subject="bitrate")


@dataclass(frozen=True)
class AudioOptions:
    """What ``convcli filter`` does to the length, level and rate of audio (audio inputs only; see :mod:`.audio`)."""

    tail: bool = False  # the input plus the kernels' decay (n + k - 1 samples for an impulse response of k)
    tail_max: float | None = None  # seconds of decay kept at most (implies tail); the cut is faded out
    fade: float | None = None  # seconds of fade-out at the output's end; None: FADE when tail_max cuts the decay
    mix: float = 1.0  # the filtered (wet) share, 0..1: out = (1 - mix) input + mix filtered
    gain: float = 0.0  # dB applied to the result
    normalize_peak: float | None = None  # dBFS the result's largest sample is set to (at most 0)
    ir_norm: str = "energy"  # the level of ir: kernels, one of convcli.kernels.impulse.NORMS
    rate: int | None = None  # resample the result to this many samples per second

    FADE = 0.05  # seconds: a cut decay fades out over this much, so the cut never clicks

    def __post_init__(self) -> None:
        from ..kernels.impulse import NORMS

        check_choice(self.ir_norm, NORMS, "ir_norm")
        _check_number(self.mix, "mix", 0.0, 1.0)
        _check_number(self.gain, "gain", -200.0, 200.0)
        if self.normalize_peak is not None:
            _check_number(self.normalize_peak, "normalize_peak", -200.0, 0.0)
        for name in ("tail_max", "fade"):
            if getattr(self, name) is not None:
                _check_number(getattr(self, name), name, 0.0, 1e7)
        if self.rate is not None and (isinstance(self.rate, bool) or not isinstance(self.rate, int)
                                      or not 1 <= self.rate <= 10_000_000):
            raise ParameterError(f"must be a whole number of samples per second, 1..10000000, got {self.rate!r}",
                                 subject="rate")
        if self.tail_max is not None:
            object.__setattr__(self, "tail", True)
        if self.gain != 0.0 and self.normalize_peak is not None:
            raise ParameterError("and --gain both set the level; give one", subject="normalize_peak")

    def given(self) -> list[str]:
        """The options set away from their defaults, as flags (audio-only options on another input are refused)."""
        flags = {"tail": "--tail", "tail_max": "--tail DURATION", "fade": "--fade", "mix": "--mix", "gain": "--gain",
                 "normalize_peak": "--normalize-peak", "ir_norm": "--ir-norm", "rate": "--rate"}
        default = AudioOptions()
        return [flag for name, flag in flags.items() if getattr(self, name) != getattr(default, name)]


def _check_number(value, name: str, low: float, high: float) -> None:
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ParameterError(f"must be a number from {low:g} to {high:g}, got {value!r}", subject=name)


@dataclass(frozen=True)
class FilterOptions:
    """What to do to every input of ``convcli filter``."""

    kernels: tuple[str, ...]  # -k specs, applied in order
    geometry: Geometry = Geometry()
    convolve: bool = False  # flip the kernels (mathematical convolution)
    method: str = "auto"  # a strategy of convcli.engine.METHODS
    precision: str | None = None  # float32 | float64; None: float64 for float64 input, else float32
    normalize: bool = False  # divide a custom kernel by its sum
    out_format: str | None = None  # output format name; None: from the output's extension
    compress_level: int | None = None  # zlib level 0-9 for PNG/TIFF/npz/FLAC outputs; None: the writer's default
    depth: str | None = None  # output sample type, one of convcli.io.samples.DEPTHS; None: the input's
    quality: int | None = None  # 1-100 for JPEG/WebP outputs; None: a JPEG input's own, else 90
    kind: str | None = None  # audio | image | volume | signal; None: from the file's content
    alpha: str = "auto"  # one of ALPHA_MODES; auto: premultiply a smoothing chain, else keep alpha
    colorspace: str = "stored"  # one of COLORSPACES: the values filtered (stored, linear light, luma only, rgb)
    axes: tuple[str, ...] | None = None  # the AXIS_NAMES the kernels run along; None: every spatial axis
    range: str | None = None  # clip | abs | offset | rescale; None: the last kernel's range_default
    auto_orient: bool = True  # apply the EXIF orientation of photos
    max_pixels: int | None = None  # None: Pillow's bomb threshold
    memory_budget: int | None = None  # bytes; None: half the available memory
    key: str | None = None  # the array of a .npz archive
    in_place: bool = False  # allow the output to be the input file
    video: VideoOptions = VideoOptions()  # how a video is encoded
    audio: AudioOptions = AudioOptions()  # tail, mix, gain, peak level, impulse-response level, rate
    scheduler: str | None = None  # a Dask scheduler's address (tcp://host:8786) for chunked work; None: local threads
    resume: bool = False  # complete a chunked output's partial store (out.zarr.partial) instead of refusing it

    def __post_init__(self) -> None:
        from ..io import KINDS, check_compress_level, check_quality
        from ..io.limits import Limits
        from ..io.samples import RANGE_MODES, check_depth

        if not self.kernels and self.audio.rate is None:
            raise ParameterError("give at least one kernel (or --rate to resample audio)", subject="kernel")
        check_choice(self.alpha, ALPHA_MODES, "alpha")
        check_choice(self.colorspace, COLORSPACES, "colorspace")
        if self.axes is not None:
            check_axes(self.axes)
        if self.range is not None:
            check_choice(self.range, RANGE_MODES, "range")
        if self.precision is not None:
            check_choice(self.precision, ("float32", "float64"), "precision")
        if self.kind is not None:
            check_choice(self.kind, KINDS, "kind")
        check_compress_level(self.compress_level)
        check_quality(self.quality)
        object.__setattr__(self, "depth", check_depth(self.depth))
        Limits(self.max_pixels, self.memory_budget)  # refuses a size that is not positive


def check_axes(axes) -> tuple[str, ...]:
    """``axes`` if it names distinct axes of ``AXIS_NAMES``, else a :class:`ParameterError`."""
    if not isinstance(axes, tuple) or not axes:
        raise ParameterError(f"name at least one axis ({', '.join(AXIS_NAMES)}), got {axes!r}", subject="axes")
    for name in axes:
        check_choice(name, AXIS_NAMES, "axes")
    if len(set(axes)) != len(axes):
        raise ParameterError(f"names an axis twice: {','.join(axes)}", subject="axes")
    return axes


@dataclass(frozen=True)
class ClassifyOptions:
    """What ``convcli classify`` computes for each image."""

    top: int = 5  # predictions reported per image, highest probability first
    cam: str | None = None  # where to write the class-activation map (PNG), or None
    max_pixels: int | None = None  # larger images are refused before decoding; None: Pillow's bomb threshold
    every: float = 1.0  # a video: seconds between the frames classified, from the first

    def __post_init__(self) -> None:
        if isinstance(self.top, bool) or not isinstance(self.top, int) or not 1 <= self.top <= 1000:
            raise ParameterError(f"must be a whole number from 1 to 1000, got {shown(self.top)}", subject="top")
        if not (isinstance(self.every, (int, float)) and self.every > 0 and self.every < float("inf")):
            raise ParameterError(f"must be a positive time, got {shown(self.every)}", subject="every")


@dataclass(frozen=True)
class BatchOptions:
    """How a batch of files runs."""

    workers: int = 1  # worker processes
    skip_existing: bool = False  # skip inputs whose output exists
    fail_fast: bool = False  # stop at the first failure
    scheduler: str | None = None  # a Dask scheduler's address: the files run on its cluster, not in local workers

    def __post_init__(self) -> None:
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1:
            raise ParameterError(f"must be at least 1, got {shown(self.workers)}", subject="jobs")
