"""EfficientNet-Lite0 as a table of block rows and a few small layers.

The architecture is the one the published checkpoint was trained with (the
``efficientnet_lite_pytorch`` reference): a 3x3/2 stem to 32 channels, the
MBConv stages of :data:`LITE0_STAGES` (no squeeze-excite, ReLU6), a 1x1 head
to 1280 channels, global average pooling and a fully connected layer to the
1000 ImageNet classes.  Every convolution is "same"-padded the TensorFlow way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..engine import split_phases
from .. import parallel
from .layers import (
    DenseConv, DepthwiseConv, Linear, PointwiseConv, Workspace, bind_sized, global_average_pool, run_steps,
    to_channels_first,
)


@dataclass(frozen=True)
class StageRow:
    """One stage: ``repeats`` MBConv blocks; only the first one strides and changes the width.

    Written like the reference's block strings: ``r2_k3_s22_e6_i16_o24`` is
    ``StageRow(repeats=2, kernel=3, stride=2, expand=6, inputs=16, outputs=24)``.
    """

    repeats: int
    kernel: int
    stride: int
    expand: int  # width of the depthwise layer = expand * block input width
    inputs: int
    outputs: int


LITE0_STAGES = (
    StageRow(1, 3, 1, 1, 32, 16),
    StageRow(2, 3, 2, 6, 16, 24),
    StageRow(2, 5, 2, 6, 24, 40),
    StageRow(3, 3, 2, 6, 40, 80),
    StageRow(3, 5, 1, 6, 80, 112),
    StageRow(4, 5, 2, 6, 112, 192),
    StageRow(1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class Config:
    """The shape of an EfficientNet-Lite network."""

    stages: tuple[StageRow, ...] = LITE0_STAGES
    in_channels: int = 3  # RGB
    stem_channels: int = 32  # 3x3/2 stem convolution
    head_channels: int = 1280  # 1x1 convolution before pooling
    classes: int = 1000  # ImageNet-1k
    image_size: int = 224  # the input side the network was trained at
    bn_epsilon: float = 1e-3  # TensorFlow's default, used by the reference
    # Blocks whose output is downsampled this much (maps of 14x14 and less at
    # 224) run channels-last, where the engine's per-channel filtering is
    # faster on many small maps (672 channels of 14x14, 5x5: 0.65 ms against
    # 2.5 ms plane by plane), and so does every strided block, whose input
    # is then split into the stride's phases (96 channels of 112x112, 3x3
    # stride 2: 1.0 ms against 1.5 ms plane by plane at full resolution).
    # Stride-1 blocks on larger maps stay channels-first (240 channels of
    # 28x28, 5x5: 1.1 ms plane by plane, 1.3 ms channels-last).
    channels_last_stride: int = 16
    strided_channels_last: bool = True


LITE0 = Config()


@dataclass(frozen=True)
class BlockRow:
    """One MBConv block, as expanded from its stage."""

    index: int
    kernel: int
    stride: int
    expand: int
    inputs: int
    outputs: int
    channels_last: bool = False  # activations (N, H, W, C) instead of (N, C, H, W)

    @property
    def hidden(self) -> int:
        return self.inputs * self.expand

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.inputs == self.outputs


def block_rows(config: Config = LITE0) -> list[BlockRow]:
    """Expand the stage table into one row per block (16 for Lite0)."""
    rows = []
    downsampled = 2  # by the stem
    for stage in config.stages:
        for i in range(stage.repeats):
            first = i == 0
            stride = stage.stride if first else 1
            rows.append(BlockRow(
                len(rows), stage.kernel, stride, stage.expand, stage.inputs if first else stage.outputs,
                stage.outputs, channels_last=downsampled * stride >= config.channels_last_stride
                or (stride > 1 and config.strided_channels_last),
            ))
            downsampled *= stride
    return rows


@dataclass(frozen=True)
class ConvSpec:
    """One convolution and the batch norm that follows it, as named in the checkpoint.

    ``name`` is the checkpoint's name of the convolution; its weight has
    ``shape``.  ``bn`` is the batch norm folded into it, or ``None`` for the
    final fully connected layer, which has its own bias.
    """

    name: str
    shape: tuple[int, ...]
    bn: str | None


def conv_specs(config: Config = LITE0) -> Iterator[ConvSpec]:
    """Every weight tensor of the network in forward order, with the checkpoint's names and shapes."""
    yield ConvSpec("_conv_stem", (config.stem_channels, config.in_channels, 3, 3), "_bn0")
    for row in block_rows(config):
        prefix = f"_blocks.{row.index}"
        if row.expand != 1:
            yield ConvSpec(f"{prefix}._expand_conv", (row.hidden, row.inputs, 1, 1), f"{prefix}._bn0")
        yield ConvSpec(f"{prefix}._depthwise_conv", (row.hidden, 1, row.kernel, row.kernel), f"{prefix}._bn1")
        yield ConvSpec(f"{prefix}._project_conv", (row.outputs, row.hidden, 1, 1), f"{prefix}._bn2")
    last = config.stages[-1].outputs
    yield ConvSpec("_conv_head", (config.head_channels, last, 1, 1), "_bn1")
    yield ConvSpec("_fc", (config.classes, config.head_channels), None)


class MBConv:
    """Mobile inverted bottleneck: 1x1 expand, depthwise k x k, 1x1 project, identity skip.

    ``input_channels_last`` is the layout the block receives (the one the
    block before it runs in); it converts that to its own.  A strided
    channels-last block splits its narrow input into the stride's phases
    before the expand, so the depthwise layer computes only the samples it
    keeps, from phases it does not have to copy.
    """

    def __init__(self, row: BlockRow, params: dict[str, np.ndarray], input_channels_last: bool = False) -> None:
        prefix = f"_blocks.{row.index}"
        self.row = row
        self.input_channels_last = input_channels_last
        last = row.channels_last
        self.phased = last and row.stride > 1
        self.expand = None
        if row.expand != 1:
            w, b = _pair(params, f"{prefix}._expand_conv")
            self.expand = PointwiseConv(w[:, :, 0, 0], b, channels_last=last, relu6=True)
        w, b = _pair(params, f"{prefix}._depthwise_conv")
        self.depthwise = DepthwiseConv(w[:, 0], b, stride=row.stride, channels_last=last, phased=self.phased,
                                       relu6=True)
        w, b = _pair(params, f"{prefix}._project_conv")
        self.project = PointwiseConv(w[:, :, 0, 0], b, channels_last=last)

    def output_shape(self, x_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The block's output shape, in its own layout, for an input of ``x_shape`` (in its input's layout)."""
        n, h, w = self._images(x_shape)
        h, w = -(-h // self.row.stride), -(-w // self.row.stride)
        return (n, h, w, self.row.outputs) if self.row.channels_last else (n, self.row.outputs, h, w)

    def bind(self, x: np.ndarray, out: np.ndarray, workspace: Workspace, threads: int = 1) -> list[list]:
        """Steps computing the block from the buffer ``x`` into ``out`` (shaped as :meth:`output_shape` says).

        Its hidden layers take the workspace's roles ``hidden`` (the expanded
        input) and ``filtered`` (the depthwise output); a layout change or a
        split into phases takes ``input``.  ``out`` must not share memory
        with them or with ``x``.
        """
        row, steps = self.row, []
        n, h, w = self._images(x.shape)
        shape = (n, h, w, row.hidden)
        if self.phased:
            extra = int(self.expand is not None and self.expand.augmented)  # a channel of ones for the bias
            split = workspace.take("input", (n, h * w, row.inputs + extra))
            data = split[..., :row.inputs]
            stride, first = row.stride, self.input_channels_last

            def run(source=x):
                split_phases(source, stride, channels_last=first, out=data)
                if extra:
                    split[..., -1] = 1.0
            steps.append([run])
            x = split
        elif row.channels_last != self.input_channels_last:
            converted = workspace.take("input", (n, h, w, row.inputs) if row.channels_last else (n, row.inputs, h, w))
            source = x.transpose(0, 2, 3, 1) if row.channels_last else x.transpose(0, 3, 1, 2)
            steps.append([lambda: np.copyto(converted, source)])
            x = converted
        if self.expand is not None:
            hidden = workspace.take("hidden", x.shape[:-1] + (row.hidden,) if row.channels_last
                                    else (n, row.hidden) + x.shape[2:])
            steps += self.expand.bind(x, hidden, workspace, threads)
        else:
            hidden = x
        filtered = workspace.take("filtered", self.depthwise.plan(shape if self.phased else hidden.shape,
                                                                  threads).out_shape)
        steps += self.depthwise.bind(hidden, filtered, workspace, threads, shape)
        steps += self.project.bind(filtered, out, workspace, threads)
        if row.residual:
            residual = x[..., :row.inputs] if row.channels_last else x[:, :row.inputs]
            steps.append([lambda: np.add(out, residual, out=out)])
        return steps

    def _images(self, x_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """``(N, H, W)`` of an input of ``x_shape``, in the layout the block receives."""
        return tuple(x_shape[:3]) if self.input_channels_last else (x_shape[0],) + tuple(x_shape[2:])


class EfficientNetLite:
    """The network with folded weights; call it on ``(N, 3, 224, 224)`` float32 to get ``(N, 1000)`` logits.

    Parameters
    ----------
    params : dict
        ``<conv>.weight`` and ``<conv>.bias`` for every :func:`conv_specs`
        entry, batch norm already folded in (see :mod:`convcli.nn.weights`).
    config : Config
        The architecture; Lite0 by default.
    threads : int, optional
        How many threads share a batch of several images (numpy, BLAS and
        OpenCV release the interpreter while they compute); by default
        :func:`default_threads`.
    layer_threads : int
        How many threads share each large layer of a single image (a helper
        thread takes the parts it gets to first, see
        :func:`convcli.parallel.share`).  One by default: on this
        project's 2-core machine two threads of matrix products ran 1.0-1.2x
        as fast as one, and sharing made one image slower (21 -> 24 ms).

    Every pass runs compiled (:class:`_CompiledPass`): the network bound
    once per input shape to preallocated buffers, the first pass included.
    """

    def __init__(self, params: dict[str, np.ndarray], config: Config = LITE0, threads: int | None = None,
                 layer_threads: int = 1) -> None:
        self.config = config
        self.threads = threads if threads is not None else default_threads()
        self.layer_threads = layer_threads
        w, b = _pair(params, "_conv_stem")
        self.stem = DenseConv(w, b, stride=2, relu6=True)
        self.blocks, last = [], False
        for row in block_rows(config):
            self.blocks.append(MBConv(row, params, input_channels_last=last))
            last = row.channels_last
        w, b = _pair(params, "_conv_head")
        self.head = PointwiseConv(w[:, :, 0, 0], b, channels_last=self.blocks[-1].row.channels_last, relu6=True)
        self.fc = Linear(*_pair(params, "_fc"))
        # (input shape, threads) -> the compiled passes of that key not running now.
        self._passes: dict[tuple, list[_CompiledPass]] = {}

    def features(self, x: np.ndarray) -> np.ndarray:
        """The last feature maps, ``(N, 1280, 7, 7)`` for a 224x224 input: what the classifier pools."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"expected a batch of images (N, C, H, W), got shape {x.shape}")
        parts = min(self.threads, len(x))
        if parts <= 1:
            return self._compiled(x, self.layer_threads)
        # Images are independent: one share of the batch per thread, one
        # hand-over per call (a split inside every layer would cost a
        # hand-over per layer, ~50 per forward pass).
        shares = np.array_split(x, parts)
        return np.concatenate(parallel.map_ordered(lambda share: self._compiled(share, 1), shares))

    def _compiled(self, x: np.ndarray, threads: int) -> np.ndarray:
        """The feature maps of ``x`` by an idle compiled pass of its shape, or a new one.

        A pass runs in one thread at a time: a caller finding every pass of
        its shape busy (shares of one batch, or callers in several threads)
        compiles one more, kept for later calls.
        """
        key = (x.shape, threads)
        idle = self._passes.get(key)
        if idle is None:
            if len(self._passes) >= 4:  # a few input shapes at a time: each pass holds its buffers
                self._passes.clear()
            idle = self._passes.setdefault(key, [])
        try:
            compiled = idle.pop()
        except IndexError:
            compiled = _CompiledPass(self, x.shape, threads)
        try:
            return compiled(x)
        finally:
            idle.append(compiled)

    def classifier(self, features: np.ndarray) -> np.ndarray:
        """Logits from feature maps: global average pooling, then the fully connected layer."""
        return self.fc(global_average_pool(features))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.classifier(self.features(x))

    def class_activation_map(self, features: np.ndarray, index: int) -> np.ndarray:
        """Feature maps ``(1280, H, W)`` of one image weighted by class ``index``'s fully connected weights.

        Averaging this map over the pixels gives the class's logit minus its
        bias: it says how much each place in the picture voted for the class.
        """
        weights = self.fc.weight[index]
        return np.tensordot(weights, features, axes=(0, 0))


class _CompiledPass:
    """The forward pass for one input shape, bound to preallocated buffers: a list of steps.

    Every layer is bound once (its views, its OpenCV calls' arguments, the
    plans and tiles of its depthwise layer), then a call copies the input in
    and runs the steps.  Blocks pass their outputs through two buffers in
    turn; their hidden layers share the workspace's other roles, so a pass
    of Lite0 holds ~10 MB per image instead of allocating ~29 MB.
    """

    def __init__(self, model: EfficientNetLite, shape: tuple[int, ...], threads: int) -> None:
        self.input, self.output, self.steps = bind_sized(lambda workspace: self._bind(model, shape, threads, workspace))
        self.channels_last = model.blocks[-1].row.channels_last

    @staticmethod
    def _bind(model: EfficientNetLite, shape, threads: int, workspace: Workspace):
        # The stem's input and patches are dead before any block writes its hidden layers: they share their buffers.
        image = workspace.take("filtered", tuple(shape))
        x = workspace.take("a", model.stem.output_shape(image.shape))
        steps = model.stem.bind(image, x, workspace, role="hidden")
        for i, block in enumerate(model.blocks):
            out = workspace.take("ab"[(i + 1) % 2], block.output_shape(x.shape))
            steps += block.bind(x, out, workspace, threads)
            x = out
        channels = model.head.weight.shape[0]
        head = workspace.take("hidden", x.shape[:-1] + (channels,) if model.head.channels_last
                              else (x.shape[0], channels) + x.shape[2:])
        steps += model.head.bind(x, head, workspace, threads)
        return image, head, steps

    def __call__(self, x: np.ndarray) -> np.ndarray:
        np.copyto(self.input, x)
        run_steps(self.steps)
        # A new array: the buffer is overwritten by the next call.
        return to_channels_first(self.output) if self.channels_last else self.output.copy()


def default_threads() -> int:
    """One thread per available core when BLAS runs single-threaded (as ``convcli classify`` sets it), else 1.

    Threads that each call a multi-threaded OpenBLAS fight over the cores:
    8 images on 2 cores ran at 12 images/s so, against 42 with one BLAS
    thread.
    """
    return parallel.cores() if parallel.blas_single_threaded() else 1


def _pair(params: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    return params[f"{name}.weight"], params[f"{name}.bias"]
