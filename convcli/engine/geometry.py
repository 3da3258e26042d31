"""Geometry: per-axis stride, dilation and padding, and the output size they give.

Arguments are normalised once, here, into per-axis tuples; every error names
the parameter, the value and what is allowed.

Output length per axis (n input, k kernel, s stride, d dilation):

- explicit padding p (and ``valid`` = 0, ``full`` = d(k-1)), PyTorch's rule::

      out = floor((n + 2p - d(k-1) - 1) / s) + 1

  or ``(before, after)`` per axis (ONNX's ``pads``; a pooling window in
  PyTorch's ``ceil_mode``), the same rule with ``before + after`` for 2p;

- ``same``, TensorFlow's rule::

      out = ceil(n / s)
      total = max((out - 1) s + d(k-1) + 1 - n, 0)
      before = total // 2, after = total - before

- ``causal``: every axis padded only before, by the kernel's whole span less
  one, so that the window of output ``i`` ends at input sample ``i`` and no
  output reads a later sample (a filter in time: ``out[i] = sum_j w[j]
  x[i - d(k-1) + dj]``, an impulse response starting at its click)::

      before = d(k-1), after = 0, out = ceil(n / s)

  On an image or a volume the same holds on every axis: each output reads
  only samples at or above and to the left of (or before, on every axis) its
  own position.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ParameterError

PADDING_WORDS = ("same", "valid", "full", "causal")


@dataclass(frozen=True)
class AxisPlan:
    """How one spatial axis is padded and sampled."""

    length: int
    taps: int
    stride: int
    dilation: int
    before: int
    after: int
    out: int

    @property
    def span(self) -> int:
        """Samples one output covers: d(k-1) + 1."""
        return self.dilation * (self.taps - 1) + 1

    @property
    def padded(self) -> int:
        """Samples of the padded axis: before + length + after."""
        return self.before + self.length + self.after

    @classmethod
    def whole(cls, n: int) -> AxisPlan:
        """An axis of ``n`` samples taken as it is: one tap, no padding, ``n`` outputs.

        The other axes of a pass along one axis, or of an image one sample wide.
        """
        return cls(n, 1, 1, 1, 0, 0, n)

    def valid(self) -> AxisPlan:
        """This plan as a valid correlation of the padded axis: the padding is already in the samples."""
        return replace(self, length=self.padded, before=0, after=0)


def output_shape(batch_shape, axes, channel_axis, channels) -> tuple[int, ...]:
    """A plan's result shape in the layout of its input: batch axes, each axis plan's ``out``, channels in place."""
    shape = list(batch_shape) + [p.out for p in axes]
    if channel_axis is not None:
        shape.insert(channel_axis, channels)
    return tuple(shape)


def per_axis(value, ndim: int, name: str, *, minimum: int) -> tuple[int, ...]:
    """Normalise an int or a sequence of ints into one int per axis."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    for item in items:
        if isinstance(item, bool) or not _is_int(item):
            raise ParameterError(f"must be whole numbers, got {value!r}", subject=name)
    items = [int(i) for i in items]
    if len(items) == 1:
        items = items * ndim
    if len(items) != ndim:
        raise ParameterError(
            f"has {len(items)} values but the kernel has {ndim} spatial axes; give 1 or {ndim}",
            subject=name,
        )
    for item in items:
        if item < minimum:
            raise ParameterError(f"must be >= {minimum} on every axis, got {value!r}", subject=name)
    return tuple(items)


def _is_int(item) -> bool:
    try:
        return int(item) == item
    except (TypeError, ValueError, OverflowError):
        return False


def parse_padding(value, ndim: int):
    """Normalise ``padding`` into a word (same/valid/full/causal), one int per axis, or one (before, after) pair per axis."""
    if isinstance(value, str):
        word = value.strip().lower()
        if word not in PADDING_WORDS:
            raise ParameterError(f"must be same, valid, full, causal or samples per axis, got {value!r}",
                                 subject="padding")
        return word
    if isinstance(value, (list, tuple)) and any(isinstance(v, (list, tuple)) for v in value):
        if len(value) != ndim or not all(isinstance(v, (list, tuple)) and len(v) == 2 for v in value):
            raise ParameterError(f"takes one (before, after) pair per axis ({ndim}), got {value!r}", subject="padding")
        return tuple(per_axis(v, 2, "padding", minimum=0) for v in value)
    return per_axis(value, ndim, "padding", minimum=0)


def plan_axes(spatial_shape, kernel_shape, *, stride=1, padding="same", dilation=1) -> tuple[AxisPlan, ...]:
    """Plan every spatial axis: padding before/after and output length."""
    ndim = len(kernel_shape)
    strides = per_axis(stride, ndim, "stride", minimum=1)
    dilations = per_axis(dilation, ndim, "dilation", minimum=1)
    pad = parse_padding(padding, ndim)
    plans = []
    for axis, (n, k, s, d) in enumerate(zip(spatial_shape, kernel_shape, strides, dilations)):
        span = d * (k - 1) + 1
        if pad == "same":
            out = -(-n // s)
            total = max((out - 1) * s + span - n, 0)
            before, after = total // 2, total - total // 2
        elif pad == "causal":
            before, after = span - 1, 0
            out = (n - 1) // s + 1
        else:
            p = {"valid": 0, "full": span - 1}.get(pad) if isinstance(pad, str) else pad[axis]
            before, after = p if isinstance(p, tuple) else (p, p)
            out = (n + before + after - span) // s + 1
        if out < 1 or n < 1:
            raise ParameterError(
                f"gives no output samples on axis {axis}: input length {n}, kernel span {span} "
                f"(kernel {k}, dilation {d}), padding {before}+{after}; use a larger input, "
                "less dilation, or padding same/full",
                subject="padding",
            )
        plans.append(AxisPlan(n, k, s, d, before, after, out))
    return tuple(plans)
