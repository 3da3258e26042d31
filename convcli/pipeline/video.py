"""Filter a video as a stream: decode, filter and encode picture by picture, holding only what the kernels reach.

A clip is a volume of (time, height, width) samples that never exists whole.
Each kernel of the chain is a :class:`Stage` over the stream of pictures: it
keeps the frames its window reaches (and the few its border rule reads back
at the ends) and emits an output frame as soon as those have arrived.  A
kernel over (t, y, x) is applied as a sum of terms, each a weighted sum of
the window's frames (:func:`convcli.engine.weighted_sum`) filtered by a 2-D
kernel (:func:`convcli.engine.correlate`): the SVD of the kernel unfolded
along time gives the fewest terms (one for a Gaussian, a box or sobel-z).
Border modes act in time as in space, the first and last frames being the
array's edges; the circular mode needs the clip's end before its start, so
the clip is then decoded once more, first, for its last frames.

Planes are filtered as stored (:mod:`convcli.io.video`): luma, chroma, RGB or
alpha, each at its own resolution with the same kernel in samples.  Chroma
is a difference from neutral grey (128; 512 at 10 bits): it is filtered as
such, so a smoothing kernel gives what filtering the stored samples gives,
and an edge kernel gives no colour where the colour does not change.
``--range`` applies to the other planes.

Decoding, filtering and encoding overlap: the decoder runs ahead in a
thread of its own, the encoder behind in another (:func:`convcli.parallel.stream_ahead`,
:func:`convcli.parallel.stream_behind`), with a few pictures queued between them.
Nothing here prints: progress goes to a callback.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from ..errors import DataError, UsageError
from .options import FilterOptions

DECODE_AHEAD = 4  # pictures the decoder may have ready before the filter takes them
ENCODE_BEHIND = 3  # filtered pictures that may wait for the encoder
VIDEO_AXES = (("y", "x"), ("t", "y", "x"))
_TIME_UNIT = re.compile(r"\d\s*(?:s|sec|ms|us|µs)\b", re.IGNORECASE)


@dataclass
class VideoRun:
    """What filtering a video did: frames in and out, picture sizes, the plan of every kernel, what to report."""

    input_shape: tuple[int, int, int]  # frames, height, width (of the luma plane)
    output_shape: tuple[int, int, int]
    steps: list[dict]
    clipped: int = 0
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- kernels on a video
def video_kernels(options: FilterOptions, rate: float) -> tuple[list, int]:
    """The chain's kernels over a video, each with weights over (t, y, x), and the geometry's dimension.

    The dimension is 2 when every kernel filters frame by frame and the
    geometry's per-axis values are for (y, x); 3 when they are for (t, y, x).

    With ``--axes`` the dimension is given.  Otherwise each kernel is built
    in 2-D if it can be (``gaussian:sigma=2``, ``sobel``), else in 3-D
    (three values, ``sobel-z``, a 3-D file); the chain is 3-D if any kernel
    or any per-axis geometry value has three axes, and a 2-D kernel in a
    3-D chain filters frame by frame.  A time (``sigma=40ms``) counts frames
    at the clip's rate, on the first axis only.
    """
    from ..kernels import Kernel, resolve

    axes = options.axes
    if axes is not None and tuple(axes) not in VIDEO_AXES:
        raise UsageError(f"a video's axes are t,y,x or y,x, not {','.join(axes)}", subject="--axes")
    forced = len(axes) if axes is not None else None
    kernels = []
    for spec in options.kernels:
        if forced is not None:
            kernels.append(resolve(spec, ndim=forced, sample_rate=rate if forced == 3 else None,
                                   normalize=options.normalize))
            continue
        try:
            kernels.append(resolve(spec, ndim=2, normalize=options.normalize))
        except UsageError as flat:
            try:
                kernels.append(resolve(spec, ndim=3, sample_rate=rate, normalize=options.normalize))
            except UsageError as deep:
                raise deep if _TIME_UNIT.search(spec) else flat from None
    operator = next((k for k in kernels if k.operator is not None), None)
    if operator is not None:
        # Its weights are a footprint: summing frames with them would be a different filter, silently.
        raise UsageError(f"a video is filtered with weighted kernels; {operator.spec} is a "
                         f"{operator.operator.kind} filter, which is not run over frames", subject="--kernel")
    geometry = options.geometry
    per_axis = [len(v) for v in (geometry.stride, geometry.padding, geometry.dilation) if isinstance(v, tuple)]
    ndim = forced or (3 if any(k.ndim == 3 for k in kernels) or 3 in per_axis else 2)
    # Every kernel over (t, y, x): a 2-D one has a single tap in time.
    kernels = [k if k.ndim == 3 else Kernel(k.spec, k.name, tuple(w[None] for w in k.weights), k.combine,
                                            k.range_default, k.description) for k in kernels]
    return kernels, ndim


@dataclass(frozen=True)
class TimeAxis:
    """How one kernel lies along the frames: taps, stride, dilation and padding (a word or frames)."""

    taps: int
    stride: int
    dilation: int
    padding: str | int

    @property
    def span(self) -> int:
        return self.dilation * (self.taps - 1) + 1

    def plan(self, frames: int):
        """The engine's plan of the time axis for a clip of ``frames`` frames."""
        from ..engine import plan_axes

        return plan_axes((frames,), (self.taps,), stride=self.stride, padding=self.padding,
                         dilation=self.dilation)[0]

    @property
    def needs_length(self) -> bool:
        """Whether where the first window starts depends on the clip's length (same padding with a stride)."""
        return self.padding == "same" and self.stride > 1 and self.span > 1

    def before(self, frames: int | None) -> int:
        """Frames of padding before the first (``frames``, the clip's length, is needed when ``needs_length``)."""
        if self.needs_length:
            return self.plan(frames).before
        if isinstance(self.padding, int):
            return self.padding
        return {"valid": 0, "full": self.span - 1, "same": (self.span - 1) // 2}[self.padding]

    @property
    def reach_after(self) -> int:
        """The most frames of padding after the last one (the frames the end's border reads back)."""
        return self.padding if isinstance(self.padding, int) else {"valid": 0}.get(self.padding, self.span - 1)


def _time_axis(kernel, options: FilterOptions, ndim: int, last: bool) -> tuple[TimeAxis, dict]:
    """The kernel's time axis and the engine's arguments for its (y, x) part."""
    from ..engine import per_axis

    geometry = options.geometry
    strides = geometry.strides(ndim) if last else (1,) * ndim
    dilations = geometry.dilations(ndim)
    padding = geometry.padding
    if isinstance(padding, str):
        time_padding, spatial_padding = padding, padding
    else:
        values = per_axis(padding, ndim, "padding", minimum=0)
        time_padding, spatial_padding = (values[0], values[1:]) if ndim == 3 else ("valid", values)
    if ndim == 3:
        time = TimeAxis(kernel.shape[0], strides[0], dilations[0], time_padding)
    else:
        time = TimeAxis(1, 1, 1, "valid")  # frame by frame
    spatial = {"stride": strides[-2:], "padding": spatial_padding, "dilation": dilations[-2:],
               "pad_mode": geometry.pad_mode or kernel.border, "method": options.method,
               "precision": options.precision}
    return time, spatial


def split_in_time(weights):
    """(time weights, 2-D kernel) terms summing to the 3-D ``weights``, the cheaper of two splits.

    By the SVD of the kernel unfolded along time: as many terms as its rank,
    each a weighted sum of the window's frames filtered once in 2-D (one term
    for a Gaussian, a box, sobel-z).  Or slice by slice: each frame filtered
    by its own slice, straight from its stored samples, and the responses
    added (a random 3x3x3 kernel: three 2-D filters instead of three sums of
    three frames and three filters).
    """
    import numpy as np

    kt = weights.shape[0]
    if kt == 1:
        return [(np.ones(1), weights[0])]
    if weights.shape[1:] == (1, 1):
        return [(weights[:, 0, 0].copy(), np.ones((1, 1)))]
    unfolded = weights.reshape(kt, -1)
    u, s, vt = np.linalg.svd(unfolded, full_matrices=False)
    keep = s > s[0] * 1e-10 if s[0] > 0 else s > 0
    by_rank = [(u[:, r] * s[r], vt[r].reshape(weights.shape[1:])) for r in range(len(s)) if keep[r]]
    by_slice = [(np.eye(kt)[m], weights[m]) for m in range(kt) if np.any(weights[m])]
    if not by_rank:
        return [(np.zeros(kt), np.zeros(weights.shape[1:]))]
    return min(by_rank, by_slice, key=_passes)


def _split_words(terms) -> str:
    """How a split runs, for --explain."""
    import numpy as np

    if all(np.count_nonzero(a) == 1 and a.max() == 1 for a, _ in terms):
        return f"{len(terms)} frames, each filtered by its own slice"
    if len(terms) == 1:
        return "a weighted sum of the frames, filtered in 2-D"
    return f"{len(terms)} weighted sums of the frames, each filtered in 2-D"


def _passes(terms) -> float:
    """What a split costs per output sample, in passes over a plane: sums of frames, 2-D filters, additions.

    A 2-D filter counts as four passes (OpenCV's, on a cache-sized band); a
    weighted sum of n frames as 2n - 1; a single frame of weight 1 as none.
    """
    total = 0.0
    for time_weights, spatial in terms:
        nonzero = [w for w in time_weights if w != 0]
        total += 0 if len(nonzero) == 1 and nonzero[0] == 1 else 2 * len(nonzero) - 1
        total += 4 if spatial.shape != (1, 1) else 1
    return total + len(terms) - 1


# --------------------------------------------------------------------------- one kernel over the stream
@dataclass(frozen=True)
class PlaneRule:
    """How a stage treats one plane: filtered, or only moved onto the output grid; chroma's neutral sample."""

    filtered: bool
    neutral: int  # subtracted before filtering and added back after (chroma), else 0


class Stage:
    """One kernel of the chain over a stream of pictures (see the module docstring).

    ``frames`` is the clip's length when it must be known before the first
    output (same padding with a time stride); ``wrap`` holds the clip's last
    pictures for the circular border.  ``tail`` collects the packets of the
    copied streams that came with pictures after its last output.
    """

    def __init__(self, kernel, time: TimeAxis, spatial: dict, rules: tuple[PlaneRule, ...], shapes, *,
                 convolve: bool, frames: int | None = None, wrap: dict | None = None) -> None:
        import numpy as np

        weights = [np.flip(w) if convolve else w for w in kernel.weights]
        self.kernel, self.time, self.spatial, self.rules = kernel, time, spatial, rules
        self.shapes = [tuple(shape) for shape in shapes]  # of the input planes
        self.weights = weights
        self.terms = [split_in_time(w) for w in weights]
        self.dtype = np.float64 if spatial["precision"] == "float64" else np.float32
        self.frames = frames
        self.wrap = wrap or {}
        self.before = time.before(frames)
        self.tail: list = []
        self._grid_tap = np.zeros(kernel.shape[1:])
        self._grid_tap[tuple((k - 1) // 2 for k in kernel.shape[1:])] = 1.0
        _, self.border_value = _extend(1, 0, 0, spatial["pad_mode"])
        self.constant_border = _extend(1, 1, 0, spatial["pad_mode"])[0][0] == -1
        self.pad_mode = spatial["pad_mode"]
        if self.border_value:
            self.spatial = dict(spatial, pad_mode="zeros")  # see _response: the constant is taken out first

    # ----------------------------------------------------------------- the stream
    def run(self, upstream):
        """The output pictures, each as soon as the frames its window reaches have arrived."""
        held: dict = {}
        times: list[int] = []
        pending: list = []
        j = 0
        for picture in upstream:
            held[len(times)] = picture
            times.append(picture.pts)
            pending.extend(picture.carried)
            while self._ready(j, len(times)):
                yield self._output(j, held, times, pending, None)
                pending = []
                j += 1
                self._forget(held, j, len(times))
        count = len(times)
        if count == 0:
            return
        # A clip that decodes to fewer frames than were counted (a corrupt packet) keeps the windows
        # already placed: only how many outputs remain comes from its true length.
        plan = self.time.plan(count)
        past = max(0, self._positions(plan.out - 1)[-1] - (count - 1))
        index, _ = _extend(count, self.before, past, self.pad_mode)
        while j < plan.out:
            yield self._output(j, held, times, pending, index)
            pending = []
            j += 1
        self.tail = pending

    def _positions(self, j: int) -> list[int]:
        t = self.time
        start = j * t.stride - self.before
        return [start + m * t.dilation for m in range(t.taps)]

    def _ready(self, j: int, received: int) -> bool:
        """Whether output ``j`` can be made before the clip's end is known."""
        for p in self._positions(j):
            if p >= received:
                return False
            if p < 0 and not self.constant_border and not self.wrap and -p >= received:
                return False  # the border reads back a frame not yet here
        return True

    def _forget(self, held: dict, j: int, received: int) -> None:
        """Let go of frames no later window reads (keeping the last few for the border at the clip's end)."""
        lowest = j * self.time.stride - self.before
        if lowest <= 0:
            return
        keep_from = min(lowest, received - self.time.reach_after - 1)
        # The circular border reads the first frames again after the last.
        head = max(self.time.span, self.time.reach_after + 1) if self.wrap else 0
        for i in [i for i in held if head <= i < keep_from]:
            del held[i]

    def _window(self, j: int, held: dict, ended) -> list:
        """The pictures of output ``j``'s window (None where the border is a constant).

        ``ended`` is the border's index over the whole clip once its length is
        known; before that a position before the start reads back a frame
        already here (``_ready`` made sure of it).
        """
        frames = []
        for p in self._positions(j):
            if ended is not None:
                i = int(ended[p + self.before])
            elif p >= 0:
                i = p
            elif self.wrap:
                i = self.frames + p
            elif self.constant_border:
                i = -1
            else:
                i = _extend(max(-p + 1, 2), -p, 0, self.pad_mode)[0][0]
            frames.append(None if i < 0 else held[i] if i in held else self.wrap[i])
        return frames

    def _output(self, j: int, held: dict, times: list[int], carried: list, ended):
        from ..io.video import Picture

        window = self._window(j, held, ended)
        planes = [self._plane(k, window, rule) for k, rule in enumerate(self.rules)]
        centre = j * self.time.stride - self.before + (self.time.span - 1) // 2
        return Picture(planes, _timestamp(times, centre), list(carried))

    # ----------------------------------------------------------------- one plane
    def _plane(self, k: int, window: list, rule: PlaneRule):
        if not rule.filtered:
            return self._on_grid(k, window, rule)
        responses = (self._response(k, window, rule, w, terms) for w, terms in zip(self.weights, self.terms))
        result = self.kernel.combined(responses)
        if rule.neutral:
            result += rule.neutral
        return result

    def _response(self, k: int, window: list, rule: PlaneRule, weights, terms):
        """One weight array's response on plane ``k``, in the filtered domain (chroma centred on 0).

        A constant border V is made zero first (every sample less V, the
        response plus V times the weights' sum): the time taps sum frames
        before the 2-D part pads them, and the padding of a sum of frames is
        not V but V times their weights.
        """
        from ..engine import weighted_sum

        shift = rule.neutral + self.border_value
        total = None
        for time_weights, spatial in terms:
            frames = [(f.planes[k], w) for f, w in zip(window, time_weights) if f is not None and w != 0]
            offset = -shift * sum(w for _, w in frames)
            if len(frames) == 1 and frames[0][1] == 1 and offset == 0:
                summed = frames[0][0]  # one frame as it is: an integer plane goes to the engine unconverted
            elif frames:
                summed = weighted_sum([a for a, _ in frames], [w for _, w in frames], dtype=self.dtype)
                if offset:
                    summed += self.dtype(offset)
            else:
                summed = self._constant(self.shapes[k], 0.0)
            response = self._spatial(summed, spatial)
            if total is None:
                total = response
            else:
                total += response
        if self.border_value:
            total += self.dtype(self.border_value * float(weights.sum()))
        return total

    def _spatial(self, x, spatial_kernel):
        """The 2-D part of a term on ``x``: always a new array of the compute type (``x`` may be a held frame)."""
        import numpy as np

        from ..engine import correlate, plan_axes

        if spatial_kernel.shape == (1, 1):
            plans = plan_axes(x.shape, (1, 1), stride=self.spatial["stride"], padding=self.spatial["padding"],
                              dilation=self.spatial["dilation"])
            if all(p.stride == 1 and p.out == p.length and p.before == 0 for p in plans):
                return np.multiply(x, self.dtype(spatial_kernel[0, 0]), dtype=self.dtype)
        return correlate(x, spatial_kernel, **self.spatial)

    def _on_grid(self, k: int, window: list, rule: PlaneRule):
        """Plane ``k`` unfiltered, on the output grid: the window's centre frame, sampled at the kernel's centre."""
        from ..engine import correlate, plan_axes

        frame = window[(self.time.taps - 1) // 2]
        if frame is None:
            return self._constant(self.shapes[k], self.border_value + rule.neutral)
        x = frame.planes[k]
        plans = plan_axes(x.shape, self._grid_tap.shape, stride=self.spatial["stride"],
                          padding=self.spatial["padding"], dilation=self.spatial["dilation"])
        if all(p.stride == 1 and p.out == p.length for p in plans):
            return x  # the same grid: kept exactly, samples unconverted
        # Stored samples, not centred: a constant border is the constant's stored value.
        pad_mode = f"constant:{self.border_value + rule.neutral}" if self.constant_border else self.pad_mode
        return correlate(x, self._grid_tap, **dict(self.spatial, pad_mode=pad_mode, method="direct"))

    def _constant(self, shape, value: float):
        import numpy as np

        return np.full(shape, value, dtype=self.dtype)


def _extend(n: int, before: int, after: int, pad_mode: str):
    from ..engine import extend_indices

    return extend_indices(n, before, after, pad_mode)


def _timestamp(times: list[int], position: int) -> int:
    """The pts of frame ``position``; outside the clip, one step of the nearest frame interval per frame."""
    n = len(times)
    if 0 <= position < n:
        return times[position]
    if n == 1:
        step = 1
    elif position < 0:
        step = times[1] - times[0]
    else:
        step = times[-1] - times[-2]
    edge = 0 if position < 0 else n - 1
    return times[edge] + (position - edge) * max(step, 1)


# --------------------------------------------------------------------------- the use case
def filter_video(source, dest: str, options: FilterOptions, *,
                 on_progress: Callable[[int, int | None], None] | None = None) -> VideoRun:
    """Filter the video ``source`` (a path, ``-`` or an opened Source) into ``dest``, streamed; raise a ConvcliError.

    ``on_progress(frames_done, frames_expected)`` is called as filtered
    frames go to the encoder (``frames_expected`` None when the container
    does not say).  Problems the clip itself has (a corrupt packet, a file
    cut short) are notes of the result, or failures with ``fail_fast``.
    """
    from ..io.detect import detect
    from ..io.files import Source
    from ..io.limits import Limits
    from ..io.video import VideoReader

    _refuse(options)
    limits = Limits(options.max_pixels, options.memory_budget)
    src = source if isinstance(source, Source) else Source.open_input(source, max_bytes=limits.memory_budget)
    fmt = detect(src)
    out_fmt = _output_format(dest, options, fmt)
    work = "rgb" if options.colorspace == "rgb" else "stored"
    with VideoReader(src, fmt, limits=limits, work=work, fail_fast=options.video.fail_fast) as reader:
        setup = _Setup.make(reader, src, options, out_fmt, work)
        return setup.run(dest, on_progress)


def explain_video(source, options: FilterOptions) -> list[dict]:
    """The plan of every kernel over the video ``source``: nothing is decoded beyond its first picture."""
    from ..io.detect import detect
    from ..io.files import Source
    from ..io.limits import Limits
    from ..io.video import VideoReader

    limits = Limits(options.max_pixels, options.memory_budget)
    src = source if isinstance(source, Source) else Source.open_input(source, max_bytes=limits.memory_budget)
    work = "rgb" if options.colorspace == "rgb" else "stored"
    with VideoReader(src, detect(src), limits=limits, work=work) as reader:
        kernels, ndim = video_kernels(options, float(reader.info.rate))
        return _steps(reader, kernels, ndim, options, _frames_needed(reader, src, kernels, ndim, options))


def _frames_needed(reader, source, kernels, ndim: int, options: FilterOptions) -> int | None:
    """The clip's frame count: counted from its packets when where a window starts depends on it (a header's
    count may include skipped frames), else as the container says."""
    from ..io.video import count_frames

    last = len(kernels) - 1
    if any(_time_axis(k, options, ndim, i == last)[0].needs_length for i, k in enumerate(kernels)):
        return count_frames(source)
    return reader.expected_frames


def _refuse(options: FilterOptions) -> None:
    """Options that have no meaning for a stream of frames."""
    if options.kind is not None:
        raise UsageError(f"a video is read as a video, not as {options.kind}", subject="--kind")
    if options.range == "rescale":
        raise UsageError("rescale needs the whole clip's range before its first frame is written; a video is "
                         "streamed (use clip, abs or offset)", subject="--range")
    given = options.audio.given()
    if given:
        raise UsageError("shapes a sound; a video's audio is copied packet for packet", subject=given[0])
    if options.alpha != "auto":
        raise UsageError("a video's alpha plane (yuva420p, ProRes 4444) is filtered like its other planes; --alpha "
                         "modes are for images", subject="--alpha")
    if options.colorspace == "linear":
        raise UsageError("linear applies to images; a video takes stored, luma or rgb", subject="--colorspace")
    if options.depth is not None:
        raise UsageError("a video's sample type is its pixel format: use --pix-fmt (yuv420p10le, ...)",
                         subject="--depth")
    if options.quality is not None:
        raise UsageError("a video's quality is set by --crf or --bitrate", subject="--quality")


def _output_format(dest: str, options: FilterOptions, fmt: str) -> str:
    from .. import io
    from ..io.formats import family_of

    out_fmt = io.output_format(dest, options.out_format) or fmt
    if family_of(out_fmt) != "video":
        raise UsageError(f"a filtered video is written as a video (mp4, mov, mkv, webm, avi), not {out_fmt}",
                         subject=dest if options.out_format is None else "--format")
    return out_fmt


def _steps(reader, kernels, ndim: int, options: FilterOptions, frames: int | None) -> list[dict]:
    """The plan of each kernel: padding per axis, the luma plane's shape in and out, the 2-D method, the time taps."""
    from ..engine import make_plan

    _load_compiled()
    shape = (frames, reader.info.height, reader.info.width)
    precision = options.precision or "float32"
    steps = []
    for i, kernel in enumerate(kernels):
        time, spatial = _time_axis(kernel, options, ndim, last=i == len(kernels) - 1)
        terms = split_in_time(kernel.weights[0] if not options.convolve else kernel.weights[0][::-1, ::-1, ::-1])
        plan = make_plan(shape[1:], terms[0][1], x_dtype=precision, **spatial)
        t_plan = time.plan(shape[0]) if shape[0] else None
        padding = [list(p) for p in plan.padding()]
        padding.insert(0, [t_plan.before, t_plan.after] if t_plan else [time.before(None), time.reach_after])
        out = (t_plan.out if t_plan else None,) + tuple(plan.output_shape)
        reach = f"; over time, {time.taps} taps: {_split_words(terms)}" if time.taps > 1 else ""
        steps.append({"kernel": kernel.describe(), "axes": ["t", "y", "x"], "padding": padding,
                      "stride": [time.stride] + [p.stride for p in plan.axes], "input_shape": list(shape),
                      "output_shape": list(out), "methods": [plan.method], "precision": precision,
                      "colorspace": options.colorspace, "why": plan.choice.reason() + reach})
        shape = out
    return steps


def _load_compiled() -> None:
    """Import OpenCV now, where it is installed: a clip is hundreds of calls of the same plan.

    The cost model charges OpenCV's import (25 ms) to the call that would
    import it, and plans are kept by what is imported: unloaded, a 1080p
    frame's plan picked numpy's separable passes (114 ms a frame against
    OpenCV's 10) and kept them for the whole clip.
    """
    from ..engine import compiled

    if compiled.available():
        compiled._cv2()


@dataclass
class _Setup:
    """Everything decided before the first picture is filtered: stages, output plan, memory, expected frames."""

    reader: object
    source: object
    options: FilterOptions
    out_fmt: str
    work: str
    kernels: list
    ndim: int
    stages: list
    plan: object  # convcli.io.video.OutputPlan
    steps: list
    total: int | None  # output frames expected
    notes: list

    @classmethod
    def make(cls, reader, source, options: FilterOptions, out_fmt: str, work: str) -> "_Setup":
        from ..io.video import Encoding, plan_output, plane_layout

        info = reader.info
        kernels, ndim = video_kernels(options, float(info.rate))
        if work == "stored" and options.colorspace == "luma" and any(p.role == "rgb" for p in info.planes):
            raise UsageError(f"luma is a YUV video's Y plane; this video stores RGB ({info.pix_fmt}): use "
                             "--colorspace stored or rgb", subject="--colorspace")
        encoding = Encoding(codec=options.video.codec, crf=options.video.crf, bitrate=options.video.bitrate,
                            pix_fmt=options.video.pix_fmt)
        # The output's picture size: the luma plane through every kernel (chroma follows it, or is refused).
        shape = (info.height, info.width)
        time_stride = 1
        for i, kernel in enumerate(kernels):
            time, spatial = _time_axis(kernel, options, ndim, last=i == len(kernels) - 1)
            shape = _plane_out(shape, kernel, spatial)
            time_stride *= time.stride
        rate = info.rate / time_stride
        plan = plan_output(info, encoding, out_fmt, width=shape[1], height=shape[0], rate=rate, work=work)
        if plan.work_fmt != info.work_fmt:
            reader.use_format(plan.work_fmt)  # the planes the output holds (--pix-fmt yuv444p, gray, ...)
        info = reader.info
        expected = reader.expected_frames
        frames = _frames_needed(reader, source, kernels, ndim, options)
        stages = build_stages(kernels, ndim, options, info.planes, frames=frames,
                              last_pictures=lambda count: _last_pictures(reader, source, count))
        total = expected
        for stage in stages:
            total = stage.time.plan(total).out if total else None
        wanted = plane_layout(plan.work_fmt, plan.width, plan.height)
        for stage_shape, out in zip(_final_shapes(info, kernels, options, ndim), wanted):
            if stage_shape != (out.height, out.width):
                raise UsageError(
                    f"the {info.work_fmt} chroma planes, half the size of the picture, cannot follow the picture's "
                    f"size under this padding ({info.height}x{info.width} -> {plan.height}x{plan.width}); use "
                    "--padding same, or a format without subsampled chroma (--pix-fmt yuv444p)", subject="--padding")
        _check_memory(stages, info, options)
        steps = _steps(reader, kernels, ndim, options, frames)
        return cls(reader, source, options, out_fmt, work, kernels, ndim, stages, plan, steps, total,
                   list(plan.notes))

    def run(self, dest: str, on_progress) -> VideoRun:
        from ..io.video import open_writer

        info = self.reader.info
        with open_writer(dest, self.reader, self.plan, self.out_fmt, work=self.work) as writer:
            encoded = _Encoder(writer, self.options.range or self.kernels[-1].range_default)
            done = _stream(self.reader, self.stages, encoded, on_progress, self.total)
            notes = self.notes + [n for n in writer.notes if n not in self.notes]
        decoded = self.reader.decoded
        steps = self.steps
        steps[0]["input_shape"][0] = decoded
        notes = list(self.reader.problems) + notes
        return VideoRun((decoded, info.height, info.width), (done, self.plan.height, self.plan.width), steps,
                        encoded.clipped, notes)


def build_stages(kernels, ndim: int, options: FilterOptions, planes, *, frames: int | None = None,
                 last_pictures=None) -> list[Stage]:
    """One :class:`Stage` per kernel of the chain, for pictures of these planes (:class:`convcli.io.video.Plane`).

    ``frames`` is the clip's length where it must be known first (same
    padding with a time stride; the circular border); ``last_pictures(count)``
    gives ``(frames, {index: picture})``, the clip's length and its last
    pictures, for the circular border in time.  Chain them with
    :func:`run_stages`.
    """
    from ..engine import reads_far_end

    shapes = [(p.height, p.width) for p in planes]
    stages, count = [], frames
    for i, kernel in enumerate(kernels):
        time, spatial = _time_axis(kernel, options, ndim, last=i == len(kernels) - 1)
        wrap = None
        if reads_far_end(spatial["pad_mode"]) and (time.span > 1 or time.reach_after):
            if i > 0:
                raise UsageError("the circular border in time reads the clip's end before its start; only the "
                                 "first kernel of a chain may reach across frames with it", subject="--pad-mode")
            count, wrap = last_pictures(time.reach_after)
        stage = Stage(kernel, time, spatial, _rules(planes, kernel, options), shapes, convolve=options.convolve,
                      frames=count, wrap=wrap)
        stages.append(stage)
        shapes = [_plane_out(s, kernel, spatial) for s in shapes]
        count = time.plan(count).out if count else None
    return stages


def run_stages(stages, pictures):
    """The pictures out of the last stage, each stage fed by the one before (nothing runs until iterated)."""
    for stage in stages:
        pictures = stage.run(pictures)
    return pictures


def _last_pictures(reader, source, count: int | None):
    """Decode the clip once for its length and its last ``count`` pictures (the circular border's start)."""
    import collections

    from ..io.video import VideoReader

    with VideoReader(source, reader.fmt, limits=reader.limits, work=reader.work) as first:
        if first.info.work_fmt != reader.info.work_fmt:
            first.use_format(reader.info.work_fmt)
        last = collections.deque(maxlen=max(1, count))
        frames = 0
        for picture in first.pictures():
            last.append(picture)
            frames += 1
    picture_list = list(last)
    return frames, {frames - len(picture_list) + i: p for i, p in enumerate(picture_list)}


def _plane_out(shape, kernel, spatial: dict) -> tuple[int, int]:
    from ..engine import plan_axes

    plans = plan_axes(shape, kernel.shape[-2:], stride=spatial["stride"], padding=spatial["padding"],
                      dilation=spatial["dilation"])
    return tuple(p.out for p in plans)


def _final_shapes(info, kernels, options: FilterOptions, ndim: int) -> list[tuple[int, int]]:
    shapes = [(p.height, p.width) for p in info.planes]
    for i, kernel in enumerate(kernels):
        _, spatial = _time_axis(kernel, options, ndim, last=i == len(kernels) - 1)
        shapes = [_plane_out(s, kernel, spatial) for s in shapes]
    return shapes


def _rules(planes, kernel, options: FilterOptions) -> tuple[PlaneRule, ...]:
    """Per plane: filtered or not (``--colorspace luma`` moves chroma onto the grid only), and chroma's neutral.

    A kernel of one weight array summing to 1 gives on stored chroma what it
    gives on chroma centred on neutral, unless the border pads a constant:
    such chroma is filtered as stored, straight from its integer samples.
    """
    import numpy as np

    from ..engine import extend_indices

    constant = extend_indices(1, 1, 0, options.geometry.pad_mode or kernel.border)[0][0] == -1
    unit_sum = len(kernel.weights) == 1 and abs(float(np.sum(kernel.weights[0])) - 1.0) < 1e-9
    rules = []
    for plane in planes:
        filtered = options.colorspace != "luma" or plane.role in ("luma", "rgb")
        centred = plane.role == "chroma" and not (unit_sum and not constant and filtered)
        rules.append(PlaneRule(filtered, plane.neutral if centred else 0))
    return tuple(rules)


def _check_memory(stages, info, options: FilterOptions) -> None:
    """Refuse a chain whose windows of frames would not fit the memory budget."""
    from .. import io

    stored = sum(p.width * p.height * (1 if p.dtype == "uint8" else 2) for p in info.planes)
    floats = sum(p.width * p.height for p in info.planes) * (8 if options.precision == "float64" else 4)
    need = DECODE_AHEAD * stored + ENCODE_BEHIND * floats
    for i, stage in enumerate(stages):
        held = stage.time.span + stage.time.reach_after + 2 + len(stage.wrap)
        need += held * (stored if i == 0 else floats) + 2 * floats
    budget = io.memory_budget(options.memory_budget)
    if need > budget:
        raise DataError(f"the kernels hold frames of {info.width}x{info.height} worth {io.human_size(need)} at once, "
                        f"over the memory budget of {io.human_size(budget)} (raise it with --memory-budget)",
                        subject="--memory-budget")


class _Encoder:
    """The encoder thread's work: a filtered picture's planes to samples, encoded, and its carried packets copied."""

    def __init__(self, writer, range_mode: str) -> None:
        self.writer, self.range_mode = writer, range_mode
        self.clipped = 0

    def __call__(self, item) -> None:
        from ..io.video import Picture
        from ..parallel import floats_as_data

        if not isinstance(item, Picture):
            self.writer.copy(item)  # the packets after the last picture
            return
        with floats_as_data():
            samples = [self._samples(x, plane) for x, plane in zip(item.planes, self.writer.layout)]
        self.writer.encode(samples, item.pts)
        self.writer.copy(item.carried)

    def _samples(self, x, plane):
        import numpy as np

        from ..io.samples import to_samples

        if x.dtype == np.dtype(plane.dtype):
            return x
        # Chroma comes back centred on neutral already: clip it; --range shapes the other planes.
        mode = "clip" if plane.role == "chroma" else self.range_mode
        samples, clipped = to_samples(x, plane.dtype, mode, bits=plane.bits)
        self.clipped += clipped
        return samples


def _stream(reader, stages, encoder: _Encoder, on_progress, total: int | None) -> int:
    """Decode ahead, filter here, encode behind; return the frames written."""
    from ..parallel import floats_as_data, stream_ahead, stream_behind

    pictures = stream_ahead(reader.pictures(), depth=DECODE_AHEAD, name="decode")
    sink = stream_behind(encoder, depth=ENCODE_BEHIND, name="encode")
    done = 0
    try:
        stream = run_stages(stages, pictures)
        with floats_as_data():
            for picture in stream:
                sink.put(picture)
                done += 1
                if on_progress is not None:
                    on_progress(done, total)
        sink.put([p for stage in reversed(stages) for p in stage.tail] + list(reader.tail))
        sink.close()
    except BaseException:
        sink.abort()
        raise
    finally:
        pictures.close()
    return done
