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

from .layers import (
    DenseConv, DepthwiseConv, Linear, PointwiseConv, global_average_pool, relu6, to_channels_first, to_channels_last,
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
    # Blocks whose output is downsampled this much (maps of 14x14 and less at 224)
    # run channels-last, where the engine's per-channel filtering is faster
    # (240 channels of 28x28, 3x3 stride 2: 0.35 ms channels-last, 1.2 ms first).
    channels_last_stride: int = 16


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
                stage.outputs, channels_last=downsampled * stride >= config.channels_last_stride,
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
    """Mobile inverted bottleneck: 1x1 expand, depthwise k x k, 1x1 project, identity skip."""

    def __init__(self, row: BlockRow, params: dict[str, np.ndarray]) -> None:
        prefix = f"_blocks.{row.index}"
        self.row = row
        last = row.channels_last
        self.expand = None
        if row.expand != 1:
            w, b = _pair(params, f"{prefix}._expand_conv")
            self.expand = PointwiseConv(w[:, :, 0, 0], b, channels_last=last, relu6=True)
        w, b = _pair(params, f"{prefix}._depthwise_conv")
        self.depthwise = DepthwiseConv(w[:, 0], b, stride=row.stride, channels_last=last)
        w, b = _pair(params, f"{prefix}._project_conv")
        self.project = PointwiseConv(w[:, :, 0, 0], b, channels_last=last)

    def __call__(self, x: np.ndarray, threads: int = 1) -> np.ndarray:
        """The block on ``x``; ``threads`` share each layer's work."""
        h = self.expand(x, threads) if self.expand is not None else x
        h = relu6(self.depthwise(h, threads))
        h = self.project(h, threads)  # linear bottleneck: no activation
        if self.row.residual:
            h += x
        return h


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
        How many threads share each large layer of a single image.  One by
        default: on this project's 2-core machine a hand-over per layer made
        one image slower whenever another job held a core (23 -> 29 ms), and
        matrix products themselves gained at most 1.2x from a second thread.
    """

    def __init__(self, params: dict[str, np.ndarray], config: Config = LITE0, threads: int | None = None,
                 layer_threads: int = 1) -> None:
        self.config = config
        self.threads = threads if threads is not None else default_threads()
        self.layer_threads = layer_threads
        w, b = _pair(params, "_conv_stem")
        self.stem = DenseConv(w, b, stride=2)
        self.blocks = [MBConv(row, params) for row in block_rows(config)]
        w, b = _pair(params, "_conv_head")
        self.head = PointwiseConv(w[:, :, 0, 0], b, channels_last=self.blocks[-1].row.channels_last, relu6=True)
        self.fc = Linear(*_pair(params, "_fc"))

    def features(self, x: np.ndarray) -> np.ndarray:
        """The last feature maps, ``(N, 1280, 7, 7)`` for a 224x224 input: what the classifier pools."""
        x = np.asarray(x, dtype=np.float32)
        parts = min(self.threads, len(x))
        if parts <= 1:
            return self._features(x, self.layer_threads)
        # Images are independent: one share of the batch per thread, one
        # hand-over per call (a split inside every layer would cost a
        # hand-over per layer, ~50 per forward pass).
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(parts) as pool:
            return np.concatenate(list(pool.map(lambda part: self._features(part, 1), np.array_split(x, parts))))

    def _features(self, x: np.ndarray, threads: int) -> np.ndarray:
        x = relu6(self.stem(x))
        channels_last = False
        for block in self.blocks:
            if block.row.channels_last != channels_last:
                channels_last = block.row.channels_last
                x = to_channels_last(x) if channels_last else to_channels_first(x)
            x = block(x, threads)
        x = self.head(x, threads)
        return to_channels_first(x) if channels_last else x

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
        weights = self.fc.weight_t[:, index]
        return np.tensordot(weights, features, axes=(0, 0))


def default_threads() -> int:
    """One thread per available core when BLAS runs single-threaded (as ``convcli classify`` sets it), else 1.

    Threads that each call a multi-threaded OpenBLAS fight over the cores:
    8 images on 2 cores ran at 12 images/s so, against 42 with one BLAS
    thread.  OpenBLAS reads its thread count from the environment when it
    loads, ``OPENBLAS_NUM_THREADS`` first, then ``OMP_NUM_THREADS``.
    """
    import os

    blas = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    if blas is None or blas.strip() != "1":
        return 1
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _pair(params: dict[str, np.ndarray], name: str) -> tuple[np.ndarray, np.ndarray]:
    return params[f"{name}.weight"], params[f"{name}.bias"]
