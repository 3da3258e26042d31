"""Filter a sound: the chain of kernels, the dry/wet mix, the level, the tail and the rate, a block at a time.

Every audio input goes through here.  Its samples are taken a block at a
time, from memory or, over the memory budget, straight from the file
(``Signal.blocks``), and the result goes to the writer a block at a time:
a ten-hour recording is filtered in the memory of a few blocks.  The two
give the same file bit for bit: the kernels run as :class:`convcli.engine.stream.Stream`
(the numbers of one engine call on the whole signal, however the blocks are
cut) and everything after them is sample by sample.

After the kernels (the *wet* signal, aligned with the input: stride 1 and
``same`` or ``causal`` padding, or ``--tail``), in this order:

1. ``--mix``: ``(1 - mix) * input + mix * wet``; 0 gives the input back
   exactly, 1 (the default) the wet signal alone;
2. ``--gain``: times ``10 ** (dB / 20)``;
3. ``--tail DURATION``: the decay kept at most that long, the cut faded out
   (``--fade``);
4. ``--rate``: resampled (:mod:`convcli.engine.resample`);
5. ``--range abs``: rectified;
6. ``--normalize-peak`` (and ``--range rescale``, which is
   ``--normalize-peak 0``): scaled so that the largest sample is that many
   dB below full scale.  That needs the whole result first: one pass to
   measure, one to write (the result is kept in memory between the two
   when it fits, else computed again).

A rank filter or a pool (``median:5``), and a circular border, need the
whole signal: they run on it in memory, as for any other input, and the
steps above follow, a block at a time.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from ..errors import DataError, ParameterError, UsageError
from .chain import compute_precision, filter_signal, kernel_args
from .options import FilterOptions

# Frames taken from the input at a time.
BLOCK_FRAMES = 1 << 20


# ---------------------------------------------------------------------------- the plan
@dataclass
class Plan:
    """Everything decided about one sound before a sample is read."""

    signal: object
    kernels: list
    options: FilterOptions
    precision: str
    blockwise: bool  # the kernels run in blocks (weighted kernels, no circular border)
    stages: list = field(default_factory=list)  # (kernel, engine keywords, frames in, channels in) per kernel
    steps: list = field(default_factory=list)  # one step per kernel, as Chain.plan gives them
    frames: int = 0  # frames after the kernels (with their tail)
    kept: int = 0  # frames after --tail DURATION
    channels: int = 1  # channels after the kernels
    stride: int = 1
    design: object = None  # the resampler's, or None
    fade: int = 0  # frames faded out at the end
    notes: list = field(default_factory=list)

    @property
    def rate_in(self) -> float:
        return float(self.signal.sample_rate)

    @property
    def rate(self) -> float:
        """The output's sample rate."""
        return float(self.design.rate_out) if self.design is not None else self.rate_in / self.stride

    @property
    def output_frames(self) -> int:
        if self.design is None:
            return self.kept
        return -(-self.kept * self.design.up // self.design.down)

    @property
    def levelled(self) -> float | None:
        """The peak in dBFS the result is scaled to, or None."""
        audio = self.options.audio
        if audio.normalize_peak is not None:
            return audio.normalize_peak
        return 0.0 if self.options.range == "rescale" else None


def is_sound(signal) -> bool:
    """Whether a signal is a sound this module filters: audio with a sample rate (an audio file)."""
    return signal.kind == "audio" and bool(signal.sample_rate)


def channels_of(signal) -> int:
    return 1 if signal.channel_axis is None else int(signal.data.shape[-1])


def plan(signal, options: FilterOptions, kernels=None) -> Plan:
    """Decide the kernels' geometry and methods, the lengths, channels, rate and level for ``signal``."""
    audio = options.audio
    geometry = options.geometry
    if audio.rate is not None and geometry.strides(1) != (1,):
        raise ParameterError("and --stride both change the sample rate; give one (--rate filters before it "
                             "drops samples)", subject="rate")
    if options.range == "offset":
        raise ParameterError("offset adds half the range to every sample: on audio, which is signed and centred "
                             "on 0, that is a DC offset; use clip (the default) or abs", subject="range")
    if options.colorspace != "stored":
        from .colour import colour_space

        colour_space(signal, options.colorspace, False)  # refuses, naming what the input is
    if options.axes is not None:
        from .axes import axes_of

        axes_of(signal, options.axes)  # a sound has one axis, x
    p = Plan(signal, [], options, compute_precision(signal, options), True)
    frames, channels = int(signal.data.shape[0]), channels_of(signal)
    for i, spec in enumerate(options.kernels):
        # Each kernel meets the channels the one before it gave (mono into a stereo room, then a stereo one).
        kernel = kernels[i] if kernels is not None else _resolve(spec, signal, options, channels)
        p.kernels.append(kernel)
        last = i == len(options.kernels) - 1
        args = dict(geometry.step(last), precision=p.precision)
        try:
            args = kernel_args(kernel, args, (frames,), tail=audio.tail)
        except ParameterError as exc:
            raise ParameterError(exc.message, subject="tail") from None
        step, out_frames, out_channels = _step(kernel, args, frames, channels, signal.data.dtype if i == 0 else
                                              p.precision, options, p.precision)
        p.stages.append((kernel, args, frames, channels))
        p.steps.append(step)
        frames, channels = out_frames, out_channels
    from ..engine.stream import STREAM_METHODS

    # A method that does not stream (--method opencv) runs on the whole signal, where it fits in memory.
    forced = options.method not in ("auto",) + STREAM_METHODS and not signal.streamed
    p.blockwise = all(k.operator is None for k in p.kernels) and not _circular(geometry.pad_mode or "reflect") \
        and not forced
    p.notes = [note for k in p.kernels for note in k.notes]
    p.stride = math.prod(step["stride"][0] for step in p.steps)  # a pool's own stride counts too
    p.frames, p.channels = frames, channels
    if audio.mix != 1.0:
        _check_aligned(p)
    p.kept, p.fade = _tail(p)
    if audio.rate is not None:
        p.design = _design(p)
    if p.stride > 1:
        note = _aliasing(p)
        if note:
            p.notes.append(note)
    return p


def _resolve(spec: str, signal, options: FilterOptions, channels: int):
    from ..kernels import resolve

    return resolve(spec, ndim=1, sample_rate=signal.sample_rate, normalize=options.normalize, channels=channels,
                   ir_norm=options.audio.ir_norm)


def _circular(pad_mode: str) -> bool:
    from ..engine import BORDER_MODES

    head = str(pad_mode).strip().lower().partition(":")[0]
    return any(head == m.name or head in m.aliases for m in BORDER_MODES if m.numpy_mode == "wrap")


def _step(kernel, args: dict, frames: int, channels: int, dtype, options: FilterOptions, precision: str):
    """The plan of one kernel (as Chain.plan describes it), its output frames and channels."""
    import numpy as np

    from ..engine import make_plan

    routing = kernel.routing
    if routing is not None and channels != routing.inputs_count:
        raise UsageError(f"this impulse response ({routing.layout}) takes {routing.inputs_count} channel"
                         f"{'s' if routing.inputs_count != 1 else ''}, the input has {channels}", subject=kernel.spec)
    out_channels = routing.outputs if routing is not None else channels
    shape = (frames, out_channels)
    weights = routing.pass_weights(0) if routing is not None else kernel.weights[0]
    engine = dict(args, channel_axis=-1, method=options.method, spatial_ndim=1)
    if kernel.operator is not None:
        op = kernel.plan(shape, np.dtype(dtype), convolve=options.convolve, **engine)
        methods, why, padding, stride, out_shape = [op.method], op.reason(), op.padding(), [a.stride for a in op.axes], \
            op.output_shape
    else:
        made = make_plan(shape, weights, x_dtype=np.dtype(dtype), **engine)
        methods, why, padding = [made.method], made.choice.reason(), made.padding()
        stride, out_shape = [made.axes[0].stride], made.output_shape
    step = {"kernel": kernel.describe(), "axes": ["x"], "padding": [list(pp) for pp in padding], "stride": stride,
            "input_shape": [frames] + ([channels] if channels > 1 else []),
            "output_shape": [out_shape[0]] + ([out_channels] if out_channels > 1 else []),
            "methods": methods, "precision": precision, "why": why}
    return step, int(out_shape[0]), out_channels


def _check_aligned(p: Plan) -> None:
    """--mix adds the input to the result sample by sample: the result must lie on the input's grid."""
    from ..engine import plan_axes

    for (kernel, args, frames, _), step in zip(p.stages, p.steps):
        if step["stride"] != [1]:
            raise ParameterError("adds the input to the result sample by sample, which --stride moves off the "
                                 "input's grid; resample with --rate instead", subject="mix")
        before = step["padding"][0][0]
        grid = {plan_axes((frames,), kernel.shape, padding=word, dilation=args.get("dilation", 1))[0].before
                for word in ("same", "causal")}
        if before not in grid:
            raise ParameterError("adds the input to the result sample by sample: it needs --padding same or causal "
                                 "(or --tail), which keep the result on the input's grid", subject="mix")


def _tail(p: Plan) -> tuple[int, int]:
    """The frames kept after ``--tail DURATION`` and the frames faded out at the end."""
    audio = p.options.audio
    rate = p.rate_in / p.stride
    kept = p.frames
    cut = False
    if audio.tail_max is not None:
        bare = -(-int(p.signal.data.shape[0]) // p.stride)  # what same or causal padding gives
        limit = bare + int(round(audio.tail_max * rate))
        cut = limit < p.frames
        kept = min(p.frames, limit)
    seconds = audio.fade if audio.fade is not None else (audio.FADE if cut else 0.0)
    return kept, min(kept, int(round(seconds * rate)))


def _design(p: Plan):
    from ..engine.resample import design

    rate_in = p.rate_in
    if not float(rate_in).is_integer():
        raise DataError(f"the input's rate {rate_in:g} Hz is no whole number: it cannot be resampled",
                        subject=str(p.signal.meta.get("source")))
    if int(rate_in) == p.options.audio.rate:
        p.notes.append(f"--rate {p.options.audio.rate} is the input's own rate: nothing resampled")
        return None
    return design(int(rate_in), p.options.audio.rate)


# A stride that keeps frequencies this close to the passband above the new Nyquist frequency is said.
ALIAS_DB = -40.0


def _aliasing(p: Plan) -> str | None:
    """A warning when the kernels pass frequencies that ``--stride`` folds back below the new Nyquist frequency."""
    import numpy as np

    weights = [k.weights[0] for k in p.kernels if k.operator is None]
    if not weights:
        return None
    size = 1 << max(12, int(math.ceil(math.log2(max(sum(w.size for w in weights), 2)))) + 1)
    response = np.ones(size // 2 + 1)
    for w in weights:
        response = response * np.abs(np.fft.rfft(w, size))
    freqs = np.fft.rfftfreq(size, 1.0 / p.rate_in)
    nyquist = p.rate_in / p.stride / 2
    top = float(response.max())
    above = response[freqs > nyquist]
    if top == 0 or above.size == 0:
        return None
    worst = int(np.argmax(above))
    level = 20 * math.log10(max(float(above[worst]) / top, 1e-300))
    if level < ALIAS_DB:
        return None
    frequency = float(freqs[freqs > nyquist][worst])
    new_rate = p.rate_in / p.stride
    rate_text = f"{new_rate:.0f}" if new_rate.is_integer() else f"{new_rate:g}"
    return (f"--stride {p.stride} makes the rate {new_rate:g} Hz (Nyquist frequency {nyquist:g} Hz), but the kernel "
            f"passes {frequency:.0f} Hz at {level:.0f} dB: frequencies above {nyquist:g} Hz fold back as aliases; "
            f"--rate {rate_text} resamples with an anti-aliasing filter")


# ---------------------------------------------------------------------------- the stages
class _KernelStage:
    """One kernel on blocks of frames x channels: its streams (one per weight array or routing pass), combined."""

    def __init__(self, kernel, args: dict, frames: int, channels: int, x_dtype, options: FilterOptions, finite):
        from ..engine.stream import Stream

        self.kernel = kernel
        routing = kernel.routing
        if routing is not None:
            self.parts = [(list(inputs), routing.pass_weights(i)) for i, (inputs, _) in enumerate(routing.passes)]
            width = routing.outputs
        else:
            self.parts = [(None, w) for w in kernel.weights]
            width = channels
        geometry = {k: args[k] for k in ("stride", "padding", "pad_mode", "dilation", "precision")}
        self.streams, method = [], options.method
        for inputs, weights in self.parts:
            stream = Stream(weights, frames, channels=width, method=method, x_dtype=x_dtype, flip=options.convolve,
                            finite=finite, **geometry)
            method = stream.method  # every part of a kernel in step, so their outputs come together
            self.streams.append(stream)

    @property
    def method(self) -> str:
        return self.streams[0].method

    def feed(self, block):
        """Yield the outputs now final, a chunk at a time (see :meth:`convcli.engine.stream.Stream.feed`)."""
        parts = [s.feed(_columns(block, cols)) for s, (cols, _) in zip(self.streams, self.parts)]
        for outs in zip(*parts):  # every part is cut in the same chunks
            yield self._combine(list(outs))

    def drain(self):
        for outs in zip(*[s.drain() for s in self.streams]):
            yield self._combine(list(outs))

    def _combine(self, outs):
        import numpy as np

        if len(outs) == 1:
            return outs[0]
        if self.kernel.routing is not None or self.kernel.combine == "single":
            total = outs[0].copy()
            for o in outs[1:]:
                total += o
            return total
        if self.kernel.combine == "max":
            total = outs[0].copy()
            for o in outs[1:]:
                np.maximum(total, o, out=total)
            return total
        total = np.square(outs[0])
        for o in outs[1:]:
            total += np.square(o)
        return np.sqrt(total, out=total)


class _Dry:
    """The input's samples waiting to be mixed with the result at the same frames (zeros past the input's end)."""

    def __init__(self, frames: int, channels: int, dtype):
        self.frames, self.channels, self.dtype = frames, channels, dtype
        self.blocks: list = []
        self.start = 0

    def add(self, block) -> None:
        self.blocks.append(block)

    def take(self, first: int, count: int):
        import numpy as np

        out = np.zeros((count, self.channels), dtype=self.dtype)
        at = self.start
        for block in self.blocks:
            end = at + len(block)
            a, b = max(first, at), min(first + count, end)
            if b > a:
                np.copyto(out[a - first:b - first], block[a - at:b - at], casting="unsafe")  # mono broadcasts
            at = end
        while self.blocks and self.start + len(self.blocks[0]) <= first + count:
            self.start += len(self.blocks.pop(0))
        return out


class _Finish:
    """Mix, gain, tail cut and fade, resampling and rectifying, on the kernels' output in order of frames."""

    def __init__(self, p: Plan, dry: _Dry | None):
        import numpy as np

        from ..engine.resample import Resampler

        self.p, self.dry = p, dry
        self.dtype = np.dtype(p.precision)
        self.mix = p.options.audio.mix
        self.gain = 10.0 ** (p.options.audio.gain / 20.0)
        self.position = 0
        self.resampler = None if p.design is None else Resampler(p.design, p.kept, channels=p.channels,
                                                                  dtype=self.dtype)

    def push(self, wet):
        import numpy as np

        count = min(len(wet), self.p.kept - self.position)
        if count <= 0:
            return self._after(np.empty((0, self.p.channels), dtype=self.dtype))
        wet = wet[:count]
        if self.mix != 1.0:
            dry = self.dry.take(self.position, count)
            wet = dry if self.mix == 0.0 else (wet * self.dtype.type(self.mix) + dry * self.dtype.type(1 - self.mix))
        elif wet.dtype != self.dtype:
            wet = wet.astype(self.dtype)
        if self.gain != 1.0:
            wet = wet * self.dtype.type(self.gain)
        wet = self._faded(wet)
        self.position += count
        return self._after(wet)

    def finish(self):
        import numpy as np

        if self.resampler is None:
            return np.empty((0, self.p.channels), dtype=self.dtype)
        return self._rectified(self.resampler.finish())

    def _faded(self, block):
        import numpy as np

        fade, kept = self.p.fade, self.p.kept
        first = kept - fade
        lo, hi = max(self.position, first), min(self.position + len(block), kept)
        if fade <= 0 or hi <= lo:
            return block
        block = block.copy() if not block.flags.writeable or block.base is not None else block
        t = (np.arange(lo, hi) - first + 1) / fade
        block[lo - self.position:hi - self.position] *= (0.5 + 0.5 * np.cos(np.pi * t)).astype(self.dtype)[:, None]
        return block

    def _after(self, block):
        if self.resampler is not None:
            block = self.resampler.push(block)
        return self._rectified(block)

    def _rectified(self, block):
        import numpy as np

        return np.abs(block) if self.p.options.range == "abs" else block


# ---------------------------------------------------------------------------- running
def _input_blocks(signal):
    """The input's samples, frames x channels: read from the file a block at a time, or all of them from memory.

    A file is read and decoded in a thread of its own, a block ahead of the
    filter.  Samples in memory go in whole: the kernels take them a chunk at
    a time, as views, and nothing of the signal's size is copied.
    """
    from ..parallel import prefetched

    source = prefetched(signal.blocks(), name="audio-reader") if signal.streamed else [signal.data]
    for block in source:
        yield block.reshape(len(block), -1)


def _finite(signal):
    """Whether the samples are finite (True), hold NaN or infinity (False), or are not known yet (None: streamed)."""
    import numpy as np

    if signal.data.dtype.kind != "f":
        return True
    if signal.streamed:
        return None
    return bool(np.isfinite(signal.data).all())


def _results(p: Plan):
    """Every block of the result (before the level), in order."""
    import numpy as np

    signal = p.signal
    dry = _Dry(int(signal.data.shape[0]), p.channels, np.dtype(p.precision)) if p.options.audio.mix != 1.0 else None
    finish = _Finish(p, dry)
    if not p.blockwise:
        yield from _whole(p, finish)
        return
    finite = _finite(signal)
    stages = [_KernelStage(kernel, args, frames, channels, signal.data.dtype if i == 0 else p.precision,
                           p.options, finite)
              for i, (kernel, args, frames, channels) in enumerate(p.stages)]
    for step, stage in zip(p.steps, stages):
        _in_blocks(step, stage)
    for block in _input_blocks(signal):
        if dry is not None:
            dry.add(block)
        if not stages:  # resampling only: a sound in memory goes on in blocks, not converted whole
            for i in range(0, len(block), BLOCK_FRAMES):
                yield finish.push(block[i:i + BLOCK_FRAMES].astype(finish.dtype))
            continue
        for out in _through(stages, block, 0):
            yield finish.push(out)
    for i, stage in enumerate(stages):
        for out in stage.drain():
            for last in _through(stages, out, i + 1):
                yield finish.push(last)
    yield finish.finish()


def _through(stages: list, block, first: int):
    """``block`` through the stages from ``first`` on: every output now final, a chunk at a time."""
    if first == len(stages):
        yield block
        return
    for out in stages[first].feed(block):
        yield from _through(stages, out, first + 1)


def _columns(block, columns):
    """The input channels a routing pass reads, as a view where one serves (no copy of a whole signal)."""
    import numpy as np

    if columns is None or list(columns) == list(range(block.shape[1])):
        return block
    if list(columns) == list(range(block.shape[1]))[::-1]:
        return block[:, ::-1]
    if len(set(columns)) == 1:
        return np.broadcast_to(block[:, columns[0]:columns[0] + 1], (len(block), len(columns)))
    return block[:, list(columns)]


def _whole(p: Plan, finish: _Finish):
    """The kernels on the whole signal in memory (rank filters, pools, circular borders), then the rest in blocks."""
    signal = p.signal
    if signal.streamed:
        over = next((k for k in p.kernels if k.operator is not None), None)
        why = f"{over.spec} needs the whole signal" if over is not None else "a circular border needs the whole signal"
        raise DataError(f"{signal.data.shape[0]:,} frames are over the memory budget, and {why}: only weighted "
                        "kernels with another border are filtered in blocks (raise --memory-budget)",
                        subject=str(signal.meta.get("source")))
    dry = finish.dry
    if dry is not None:
        dry.add(signal.data.reshape(len(signal.data), -1))
    if p.kernels:
        wet = filter_signal(signal, p.options, p.kernels, consume=dry is None).signal.data
    else:
        wet = signal.data
    wet = wet.reshape(len(wet), -1)
    for i in range(0, len(wet), BLOCK_FRAMES):
        yield finish.push(wet[i:i + BLOCK_FRAMES])
    yield finish.finish()


def _in_blocks(step: dict, stage: _KernelStage) -> None:
    """A kernel's step as it runs: its method in blocks (the engine's whole-signal choice, restricted to those that stream)."""
    step["methods"] = [stage.method] * len(step["methods"])
    step["why"] = f"{stage.method} in blocks of {stage.streams[0].extent:,} samples (whole signal: {step['why']})"


def _concat(a, b):
    import numpy as np

    return b if not len(a) else (a if not len(b) else np.concatenate([a, b]))


# ---------------------------------------------------------------------------- the level
@dataclass
class _Peak:
    """The largest sample either way, measured over the result."""

    high: float = 0.0
    low: float = 0.0

    def add(self, block) -> None:
        if block.size:
            self.high = max(self.high, float(block.max()))
            self.low = min(self.low, float(block.min()))


def _level_factor(p: Plan, peak: _Peak, full_scale: float, top: float | None) -> float:
    """The factor that puts the result's peak at ``p.levelled`` dBFS without a clipped sample.

    ``full_scale`` is the output's full scale in the input's units; ``top``
    the largest positive sample an integer output holds, in the same units
    (None for float output).
    """
    largest = max(peak.high, -peak.low)
    if largest == 0:
        return 1.0
    factor = full_scale * 10.0 ** (p.levelled / 20.0) / largest
    if top is not None and peak.high > 0:
        factor = min(factor, top / peak.high)  # 0 dBFS: the positive peak at the largest sample, not past it
    return factor


# ---------------------------------------------------------------------------- the use case
@dataclass
class Done:
    """What filtering a sound did, for :class:`convcli.pipeline.filter.FilterReport`."""

    output_shape: tuple[int, ...]
    steps: list
    clipped: int
    notes: list


def may_stream(dest: str, options: FilterOptions) -> bool:
    """Whether an audio input over the memory budget may be read in blocks: only into an audio file (or stdout)."""
    from .. import io
    from ..errors import ConvcliError
    from ..io.formats import family_of

    try:
        fmt = io.output_format(dest, options.out_format)
    except ConvcliError:
        return False
    return fmt is None or family_of(fmt) == "audio"


def filter_audio(signal, dest: str, options: FilterOptions, progress=None) -> Done:
    """Filter the audio ``signal`` (in memory or ``streamed``) into ``dest``: kernels, mix, gain, tail, rate, level."""
    from .. import io
    from ..io.formats import family_of

    p = plan(signal, options)
    fmt = io.output_format(dest, options.out_format) or signal.meta.get("format")
    progress = _Progress(progress, p.output_frames * (2 if p.levelled is not None else 1))
    if family_of(fmt) != "audio":
        return _into_other_format(p, dest, fmt, progress)
    writer = io.audio_writer(signal, dest, format=options.out_format, channels=p.channels, frames=p.output_frames,
                             rate=p.rate, compress_level=options.compress_level, depth=options.depth,
                             quality=options.quality)
    if p.levelled is None:
        with writer:
            _write(writer, progress.counted(_results(p)))
    else:
        _write_levelled(p, writer, progress)
    notes = p.notes + writer.written.notes + _read_notes(signal)
    shape = (p.output_frames,) if p.channels == 1 else (p.output_frames, p.channels)
    return Done(shape, p.steps, writer.written.clipped, notes)


def _write_levelled(p: Plan, writer, progress) -> None:
    """Measure the result's peak, then write it scaled: kept from the first pass when it fits the budget."""
    import numpy as np

    from .. import io

    peak = _Peak()
    budget = io.memory_budget(p.options.memory_budget)
    keep = not p.signal.streamed and p.output_frames * p.channels * np.dtype(p.precision).itemsize <= budget // 2
    kept = []
    for block in progress.counted(_results(p)):
        peak.add(block)
        if keep:
            kept.append(block)
    factor = _level_factor(p, peak, *writer.scales)
    again = progress.counted(kept if keep else _results(plan(p.signal, p.options, p.kernels)))
    with writer:
        _write(writer, (block * np.asarray(factor, dtype=block.dtype) for block in again))


class _Progress:
    """Tells ``report(done, added)`` (see :func:`convcli.parallel.progress_to`) how far the result is.

    The unit is a block of :data:`BLOCK_FRAMES` frames of the result, over
    every pass; all of them are announced at the start.
    """

    def __init__(self, report, total: int):
        self.report, self.total, self.frames, self.units = report, max(total, 1), 0, 0
        self.count = -(-self.total // BLOCK_FRAMES)
        if report is not None:
            report(0, self.count)

    def counted(self, blocks):
        for block in blocks:
            self.frames += len(block)
            units = min(self.frames, self.total) * self.count // self.total
            if self.report is not None and units > self.units:
                self.report(units - self.units, 0)
                self.units = units
            yield block


def _write(writer, blocks) -> None:
    """Every block to ``writer``, converted and encoded in a thread of its own while the next is computed."""
    from ..parallel import behind

    with behind(writer.write, name="audio-writer") as put:
        for block in blocks:
            put(block)


def _into_other_format(p: Plan, dest: str, fmt: str, progress) -> Done:
    """A sound written as .npy (or another array format): the result gathered in memory and written by io.write."""
    import numpy as np

    from .. import io

    signal = p.signal
    if signal.streamed:
        raise DataError(f"{signal.data.shape[0]:,} frames are over the memory budget: such a sound is filtered in "
                        "blocks into an audio file only (raise --memory-budget)", subject=str(signal.meta.get("source")))
    blocks = [b for b in progress.counted(_results(p)) if len(b)]
    data = np.concatenate(blocks) if blocks else np.zeros((0, p.channels), dtype=p.precision)
    if p.levelled is not None:
        peak = _Peak()
        peak.add(data)
        data = data * _level_factor(p, peak, _full_scale(signal), None)
    data = data[:, 0] if p.channels == 1 else data
    result = io.derive(signal, data, stride=p.stride)
    result.sample_rate = p.rate
    result.channel_axis = None if p.channels == 1 else -1
    written = io.write(result, dest, format=p.options.out_format, compress_level=p.options.compress_level,
                       range="clip", depth=p.options.depth, quality=p.options.quality)
    return Done(tuple(data.shape), p.steps, written.clipped, p.notes + written.notes + _read_notes(signal))


def _full_scale(signal) -> float:
    bits = signal.meta.get("bits")
    return 1.0 if bits is None else float(1 << (bits - 1))


def _read_notes(signal) -> list[str]:
    """What reading in blocks found out (a file cut short), and that it was read so."""
    notes = []
    if signal.streamed:
        short = signal.blocks.short_read
        if short is not None:
            notes.append(f"cut short: the header declares {short[1]:,} frames but the file holds {short[0]:,}; "
                         "those were filtered")
    return notes


def streamed_note(signal, options: FilterOptions) -> str | None:
    """The note for a sound read, filtered and written in blocks because it is over the memory budget."""
    from .. import io

    if not signal.streamed:
        return None
    return (f"read, filtered and written in blocks: its samples are over the memory budget of "
            f"{io.human_size(io.memory_budget(options.memory_budget))}")


def explain(signal, options: FilterOptions) -> list[dict]:
    """The plan of every kernel and of the sound's level, length and rate, for ``--explain``: nothing is computed."""
    p = plan(signal, options)
    if p.blockwise:
        for step, (kernel, args, frames, channels) in zip(p.steps, p.stages):
            _in_blocks(step, _KernelStage(kernel, args, frames, channels, signal.data.dtype, options,
                                          _finite_guess(signal)))
    facts = {
        "sample_rate": p.rate_in, "output_rate": p.rate, "frames": int(signal.data.shape[0]),
        "output_frames": p.output_frames, "channels": channels_of(signal), "output_channels": p.channels,
        "tail": options.audio.tail, "kept_frames": p.kept, "fade_frames": p.fade, "mix": options.audio.mix,
        "gain_db": options.audio.gain, "peak_dbfs": p.levelled, "in_blocks": p.blockwise,
        "resampling": None if p.design is None else p.design.describe(), "notes": p.notes,
    }
    shape = list(signal.data.shape)
    steps = p.steps or [{"kernel": {"spec": "(none)"}, "axes": ["x"], "padding": [[0, 0]], "stride": [1],
                         "input_shape": shape, "output_shape": shape, "methods": [], "precision": p.precision,
                         "why": "no kernel: resampling only"}]
    steps[0] = dict(steps[0], audio=facts)
    return steps


def _finite_guess(signal):
    return True if signal.data.dtype.kind != "f" or signal.streamed else _finite(signal)
