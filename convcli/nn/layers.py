"""The layers of a convolutional network, every convolution through the engine, bound to buffers.

Activations are laid out ``(batch, channels, rows, columns)`` (NCHW) or, with
``channels_last``, ``(batch, rows, columns, channels)`` (NHWC).  The engine's
depthwise entry point filters either: NCHW one OpenCV call per channel plane,
fastest on large maps with few channels (144 channels of 56x56, 3x3: 0.8 ms),
NHWC one fused multiply-add per tap over all channels at once, fastest on
small maps with many (1152 channels of 7x7, 5x5: 0.3 ms; per plane 3.6 ms),
and on the stride phases of a strided layer's input.  A 1x1 convolution is
one float32 matrix product in either layout.  Batch norm is folded into the
weights and biases before a layer is built (see :mod:`convcli.nn.weights`).

A layer runs one way: bound once to buffers (``bind``), of which the
temporary ones are views of a :class:`Workspace`.  The steps ``bind``
returns then run it in place, pass after pass, with every view and call
argument made once.  :func:`bind_sized` binds on a workspace made to
measure and :func:`run_steps` runs the steps.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..engine import plan_axes, plan_depthwise, same_patches
from ..parallel import share


class Workspace:
    """Flat float32 buffers that the layers of a compiled forward pass share, one per role.

    Layers bound to a workspace (their ``bind`` methods) take views of these
    buffers, so one pass allocates nothing and its steps reuse memory the
    cache still holds: a role's buffer serves every layer that needs it in
    turn.  A first, dry binding only records the largest size of each role
    (its views are never written); :meth:`allocate` then makes the buffers
    and a second binding takes its views from them (see :func:`bind_sized`).
    """

    def __init__(self) -> None:
        self.sizes: dict[str, int] = {}
        self.flat: dict[str, np.ndarray] | None = None

    @property
    def dry(self) -> bool:
        """Whether bindings now only size the buffers: their steps are never run."""
        return self.flat is None

    def take(self, role: str, shape: tuple[int, ...]) -> np.ndarray:
        """A C-contiguous float32 view of ``shape`` in the buffer of ``role``."""
        size = math.prod(shape)
        if self.dry:
            self.sizes[role] = max(self.sizes.get(role, 0), size)
            return np.empty(shape, dtype=np.float32)  # allocated, never touched
        return self.flat[role][:size].reshape(shape)

    def allocate(self) -> None:
        """Make the buffers, at the sizes the dry binding recorded, as parts of one block.

        One block takes huge pages where it spans them (numpy asks the kernel
        for them above 4 MB), so a first pass touching it fresh takes fewer
        page faults than it would with one array per role (Lite0's 10.2 MB at
        batch 1: 0.9 against 1.8 ms).
        """
        align = 16  # floats: every buffer starts on a 64-byte cache line
        sizes = {role: -(-size // align) * align for role, size in self.sizes.items()}
        block, start = np.empty(sum(sizes.values()), dtype=np.float32), 0
        self.flat = {}
        for role, size in sizes.items():
            self.flat[role] = block[start:start + size]
            start += size


def bind_sized(bind):
    """``bind(workspace)`` on a workspace made to its measure: once dry to size the buffers, then for real.

    Returns what the second call returns (the steps, with whatever else the
    binder hands back).
    """
    workspace = Workspace()
    bind(workspace)
    workspace.allocate()
    return bind(workspace)


def run_steps(steps: list[list]) -> None:
    """Run bound steps in order; a step cut in several parts is shared with a pool thread."""
    for parts in steps:
        if len(parts) == 1:
            parts[0]()
        else:
            share(parts)


def to_channels_first(x: np.ndarray) -> np.ndarray:
    """NHWC -> NCHW, contiguous."""
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


# Multiply-adds below which a layer runs on one thread: a hand-over costs ~30 us.
_SHARED_WORK = 1_000_000


class PointwiseConv:
    """A 1x1 convolution: ``weight (out, in)`` times every pixel's channel vector, plus ``bias (out,)``.

    A layer that widens (more outputs than inputs) carries its bias as one
    more weight column against a channel of ones appended to a copy of the
    input: copying the narrow input costs less than a pass adding the bias
    to the wide output (16 -> 96 channels of 112x112 with ReLU6: 1.18 against
    1.38 ms).  With ``relu6`` the activation follows each part's product.
    Bound with ``threads`` > 1 on a large enough layer, the threads share the
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
        self.weight = np.ascontiguousarray(weight)  # (out, in)
        self._transposed = None  # (in, out), contiguous: see _right
        self._ran = False
        self.bias = bias if channels_last else bias[:, None]

    def bind(self, x: np.ndarray, out: np.ndarray, workspace: Workspace, threads: int = 1) -> list[list]:
        """Steps computing this layer from the buffer ``x`` into ``out``, laid out as ``channels_last`` says.

        A channels-last ``x`` may have any pixel order: ``(N, H, W, C)``, or
        the ``(N, P, C)`` phases of a strided layer's input.  A widening
        layer copies ``x`` into the workspace's ``ones`` buffer with a channel
        of ones after it, unless ``x`` brings that channel itself (one more
        channel than the weights take: its last channel, kept at one by the
        caller).  Returns steps to run in order, each a list of parts that
        may run at once (``threads`` of them on a large enough layer).
        """
        c = x.shape[-1] if self.channels_last else x.shape[1]
        steps = []
        if self.augmented and c == self.inputs:
            x, copy = self._with_ones(x, workspace)
            steps.append([copy])
        elif c != self.inputs + self.augmented:
            raise ValueError(f"input has {c} channels; this layer takes {self.inputs}")
        if self.channels_last:
            rows, dst = x.reshape(-1, x.shape[-1]), out.reshape(-1, out.shape[-1])
            length = rows.shape[0]

            def part(lo, hi):
                a, o = rows[lo:hi], dst[lo:hi]
                return lambda: self._finish(np.matmul(a, self._right(), out=o), self.bias)
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

    def _with_ones(self, x: np.ndarray, workspace: Workspace):
        """The workspace's ``ones`` buffer shaped as ``x`` with one more channel, and a step filling it."""
        axis = x.ndim - 1 if self.channels_last else 1
        c = x.shape[axis]
        augmented = workspace.take("ones", x.shape[:axis] + (c + 1,) + x.shape[axis + 1:])
        inside = [slice(None)] * x.ndim
        inside[axis] = slice(0, c)
        data = augmented[tuple(inside)]
        inside[axis] = slice(c, c + 1)
        ones = augmented[tuple(inside)]

        def copy():
            np.copyto(data, x)
            ones.fill(1.0)
        return augmented, copy

    def _right(self) -> np.ndarray:
        """The weights as the right operand of a channels-last product, ``(in, out)``.

        A transposed view at the layer's first run, a contiguous copy from the
        second on: products with the copy are 20% faster (3.1 against 3.7 ms
        over Lite0's channels-last layers), but the copies (12.5 MB of new
        memory, ~8 ms with its page faults) would cost a process classifying
        one image more than they save.
        """
        if self._transposed is not None:
            return self._transposed
        if self._ran:
            self._transposed = np.ascontiguousarray(self.weight.T)
            return self._transposed
        self._ran = True
        return self.weight.T

    def _finish(self, out: np.ndarray, bias: np.ndarray) -> None:
        if not self.augmented:
            out += bias
        if self.relu6:
            np.clip(out, 0.0, 6.0, out=out)


class DepthwiseConv:
    """Each channel correlated with its own ``k x k`` kernel (``weight (C, k, k)``), plus ``bias (C,)``.

    The engine's depthwise entry point does the work
    (:func:`convcli.engine.plan_depthwise`: OpenCV per channel plane on
    channels-first maps, fused multiply-adds over contiguous channels on
    channels-last ones), bias included; ``relu6`` clips the result after.
    With ``phased`` (channels-last, strided) the layer is bound to its input
    split into the stride's phases (:func:`convcli.engine.split_phases`) and
    told the logical input ``shape``.  Plans are kept per input shape.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray, stride: int = 1, channels_last: bool = False,
                 phased: bool = False, relu6: bool = False) -> None:
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)
        self.stride = stride
        self.channels_last = channels_last
        self.phased = phased
        self.relu6 = relu6
        if phased and not channels_last:
            raise ValueError("phased input is laid out channels last")
        self._plans: dict[tuple, object] = {}

    def bind(self, x: np.ndarray, out: np.ndarray, workspace: Workspace, threads: int = 1,
             shape: tuple[int, ...] | None = None) -> list[list]:
        """Steps computing this layer from the buffer ``x`` into ``out`` (see :meth:`PointwiseConv.bind`).

        ``shape`` is the logical input shape of a ``phased`` layer, whose
        ``x`` holds the phases.  The layer takes no workspace buffer, so a
        dry binding (which only sizes the workspace) leaves its plan
        unbound: the plan's views and call arguments are most of the
        binding's time.
        """
        plan = self.plan(tuple(shape) if self.phased else x.shape, threads)
        steps = [] if workspace.dry else [plan.bind(x, out)]
        if self.relu6:
            steps.append([lambda: np.clip(out, 0.0, 6.0, out=out)])
        return steps

    def plan(self, shape: tuple[int, ...], threads: int = 1):
        """The plan for inputs of (logical) ``shape``, made on first use and kept; its ``out_shape`` is the output's."""
        key = (shape, threads)
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_depthwise(shape, self.weight, stride=self.stride, bias=self.bias,
                                  channels_last=self.channels_last, threads=threads, phased=self.phased)
            # Tiles depend on the layer's weights and the image's size, not the batch size: share.
            same = [o.tiles for o in self._plans.values() if o.tiles is not None and plan.tiles is not None
                    and o.tiles.shape == plan.tiles.shape]
            if same:
                plan = replace(plan, tiles=same[0])
            self._plans[key] = plan
        return plan


class DenseConv:
    """A full ``k x k`` convolution mixing all input channels (``weight (out, in, k, k)``), plus ``bias (out,)``.

    The engine gathers every tap's window of the zero-bordered, "same"-padded,
    strided input (:func:`convcli.engine.same_patches`, tap-major, then input
    channel); one float32 matrix product mixes those ``k * k * in`` rows into
    the output channels, and ``relu6`` clips the result.  The engine keeps
    every geometric decision; the multiply-adds run in BLAS.  For the RGB
    stem that is 27 rows of 112x112 (gathered in 0.3 ms, was 2 ms as nine
    unit-kernel correlations).  Channels first only.
    """

    def __init__(self, weight: np.ndarray, bias: np.ndarray, stride: int = 1, relu6: bool = False) -> None:
        weight = np.asarray(weight, dtype=np.float32)
        outputs, inputs, kh, kw = weight.shape
        # Columns in the order the patch rows are gathered: tap-major, then input channel.
        self.matrix = np.ascontiguousarray(weight.transpose(0, 2, 3, 1).reshape(outputs, kh * kw * inputs))
        self.bias = np.ascontiguousarray(bias, dtype=np.float32)[:, None]
        self.kernel_shape = (kh, kw)
        self.stride = stride
        self.relu6 = relu6

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(N, out, H_out, W_out)`` for an input of ``x_shape``."""
        ry, rx = plan_axes(x_shape[2:], self.kernel_shape, stride=self.stride, padding="same")
        return (x_shape[0], self.matrix.shape[0], ry.out, rx.out)

    def bind(self, x: np.ndarray, out: np.ndarray, workspace: Workspace, role: str = "patches") -> list[list]:
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
            if self.relu6:
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
