"""1-D correlation of a signal that arrives in blocks: the numbers :func:`correlate` gives on the whole signal.

Hours of audio do not fit in memory, so they are read, filtered and written
a block at a time.  A :class:`Stream` takes the samples in blocks of any
size (:meth:`Stream.push`) and hands back every output whose inputs have
all arrived; :meth:`Stream.finish` applies the border rule at the far end
and returns the rest.  It holds the kernel's span of history and one chunk
of outputs, whatever the signal's length.

The outputs are computed in chunks whose boundaries fall where the
whole-signal computation's own pieces fall: a multiple of the overlap-save
step for ``fft`` (every transform then holds the same samples), whole bands
of matrix rows for ``toeplitz``, any sample for ``direct`` (every output is
its taps summed in order).  So the result is bit for bit ``correlate(x, w,
method=...)`` on the whole signal, however the blocks are cut; the last
chunk takes the remainder with it, so that no piece is short enough to be
transformed differently.  Only those three methods stream; ``auto`` picks the
cheapest of them.

A circular border reads the far end of the signal before its start, so it
cannot stream.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..errors import DataError, ParameterError
from . import bands, correlation, spectral, strategies, toeplitz
from .geometry import AxisPlan

STREAM_METHODS = ("direct", "toeplitz", "fft")
# Samples per channel a chunk spans at least: long enough that a chunk's
# engine call keeps both cores busy and its Python overhead is small.
CHUNK_SAMPLES = 1 << 20


class Stream:
    """Correlate a 1-D signal of known ``length`` with ``kernel``, block by block.

    Parameters
    ----------
    kernel : array_like
        ``(k,)`` weights shared by every channel, or ``(channels, k)``:
        each channel its own.
    length : int
        Samples (frames) the signal will have.
    channels : int, optional
        Blocks are ``(frames, channels)``; None: blocks are 1-D.
    stride, padding, pad_mode, dilation, precision, method :
        As for :func:`convcli.engine.correlate`; ``method`` is one of
        :data:`STREAM_METHODS` or ``auto``.
    x_dtype : numpy dtype
        The type of the samples pushed (integers are converted as they are used).
    flip : bool
        Convolve instead of correlating.
    finite : bool or None
        False: the signal holds NaN or infinity, so only ``direct`` (which
        keeps them within their window) is used.  None: not known; a
        strategy that would spread one over the whole chunk refuses a chunk
        that holds one (:class:`~convcli.errors.DataError`).
    chunk : int, optional
        Samples per channel a chunk of outputs spans at least (rounded up to
        the method's pieces; default :data:`CHUNK_SAMPLES`): the memory held,
        and how much work each engine call gets.

    Examples
    --------
    >>> x = np.arange(10.0)
    >>> s = Stream(np.array([1.0, 2.0, 3.0]), 10, padding="causal", pad_mode="zeros")
    >>> np.concatenate([s.push(x[:4]), s.push(x[4:]), s.finish()]).tolist()
    [0.0, 3.0, 8.0, 14.0, 20.0, 26.0, 32.0, 38.0, 44.0, 50.0]
    """

    def __init__(self, kernel, length: int, *, channels: int | None = None, stride=1, padding="same",
                 pad_mode="reflect", dilation=1, method: str = "auto", precision=None, x_dtype=np.float32,
                 flip: bool = False, finite: bool | None = True, chunk: int | None = None):
        kernel = correlation._as_kernel(kernel)
        if int(length) < 1:
            raise ParameterError(f"must be at least 1 sample, got {length!r}", subject="length")
        self.length, self.channels = int(length), channels
        shape = (self.length,) if channels is None else (self.length, int(channels))
        if method not in ("auto",) + STREAM_METHODS:
            raise ParameterError(f"a signal filtered in blocks takes method {', '.join(STREAM_METHODS)} or auto, "
                                 f"not {method}", subject="method")
        plan = correlation.make_plan(shape, kernel, stride=stride, padding=padding, pad_mode=pad_mode,
                                     dilation=dilation, channel_axis=None if channels is None else -1, method=method,
                                     precision=precision, spatial_ndim=1, x_dtype=x_dtype, finite=finite is not False)
        if plan.border.numpy_mode == "wrap":
            raise ParameterError("a circular border reads the end of the signal before its start, so a signal "
                                 "filtered in blocks cannot use it; choose another border mode", subject="pad_mode")
        self.plan = _streaming(plan, method)
        self.finite = finite
        canonical = correlation._canonical_kernel(kernel, plan.per_channel)
        self.kernel = canonical[:, ::-1] if flip else canonical
        self.axis = self.plan.axes[0]
        self.layout = bands.layout_of((2, 1), 1, 1)  # (frames, channels): the channels trail
        self.trail = 1 if channels is None else int(channels)
        self.cache: dict = {}
        self.extent = self._extent(int(CHUNK_SAMPLES if chunk is None else chunk))
        self.bounds = _chunk_bounds(self.axis.out, self.extent // self.axis.stride)
        self.pending: list[np.ndarray] = []  # the blocks still needed, in order
        self.start = 0  # input index of pending[0][0]
        self.received = 0
        self.chunk = 0  # the next chunk to compute

    @property
    def method(self) -> str:
        return self.plan.method

    @property
    def output_length(self) -> int:
        return self.axis.out

    def _extent(self, chunk: int) -> int:
        """Stride-1 positions a chunk spans: a whole number of the method's own pieces, at least ``chunk``."""
        p, s = self.axis, self.axis.stride
        if self.method == "fft":
            size = spectral.transform_size(p)
            if size != spectral.block_size(p.span):
                return p.padded  # the whole signal is one transform: one chunk
            # Whole groups of blocks (the transforms the engine's threads share), so none runs short.
            step = size - p.span + 1
            grain = math.lcm(step * max(1, min(spectral.GROUP_SAMPLES // size, chunk // step)), s)
            # Enough steps that a chunk's own blocks are never fewer than the whole signal's rule allows.
            least = max(chunk, spectral.MIN_BLOCKS * size)
        elif self.method == "toeplitz":
            grain = math.lcm(toeplitz.band_outputs(p, 1, self.trail, self.plan.dtype.itemsize) * s, s)
            least = chunk
        else:
            grain, least = s, chunk
        least = max(least, p.span, p.before, p.after)  # border sources stay within the last chunk
        return grain * max(1, -(-least // grain))

    def push(self, block) -> np.ndarray:
        """Take the next samples; return the outputs that are now final (possibly none)."""
        return self._joined(list(self.feed(block)))

    def finish(self) -> np.ndarray:
        """Every output not yet returned: the far end's border applied (see :meth:`drain`)."""
        return self._joined(list(self.drain()))

    def feed(self, block):
        """Take the next samples; yield the outputs now final, a chunk at a time, each computed as it is asked for.

        A caller holding the whole signal feeds it at once and handles one
        chunk of outputs at a time: no copy of the signal, no result of its size.
        """
        block = self._as_block(block)
        if self.received + len(block) > self.length:
            raise ParameterError(f"more than the {self.length} samples announced", subject="length")
        if len(block):
            self.pending.append(block)
            self.received += len(block)
        while self.chunk < len(self.bounds) - 1 and self._ready(self.chunk):
            out = self._compute(self.chunk, self.length)
            self.chunk += 1
            yield self._shaped([out])

    def drain(self):
        """Yield every output not yet given, a chunk at a time: the far end's border applied.

        A signal that ended early (a file cut short) is finished at the
        samples received, the border rule applied there.
        """
        if self.received == self.length:
            while self.chunk < len(self.bounds) - 1:
                out = self._compute(self.chunk, self.length)
                self.chunk += 1
                yield self._shaped([out])
        elif self.received > 0:
            short = replace(self.axis, length=self.received)
            first = self.bounds[self.chunk]
            out = _plan_out(short)
            if out > first:
                self.axis, self.bounds, self.chunk = short, [first, out], 0
                result = self._compute(0, self.received)
                self.bounds, self.chunk = [out, out], 1
                yield self._shaped([result])

    # ---------------------------------------------------------------- internals
    def _as_block(self, block) -> np.ndarray:
        block = np.asarray(block)
        if self.channels is None:
            if block.ndim != 1:
                raise ParameterError(f"must be 1-D samples, got shape {block.shape}", subject="block")
            return block.reshape(-1, 1)
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ParameterError(f"must be (frames, {self.channels}) samples, got shape {block.shape}",
                                 subject="block")
        return block

    def _span_of(self, index: int) -> tuple[int, int]:
        """Padded positions a chunk reads: its outputs' windows, to the end of its stride-1 positions."""
        p = self.axis
        o0, o1 = self.bounds[index], self.bounds[index + 1]
        final = index == len(self.bounds) - 2
        hi = p.padded if final else min(p.padded, o1 * p.stride + p.span - 1)
        return o0 * p.stride, hi

    def _ready(self, index: int) -> bool:
        lo, hi = self._span_of(index)
        p = self.axis
        last = hi - p.before  # the input sample after the last one read, unless it reads past the end
        return self.received >= self.length if last > p.length else self.received >= last

    def _compute(self, index: int, length: int) -> np.ndarray:
        """One chunk's outputs: a valid piece of the padded signal, its borders (if it reaches one) the engine's."""
        p = self.axis
        lo, hi = self._span_of(index)
        count = self.bounds[index + 1] - self.bounds[index]
        first, stop = max(0, lo - p.before), min(length, hi - p.before)
        before, after = max(0, p.before - lo), max(0, hi - p.before - length)
        # A chunk spans at least the padding on either side, so its border rule reads what the whole
        # signal's would: the first samples before the start, the last ones after the end.
        x = self._held(first, stop)[None]
        if self.finite is None and self.plan.choice.spreads_non_finite and not correlation._all_finite(x):
            raise DataError("NaN or infinity in the samples: a long signal filtered in blocks by "
                            f"{self.method} would spread it over whole blocks (raise --memory-budget to filter "
                            "it whole, or use --method direct)")
        piece = AxisPlan(stop - first, p.taps, p.stride, p.dilation, before, after, count)
        chunk = replace(self.plan, axes=(piece,))
        out = np.empty((1, count, self.trail), dtype=self.plan.dtype)
        if self.method == "fft":
            weights = correlation._weights(self.kernel, self.plan.dtype, self.layout, 1)
            spectral.correlate_1d(x, out, piece, weights, self.plan.border, self.plan.border_value, cache=self.cache)
        else:
            correlation._STRATEGIES[self.method](chunk, x, self.kernel, out, self.layout)
        self._forget(index + 1)
        return out[0]

    def _held(self, first: int, stop: int) -> np.ndarray:
        """Input samples ``first..stop`` as one array: a view of a block when they lie in one."""
        if first < self.start:
            raise ParameterError("a border reaches samples no longer held", subject="padding")
        pieces, at = [], self.start
        for block in self.pending:
            end = at + len(block)
            if end > first and at < stop:
                pieces.append(block[max(first - at, 0):min(stop, end) - at])
            at = end
        if at < stop:
            raise ParameterError("a border reaches samples not yet received", subject="padding")
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _forget(self, index: int) -> None:
        """Let go of the blocks no chunk from ``index`` on reads (the left border's sources go with the first chunk)."""
        if index >= len(self.bounds) - 1:
            return
        lo, _ = self._span_of(index)
        keep = max(0, lo - self.axis.before)
        while self.pending and self.start + len(self.pending[0]) <= keep:
            self.start += len(self.pending.pop(0))

    def _shaped(self, done: list) -> np.ndarray:
        out = done[0] if len(done) == 1 else (
            np.concatenate(done) if done else np.empty((0, self.trail), dtype=self.plan.dtype))
        return out[:, 0] if self.channels is None else out

    def _joined(self, parts: list) -> np.ndarray:
        if parts:
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        return self._shaped([])


def _streaming(plan, method: str):
    """The plan with its method among STREAM_METHODS: auto takes the cheapest of those it costed."""
    if method != "auto" or plan.method in STREAM_METHODS:
        return plan
    costs = {m: c for m, c in plan.choice.costs.items() if m in STREAM_METHODS}
    best = min(costs, key=costs.get) if costs else "direct"
    choice = strategies.Choice(best, costs, plan.choice.separable, best in strategies.SPREADS_NON_FINITE)
    return replace(plan, choice=choice, method=best)


def _chunk_bounds(total: int, per_chunk: int) -> list[int]:
    """Output boundaries of the chunks: every ``per_chunk``, the last chunk taking the remainder with it."""
    whole = max(1, total // max(per_chunk, 1))
    return [i * per_chunk for i in range(whole)] + [total]


def _plan_out(p: AxisPlan) -> int:
    return max(0, (p.padded - p.span) // p.stride + 1)
