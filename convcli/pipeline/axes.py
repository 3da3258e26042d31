"""Which axes of a signal the kernels run along (``--axes``), and how the engine is shown them.

The engine takes the last ``spatial_ndim`` axes before the channels as
spatial and every axis before them as a batch axis filtered alike.  A chain
on chosen axes therefore moves those axes to just before the channels, runs,
and moves them back.  Names: ``x``, ``y``, ``z`` are the last,
second-to-last and third-to-last spatial axes, ``t`` the frames of an
animation or a time series (``Signal.frames``); channels are never an axis
of the kernel.  The kernel's axes are the named ones in the data's order (t,
z, y, x), whatever order they are named in, as with scipy.ndimage's
``axes=``: ``sobel-x`` on ``--axes x,z`` differentiates along x.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ParameterError
from .options import check_axes

SPATIAL_NAMES = ("z", "y", "x")  # the last three spatial axes, outermost first


@dataclass(frozen=True)
class Axes:
    """The axes a chain runs along: their names, where they are in the data, where the engine sees them."""

    names: tuple[str, ...]  # in the order of the kernel's axes: the data's (t, z, y, x)
    source: tuple[int, ...]  # the data axes they are
    target: tuple[int, ...]  # where they sit while the engine runs: just before the channels
    spatial: tuple[int | None, ...]  # per named axis, its index among the signal's spatial axes (None: frames)
    spatial_ndim: int  # the signal's spatial axes, named or not

    @property
    def ndim(self) -> int:
        """How many axes the kernels have."""
        return len(self.names)

    @property
    def moved(self) -> bool:
        return self.source != self.target

    def to_engine(self, data):
        """``data`` (in the signal's layout) as the engine takes it: the named axes last before the channels."""
        import numpy as np

        return np.moveaxis(data, self.source, self.target) if self.moved else data

    def from_engine(self, data):
        """The inverse of :meth:`to_engine`, for a result in the engine's layout."""
        import numpy as np

        return np.moveaxis(data, self.target, self.source) if self.moved else data

    def engine_shape(self, shape) -> tuple[int, ...]:
        return _moved(tuple(shape), self.source, self.target)

    def signal_shape(self, shape) -> tuple[int, ...]:
        return _moved(tuple(shape), self.target, self.source)

    def per_spatial_axis(self, values, fill) -> tuple:
        """One value per named axis -> one per spatial axis of the signal (``fill`` where not named)."""
        out = [fill] * self.spatial_ndim
        for index, value in zip(self.spatial, values):
            if index is not None:
                out[index] = value
        return tuple(out)

    def spacing(self, signal) -> tuple[float, ...] | None:
        """The sample spacing of each named axis, or None unless every named axis has one (frames have none)."""
        if signal.spacing is None or None in self.spatial:
            return None
        return tuple(signal.spacing[i] for i in self.spatial)

    def sample_rate(self, signal) -> float | None:
        """The signal's sample rate when the kernels run along its time axis (audio), else None."""
        return signal.sample_rate if self.spatial == (self.spatial_ndim - 1,) and self.spatial_ndim == 1 else None


def axes_of(signal, names: tuple[str, ...] | None) -> Axes:
    """The axes ``names`` of ``signal`` (None: every spatial axis), in the data's order; refuse names it lacks.

    >>> import numpy as np
    >>> from convcli.io import Signal
    >>> volume = Signal(np.zeros((4, 5, 6)), kind="volume")
    >>> axes_of(volume, ("y", "x")).engine_shape(volume.data.shape)
    (4, 5, 6)
    >>> axes_of(volume, ("z",)).engine_shape(volume.data.shape)
    (5, 6, 4)
    """
    nd = signal.spatial_ndim
    first = int(signal.frames)  # data axis of the first spatial axis
    natural = SPATIAL_NAMES[3 - nd:] if nd <= 3 else None
    if names is None:
        if natural is None:
            raise ParameterError(f"the input has {nd} spatial axes; name the ones to filter with --axes",
                                 subject="axes")
        names = natural
    check_axes(names)
    if len(names) > 3:
        raise ParameterError(f"names {len(names)} axes; a kernel has at most 3", subject="axes")
    source, spatial = [], []
    for name in names:
        if name == "t":
            if not signal.frames:
                raise ParameterError(f"the input has no frames (t); its axes are {_described(natural)}",
                                     subject="axes")
            source.append(0)
            spatial.append(None)
            continue
        index = nd - 3 + SPATIAL_NAMES.index(name)
        if index < 0:
            raise ParameterError(f"the input has no {name} axis; its axes are {_described(natural, signal.frames)}",
                                 subject="axes")
        source.append(first + index)
        spatial.append(index)
    order = sorted(range(len(names)), key=source.__getitem__)
    last = signal.data.ndim - (signal.channel_axis is not None)
    target = tuple(range(last - len(names), last))
    return Axes(tuple(names[i] for i in order), tuple(source[i] for i in order), target,
                tuple(spatial[i] for i in order), nd)


def _described(natural, frames: bool = False) -> str:
    names = ("t",) * frames + tuple(natural or ())
    return ", ".join(names) if names else "none"


def _moved(shape: tuple[int, ...], source, target) -> tuple[int, ...]:
    order = [i for i in range(len(shape)) if i not in source]
    for dst, src in sorted(zip(target, source)):
        order.insert(dst, src)
    return tuple(shape[i] for i in order)
