"""The in-memory form of every input (samples plus what is needed to write them back), and what a write did."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

KINDS = ("signal", "audio", "image", "volume")


@dataclass
class Signal:
    """Samples of one input and the metadata that travels with them.

    ``data`` holds the spatial axes first (time; rows, columns; slices, rows,
    columns) and, when ``channel_axis`` is -1, one last axis of channels that
    are filtered independently.  Samples keep the sample type they were read
    with (uint8, uint16, int16, float32, ...); ``meta`` carries what a writer
    needs to put back exactly what was read (format, subtype, ICC profile,
    DPI, NIfTI header, ...).
    """

    data: np.ndarray
    kind: str = "signal"
    channel_axis: int | None = None
    sample_rate: float | None = None  # audio: samples per second
    spacing: tuple[float, ...] | None = None  # per spatial axis, in millimetres
    meta: dict[str, Any] = field(default_factory=dict)
    streamed: bool = False  # ``data`` maps a file over the memory budget, read-only: filter it band by band

    @property
    def spatial_ndim(self) -> int:
        """How many axes are spatial (1 audio/signal, 2 image, 3 volume)."""
        return self.data.ndim - (0 if self.channel_axis is None else 1)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        shape = self.data.shape
        return shape if self.channel_axis is None else shape[:-1]


@dataclass
class Written:
    """What a write did: where, in which format, and what it had to change."""

    path: str
    format: str
    clipped: int = 0  # integer samples outside the output range, clipped
    notes: list[str] = field(default_factory=list)  # conversions the format forced
