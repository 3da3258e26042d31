"""Small callable layers of a convolutional network, every convolution through the engine.

Activations are laid out ``(batch, channels, rows, columns)`` (NCHW) or, with
``channels_last``, ``(batch, rows, columns, channels)`` (NHWC).  The engine's
depthwise entry point filters either: NCHW one OpenCV call per channel plane,
fastest on large maps with few channels (144 channels of 56x56, 3x3: 0.8 ms),
NHWC one fused multiply-add per tap over all channels at once, fastest on
small maps with many (1152 channels of 7x7, 5x5: 0.3 ms; per plane 3.6 ms),
and on the stride phases of a strided layer's input.  A 1x1 convolution is
one float32 matrix product in either layout.  Batch norm is folded into the
weights and biases before a layer is built (see :mod:`convcli.nn.weights`).

Each layer can be called on arrays (new arrays out), or bound once to
buffers of a :class:`Workspace` (``bind``): the steps it returns then run it
in place, pass after pass, with every view and call argument made once.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..engine import execute, make_plan, plan_depthwise, same_patches
from ..parallel import split


class Workspace:
    """Flat float32 buffers that the layers of a compiled forward pass share, one per role.

    Layers bound to a workspace (their ``bind`` methods) take views of these
    buffers, so one pass allocates nothing and its steps reuse memory the
    cache still holds: a role's buffer serves every layer that needs it in
    turn.  A first, dry binding only records the largest size of each role
    (its views are never written); :meth:`allocate` then makes the buffers
    and a second binding takes its views from them.
    """

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.flat: dict[str, np.ndarray] | None = None

    def take(self, role: str, shape: tuple[int, ...]) -> np.ndarray:
        """A C-contiguous float32 view of ``shape`` in the buffer of ``role``."""
        size = int(np.prod(shape))
        if self.flat is None:
            self.sizes[role] = max(self.sizes.get(role, 0), size)
            return np.empty(shape, dtype=np.float32)  # dry: allocated, never touched
        return self.flat[role][:size].reshape(shape)

    def allocate(self) -> None:
        self.flat = {role: np.empty(size, dtype=np.float32) for role, size in self.sizes.items()}


def relu6(x: np.ndarray) -> np.ndarray:
    """min(max(x, 0), 6), in place: the activation of the EfficientNet-Lite family."""
    return np.clip(x, 0.0, 6.0, out=x)


def to_channels_last(x: np.ndarray) -> np.ndarray:
    """NCHW -> NHWC, contiguous."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def to_channels_first(x: np.ndarray) -> np.ndarray:
    """NHWC -> NCHW, contiguous."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class PointwiseConv:
    """A 1x1 convolution: ``weight (out, in)`` times every pixel's channel vector, plus ``bias (out,)``.

    A layer that widens (more outputs than inputs) carries its bias as one
    more weight column against a channel of ones appended to a copy of the
    input: copying the narrow input costs less than a pass adding the bias
    to the wide output (16 -> 96 channels of 112x112 with ReLU6: 1.18 against
    1.38 ms).  With ``relu6`` the activation follows each part's product.
    Called with ``threads`` > 1 on a large enough layer, the threads share the
    output channels (channels-first) or pixels (channels-last), each one
    matrix product.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray, channels_last: bool = False, relu6: bool = False) -> None:
        self.channels_last = channels_last
        self.relu6 = relu6
        weight = np.asarray(weight, dtype=np.float32)
        bias = np.asarray(bias, dtype=np.float32)
        self.inputs = weight.shape[1]
        self.augmented = weight.shape[0] > weight.shape[1]
        if self.augmented:
            weight = np.concatenate([weight, bias[:, None]], axis=1)
        # (out, in).  Channels-last layers multiply by its transpose: a view when called, a
        # contiguous copy, made when bound, in a compiled pass (20% faster on Lite0's layers,
        # 3.1 against 3.7 ms, but the copies cost a one-pass process more than they save).
        self.weight = np.ascontiguousarray(weight)
        self._transposed = None
        self.bias = bias if channels_last else bias[:, None]

    def __call__(self, x: np.ndarray, threads: int = 1) -> np.ndarray:
        if self.channels_last:
            # Any pixel order: (N, H, W, C), or the (N, P, C) phases of a strided layer's input.
            lead, c = x.shape[:-1], x.shape[-1]
            rows = self._with_ones(x.reshape(-1, c), axis=1)
            out = np.empty((rows.shape[0], self.weight.shape[0]), dtype=np.float32)

            def part(lo, hi):
                np.matmul(rows[lo:hi], self.weight.T, out=out[lo:hi])
                self._finish(out[lo:hi], self.bias)
            length = rows.shape[0]
        else:
            n, c, h, w = x.shape
            planes = self._with_ones(x.reshape(n, c, h * w), axis=1)
            out = np.empty((n, self.weight.shape[0], h * w), dtype=np.float32)

            def part(lo, hi):
                np.matmul(self.weight[lo:hi], planes, out=out[:, lo:hi])
                self._finish(out[:, lo:hi], self.bias[lo:hi])
            length = self.weight.shape[0]
        work = out.size * self.inputs
        split(part, length, threads if work >= _SHARED_WORK else 1)
        return out.reshape(lead + (-1,)) if self.channels_last else out.reshape(n, -1, h, w)

    def bind(self, x: np.ndarray, out: np.ndarray, workspace: Workspace, threads: int = 1) -> list[list]:
        """Steps computing this layer from the buffer ``x`` into ``out``, laid out as :meth:`__call__` takes and gives.

        A widening layer copies ``x`` into a workspace buffer with a channel
        of ones after it, unless ``x`` brings that channel itself (one more
        channel than the weights take: its last channel, kept at one by the
        caller).  Returns steps to run in order, each a list of parts that
        may run at once (``threads`` of them on a large enough layer).
        """
        c = x.shape[-1] if self.channels_last else x.shape[1]
        steps = []
        if self.augmented and c == self.inputs:
            axis = x.ndim - 1 if self.channels_last else 1
            shape = x.shape[:axis] + (c + 1,) + x.shape[axis + 1:]
            augmented = workspace.take("ones", shape)
            inside = [slice(None)] * x.ndim
            inside[axis] = slice(0, c)
            data = augmented[tuple(inside)]
            inside[axis] = slice(c, c + 1)
            ones = augmented[tuple(inside)]

            def copy(source=x):
                np.copyto(data, source)
                ones.fill(1.0)
            steps.append([copy])
            x = augmented
        elif c != self.inputs + self.augmented:
            raise ValueError(f"input has {c} channels; this layer takes {self.inputs}")
        if self.channels_last:
            rows, dst = x.reshape(-1, x.shape[-1]), out.reshape(-1, out.shape[-1])
            length = rows.shape[0]
            if self._transposed is None:
                self._transposed = np.ascontiguousarray(self.weight.T)
            right = self._transposed

            def part(lo, hi):
                a, o = rows[lo:hi], dst[lo:hi]
                return lambda: self._finish(np.matmul(a, right, out=o), self.bias)
        else:
            planes, dst = x.reshape(x.shape[0], x.shape[1], -1), out.reshape(out.shape[0], out.shape[1], -1)
            length = self.weight.shape[0]

            def part(lo, hi):
                w, o, b = self.weight[lo:hi], dst[:, lo:hi], self.bias[lo:hi]
                return lambda: self._finish(np.matmul(w, planes, out=o), b)
        threads = threads if dst.size * self.inputs >= _SHARED_WORK else 1
        cuts = [round(length * t / threads) for t in range(threads + 1)]
        steps.append([part(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo])
        return steps

    def _with_ones(self, x: np.ndarray, axis: int) -> np.ndarray:
        """``x`` with a channel of ones after its last channel (on ``axis``), for a widening layer."""
        if not self.augmented:
            return x
        shape = list(x.shape)
        shape[axis] += 1
        augmented = np.empty(shape, dtype=np.float32)
        inside = [slice(None)] * x.ndim
        inside[axis] = slice(0, x.shape[axis])
        augmented[tuple(inside)] = x
        inside[axis] = -1
        augmented[tuple(inside)] = 1.0
        return augmented

    def _finish(self, out: np.ndarray, bias: np.ndarray) -> None:
        if not self.augmented:
            out += bias
        if self.relu6:
            relu6(out)


# Multiply-adds below which a layer runs on one thread: a hand-over costs ~30 us.
_SHARED_WORK = 1_000_000


def _same_plan(shape: tuple[int, ...], kernel: np.ndarray, stride: int, channel_axis: int = 1, method: str = "direct"):
    """The engine's plan for a "same"-padded, zero-bordered correlation of ``shape`` by ``method``.

    TensorFlow "same" padding with zeros is how the network was trained.
    With the method fixed, a plan depends only on shapes, and ``execute``
    takes the weights separately.  So it is made from a zero kernel of the
    right shape: the engine's cost model, which factors every channel's
    kernel by SVD (about 0.4 s over the whole network), then has nothing to do.
    """
    return make_plan(
        shape, np.zeros(kernel.shape, dtype=np.float32), stride=stride, padding="same", pad_mode="zeros",
        channel_axis=channel_axis, spatial_ndim=2, method=method, x_dtype=np.float32,
    )


class DepthwiseConv:
    """Each channel correlated with its own ``k x k`` kernel (``weight (C, k, k)``), plus ``bias (C,)``.

    By default the engine's depthwise entry point does the work
    (:func:`convcli.engine.plan_depthwise`: OpenCV per channel plane on
    channels-first maps, fused multiply-adds over contiguous channels on
    channels-last ones), bias included.  With ``phased`` (channels-last,
    strided) the layer is called with its input split into the stride's
    phases (:func:`convcli.engine.split_phases`) and the logical input
    ``shape``.  A ``method`` of the general engine (``direct``, ``opencv``)
    runs its per-channel :func:`~convcli.engine.correlate` plan instead.
    Plans are kept per input shape.
    """

    def __init__(
        self, weight: np.ndarray, bias: np.ndarray, stride: int = 1, channels_last: bool = False,
        method: str | None = None, phased: bool = False,
    ) -> None:
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.stride = stride
        self.channels_last = channels_last
        self.method = method  # None: the depthwise entry point's fastest for the layout
        self.phased = phased
        if phased and (method is not None or not channels_last):
            raise ValueError("phased input is for the depthwise entry point, channels last")
        self._plans: dict[tuple, object] = {}

    def __call__(self, x: np.ndarray, threads: int = 1, shape: tuple[int, ...] | None = None) -> np.ndarray:
        plan = self.plan(tuple(shape) if self.phased else x.shape, threads)
        if self.method is None:
            return plan(x)
        out = execute(plan, x, self.weight)
        out += self.bias if self.channels_last else self.bias[None, :, None, None]
        return out

    def bind(self, x: np.ndarray, out: np.ndarray, threads: int = 1, shape: tuple[int, ...] | None = None,
             relu6: bool = False) -> list[list]:
        """Steps computing this layer from the buffer ``x`` into ``out`` (see :meth:`PointwiseConv.bind`).

        Only for the depthwise entry point (``method`` None); ``shape`` is
        the logical input shape of a ``phased`` layer, and ``relu6`` adds the
        activation as a last step.
        """
        if self.method is not None:
            raise ValueError("only the depthwise entry point binds to buffers")
        steps = [self.plan(tuple(shape) if self.phased else x.shape, threads).bind(x, out)]
        if relu6:
            steps.append([lambda: np.clip(out, 0.0, 6.0, out=out)])
        return steps

    def plan(self, shape: tuple[int, ...], threads: int = 1):
        """The plan for inputs of (logical) ``shape``, made on first use and kept; its ``out_shape`` is the output's."""
        key = (shape, threads)
        plan = self._plans.get(key)
        if plan is None:
            if self.method is None:
                plan = plan_depthwise(shape, self.weight, stride=self.stride, bias=self.bias,
                                      channels_last=self.channels_last, threads=threads, phased=self.phased)
                # Tiles depend on the layer's weights and the image's size, not the batch size: share.
                same = [o.tiles for o in self._plans.values() if o.tiles is not None and plan.tiles is not None
                        and o.tiles.shape == plan.tiles.shape]
                if same:
                    plan = replace(plan, tiles=same[0])
            else:
                plan = _same_plan(shape, self.weight, self.stride, -1 if self.channels_last else 1, self.method)
            self._plans[key] = plan
        return plan


class DenseConv:
    """A full ``k x k`` convolution mixing all input channels (``weight (out, in, k, k)``), plus ``bias (out,)``.

    The engine gathers every tap's window of the zero-bordered, "same"-padded,
    strided input (:func:`convcli.engine.same_patches`, tap-major, then input
    channel); one float32 matrix product mixes those ``k * k * in`` rows into
    the output channels.  The engine keeps every geometric decision; the
    multiply-adds run in BLAS.  For the RGB stem that is 27 rows of 112x112
    (gathered in 0.3 ms, was 2 ms as nine unit-kernel correlations).
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray, stride: int = 1) -> None:
        weight = np.asarray(weight, dtype=np.float32)
        outputs, inputs, kh, kw = weight.shape
        # Columns in the order the patch rows are gathered: tap-major, then input channel.
        self.matrix = np.ascontiguousarray(weight.transpose(0, 2, 3, 1).reshape(outputs, kh * kw * inputs))
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)[:, None]
        self.kernel_shape = (kh, kw)
        self.stride = stride

    def __call__(self, x: np.ndarray) -> np.ndarray:
        lanes = same_patches(x, self.kernel_shape, stride=self.stride)
        n, c, h, w = lanes.shape
        out = np.matmul(self.matrix, lanes.reshape(n, c, h * w))
        out += self.bias
        return out.reshape(n, -1, h, w)

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(N, out, H_out, W_out)`` for an input of ``x_shape``."""
        from ..engine import plan_axes

        ry, rx = plan_axes(x_shape[2:], self.kernel_shape, stride=self.stride, padding="same")
        return (x_shape[0], self.matrix.shape[0], ry.out, rx.out)

    def bind(self, x: np.ndarray, out: np.ndarray, workspace: Workspace, relu6: bool = False,
             role: str = "patches") -> list[list]:
        """Steps computing this layer from the buffer ``x`` into ``out`` (see :meth:`PointwiseConv.bind`).

        The patches take the workspace's ``role``.
        """
        n, _, h, w = out.shape
        lanes = workspace.take(role, (n, self.matrix.shape[1], h, w))
        flat, dst = lanes.reshape(n, lanes.shape[1], h * w), out.reshape(n, -1, h * w)

        def run():
            same_patches(x, self.kernel_shape, stride=self.stride, out=lanes)
            np.matmul(self.matrix, flat, out=dst)
            np.add(dst, self.bias, out=dst)
            if relu6:
                np.clip(dst, 0.0, 6.0, out=dst)
        return [[run]]


def global_average_pool(x: np.ndarray) -> np.ndarray:
    """The mean of every channel over all pixels: ``(N, C, H, W) -> (N, C)`` (NCHW)."""
    return x.mean(axis=(2, 3), dtype=np.float32)


class Linear:
    """A fully connected layer: ``x @ weight.T + bias``."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)  # (out, in), used transposed
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self._transposed = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 1:  # a matrix-vector product reads the transposed view as fast as a copy
            return x @ self.weight.T + self.bias
        if self._transposed is None:  # a product with several rows does not (8 rows: 0.49 against 0.88 ms)
            self._transposed = np.ascontiguousarray(self.weight.T)
        return x @ self._transposed + self.bias
