"""Kernels that are not weighted sums: rank filters, morphology and pooling, with their structuring elements.

A spec such as ``median:5``, ``erode:disk=2`` or ``maxpool:2`` resolves to
a :class:`~convcli.kernels.Kernel` whose ``operator`` is one of the classes
here; ``Kernel.apply`` hands the samples to it, and it calls the engine's
operator over the same window geometry as every other kernel.  A
structuring element (the window's shape) is data: a boolean array built by
:func:`structuring_element` from ``square=N`` (``size=`` for the rank
filters), ``disk=R``, ``cross=R``, ``diamond=R``, ``ball=R``,
``line=L,angle=DEG`` or ``footprint=FILE``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import KernelFileError, KernelMismatch, ParameterError, UsageError, shown
from .kernel import MAX_WEIGHTS

# Methods of the linear kernels mean nothing to these operators: they run as auto.
OPERATOR_METHODS = ("auto", "direct", "opencv")


def _method(method: str) -> str:
    return method if method in OPERATOR_METHODS else "auto"


def _flipped(footprint: np.ndarray, convolve: bool) -> np.ndarray:
    return footprint[(slice(None, None, -1),) * footprint.ndim] if convolve else footprint


# --------------------------------------------------------------------------- the operators
@dataclass(frozen=True, eq=False)
class RankOperator:
    """The ``rank``-th smallest sample under ``footprint`` (``what`` names it: median, minimum, ...)."""

    footprint: np.ndarray
    rank: int
    what: str

    kind = "rank"

    def plan(self, x_shape, x_dtype, *, convolve=False, method="auto", **geometry):
        from .. import engine

        return engine.plan_rank(x_shape, _flipped(self.footprint, convolve), self.rank, method=_method(method),
                                x_dtype=x_dtype, **_geometry(geometry))

    def execute(self, plan, x):
        from .. import engine

        return engine.execute_rank(plan, x)

    def window_args(self, args: dict, spatial_shape) -> dict:
        """The geometry this kernel's windows take: the chain's own."""
        return args

    def facts(self) -> dict:
        taps = int(np.count_nonzero(self.footprint))
        call = {"median": "median_filter(x", "minimum": "minimum_filter(x", "maximum": "maximum_filter(x"}.get(
            self.what, f"rank_filter(x, rank={self.rank}")
        if self.what.startswith("percentile"):
            call = f"percentile_filter(x, percentile={self.what.split()[1]}"
        return {"operator": f"{self.what}: sample {self.rank} (from 0) of the {taps} under the footprint, in order",
                "order": self.rank, "taps": taps,
                "equivalent": f"scipy.ndimage.{call}, footprint=F, mode=M)"}


@dataclass(frozen=True, eq=False)
class MorphologyOperator:
    """Erosion, dilation, opening, closing, tophat, blackhat or gradient by a flat structuring element."""

    operation: str
    footprint: np.ndarray

    kind = "morphology"

    def plan(self, x_shape, x_dtype, *, convolve=False, method="auto", **geometry):
        from .. import engine

        return engine.plan_morphology(x_shape, self.operation, _flipped(self.footprint, convolve),
                                      method=_method(method), x_dtype=x_dtype, **_geometry(geometry))

    def execute(self, plan, x):
        from .. import engine

        return engine.execute_morphology(plan, x)

    def window_args(self, args: dict, spatial_shape) -> dict:
        return args

    def facts(self) -> dict:
        scipy = {"erode": "grey_erosion", "dilate": "grey_dilation", "open": "grey_opening",
                 "close": "grey_closing", "tophat": "white_tophat", "blackhat": "black_tophat",
                 "gradient": "morphological_gradient"}[self.operation]
        return {"operator": f"{self.operation} by a flat structuring element of "
                            f"{int(np.count_nonzero(self.footprint))} taps",
                "taps": int(np.count_nonzero(self.footprint)),
                "equivalent": f"scipy.ndimage.{scipy}(x, footprint=F, mode=M)"}


@dataclass(frozen=True, eq=False)
class PoolOperator:
    """PyTorch's max or average pooling: a window of ``size`` per axis moved ``stride`` (the window by default)."""

    pool: str  # max | avg
    size: tuple[int, ...]
    stride: tuple[int, ...] | None
    ceil_mode: bool
    count_include_pad: bool

    kind = "pool"

    @property
    def footprint(self) -> np.ndarray:
        return np.ones(self.size, dtype=bool)

    def plan(self, x_shape, x_dtype, *, convolve=False, method="auto", stride=1, padding="same", dilation=1,
             channel_axis=None, precision=None, spatial_ndim=None, **_ignored):
        from .. import engine

        if any(s != 1 for s in np.atleast_1d(stride)):
            size = self.size[0] if len(set(self.size)) == 1 else ",".join(map(str, self.size))
            raise ParameterError(f"applies to the last kernel, and a pool takes its own stride: "
                                 f"{self.pool}pool:{size},stride=S (the window by default)", subject="stride")
        return engine.plan_pool(x_shape, self.pool, self.size, stride=self.stride, padding=pool_padding(padding),
                                dilation=dilation, ceil_mode=self.ceil_mode,
                                count_include_pad=self.count_include_pad, channel_axis=channel_axis,
                                precision=precision, spatial_ndim=spatial_ndim or len(self.size), x_dtype=x_dtype)

    def execute(self, plan, x):
        from .. import engine

        return engine.execute_pool(plan, x)

    def window_args(self, args: dict, spatial_shape) -> dict:
        """The chain's geometry as this pool lays its windows: its stride, PyTorch's padding (and ceil_mode's)."""
        from .. import engine

        plans = engine.pool_axes(spatial_shape, self.size, stride=self.stride,
                                 padding=pool_padding(args.get("padding", 0)), dilation=args.get("dilation", 1),
                                 ceil_mode=self.ceil_mode)
        return dict(args, stride=tuple(p.stride for p in plans), padding=tuple((p.before, p.after) for p in plans))

    def facts(self) -> dict:
        nd = len(self.size)
        stride = self.size if self.stride is None else self.stride
        extra = f", count_include_pad={self.count_include_pad}" if self.pool == "avg" else ", dilation=D"
        return {"operator": f"{'maximum' if self.pool == 'max' else 'mean'} over {'x'.join(map(str, self.size))} "
                            f"windows every {','.join(map(str, stride))} samples (PyTorch's {self.pool}_pool{nd}d)",
                "taps": int(np.prod(self.size)), "stride": list(stride), "ceil_mode": self.ceil_mode,
                "count_include_pad": self.count_include_pad,
                "equivalent": f"torch.nn.functional.{self.pool}_pool{nd}d(x, kernel_size={_tuple(self.size)}, "
                              f"stride={_tuple(stride)}, padding=P{extra}, ceil_mode={self.ceil_mode})"}


def _tuple(values) -> str:
    return f"({', '.join(map(str, values))}{',' if len(values) == 1 else ''})"


def _geometry(geometry: dict) -> dict:
    """The engine keywords a rank or morphology plan takes (the chain passes overwrite_x and out, which it has no use for)."""
    keep = ("stride", "padding", "pad_mode", "dilation", "channel_axis", "precision", "spatial_ndim")
    return {k: v for k, v in geometry.items() if k in keep}


def pool_padding(padding):
    """A pool's padding from the chain's: samples per axis; ``same`` (the default) and ``valid`` are none."""
    if isinstance(padding, str):
        word = padding.strip().lower()
        if word in ("same", "valid"):
            return 0
        raise ParameterError(f"a pool pads as PyTorch does, by N samples at each end (at most half the window), "
                             f"not {shown(padding)}", subject="padding")
    if isinstance(padding, (list, tuple)) and any(isinstance(p, (list, tuple)) for p in padding):
        raise ParameterError("a pool pads both ends alike (PyTorch's padding); give N or one N per axis",
                             subject="padding")
    return padding


# --------------------------------------------------------------------------- structuring elements
def structuring_element(ctx, *, box_name: str, box, disk, cross, diamond, ball, line, angle, footprint) -> np.ndarray:
    """The one structuring element a spec names, as a boolean array with the input's spatial ndim.

    ``box`` (``size=`` or ``square=``, one length per axis) is the default,
    3 samples per axis; ``disk`` and ``ball`` are Euclidean (an ellipse or
    ellipsoid when the radii differ per axis, as ``1.5mm`` on anisotropic
    voxels does), ``diamond`` the city-block ball, ``cross`` the axes
    through the centre, ``line`` a digital line through the centre (2D).
    """
    given = {name: value for name, value in
             ((box_name, box), ("disk", disk), ("cross", cross), ("diamond", diamond), ("ball", ball),
              ("line", line), ("footprint", footprint)) if value is not None}
    if len(given) > 1:
        raise UsageError(f"give one structuring element, not {' and '.join(given)}", subject=ctx.spec)
    if angle is not None and line is None:
        raise UsageError("angle= goes with line=L (a line at that angle)", subject=ctx.spec)
    if not given:
        return np.ones((3,) * ctx.ndim, dtype=bool)
    name, value = next(iter(given.items()))
    if name == box_name:
        sizes = []
        for n in value:
            if not (np.isfinite(n) and round(n) >= 1):
                raise UsageError(f"{box_name} must be at least 1 sample, not {n:g}", subject=ctx.spec)
            sizes.append(int(round(n)))
        _check_count(ctx, sizes)
        return np.ones(sizes, dtype=bool)
    if name == "footprint":
        return footprint_file(ctx, value)
    if name == "line":
        if ctx.ndim != 2:
            raise UsageError(f"line= is a 2D structuring element; this input has {ctx.ndim} spatial axes "
                             f"(use {box_name}=N,1,... for a line along an axis)", subject=ctx.spec)
        angle = 0.0 if angle is None else angle
        if not (np.isfinite(value) and value >= 1 and np.isfinite(angle)):
            raise UsageError(f"line takes a length of at least 1 sample and an angle in degrees, "
                             f"not {value:g} and {angle:g}", subject=ctx.spec)
        _check_count(ctx, [value, value])
        return digital_line(value, angle)
    for r in value:
        if not (np.isfinite(r) and r >= 0):
            raise UsageError(f"{name} takes a radius of 0 or more, not {r:g}", subject=ctx.spec)
    _check_count(ctx, [2 * np.floor(r + 1e-9) + 1 for r in value])
    return ball_shape(name, value)


def _check_count(ctx, shape) -> None:
    total = float(np.prod([float(n) for n in shape]))
    if total > MAX_WEIGHTS:
        raise UsageError(f"the structuring element would span {'x'.join(str(int(n)) for n in shape)} "
                         f"({total:.3g} samples, more than {MAX_WEIGHTS})", subject=ctx.spec)


def ball_shape(metric: str, radii) -> np.ndarray:
    """Offsets within ``radii`` (per axis, 0 or more) of the centre: Euclidean (disk, ball), city-block
    (diamond) or along one axis (cross).

    >>> ball_shape("disk", (2.0, 2.0)).astype(int)
    array([[0, 0, 1, 0, 0],
           [0, 1, 1, 1, 0],
           [1, 1, 1, 1, 1],
           [0, 1, 1, 1, 0],
           [0, 0, 1, 0, 0]])
    """
    half = [int(np.floor(r + 1e-9)) for r in radii]
    grid = np.meshgrid(*[np.arange(-h, h + 1, dtype=np.float64) for h in half], indexing="ij")
    scaled = [g / r if r > 0 else g for g, r in zip(grid, radii)]
    if metric in ("disk", "ball"):
        return sum(s * s for s in scaled) <= 1 + 1e-9
    if metric == "diamond":
        return sum(np.abs(s) for s in scaled) <= 1 + 1e-9
    return sum((g != 0).astype(int) for g in grid) <= 1  # cross


def digital_line(length: float, angle: float) -> np.ndarray:
    """A line of about ``length`` (1 or more) samples through the centre at ``angle`` degrees (0 along x,
    counter-clockwise as seen with rows going down).

    One sample per step along its longer axis, rounded to the nearest on the
    other, so it is symmetric about the centre.

    >>> digital_line(3, 45).astype(int)
    array([[0, 0, 1],
           [0, 1, 0],
           [1, 0, 0]])
    """
    theta = np.deg2rad(angle)
    dx, dy = np.cos(theta), -np.sin(theta)  # rows grow downwards
    half = (length - 1) / 2
    if abs(dx) >= abs(dy):
        xs = np.arange(-int(np.rint(half * abs(dx))), int(np.rint(half * abs(dx))) + 1)
        ys = np.rint(xs * dy / dx)
    else:
        ys = np.arange(-int(np.rint(half * abs(dy))), int(np.rint(half * abs(dy))) + 1)
        xs = np.rint(ys * dx / dy)
    ry, rx = int(np.abs(ys).max()), int(np.abs(xs).max())
    out = np.zeros((2 * ry + 1, 2 * rx + 1), dtype=bool)
    out[ys.astype(int) + ry, xs.astype(int) + rx] = True
    return out


def footprint_file(ctx, text: str) -> np.ndarray:
    """A footprint read from a kernel file in any format: 0 and 1 (or false and true) only.

    The file is data: a bad one is failed work (exit 1), like any kernel file.
    """
    from . import files
    from .kernel import fit_ndim

    path = Path(text).expanduser()
    try:
        definition = files.read_definition(path, subject=str(path))
        arrays = definition.weights_for(ctx.ndim, subject=str(path))
        if len(arrays) != 1:
            raise UsageError(f"holds {len(arrays)} kernels; a footprint is one array", subject=str(path))
        mask = fit_ndim(np.asarray(arrays[0]), ctx.ndim, subject=str(path))
    except (KernelFileError, KernelMismatch):  # a kernel that does not fit is the same mistake inline or in a file
        raise
    except UsageError as exc:
        raise KernelFileError(exc.message, subject=exc.subject) from None
    bad = ~np.isin(mask, (0, 1))
    if bad.any():
        where = [int(i) for i in np.argwhere(bad)[0]]
        raise KernelFileError(f"holds {float(mask[tuple(where)]):g} at index {where}; a footprint holds only 0 and 1",
                              subject=str(path))
    if not mask.any():
        raise KernelFileError("holds no 1: a footprint needs at least one tap", subject=str(path))
    _check_count(ctx, mask.shape)
    return mask.astype(bool)


# --------------------------------------------------------------------------- family builders
def _shape_args(ctx, box_name: str, box, disk, cross, diamond, ball, line, angle, footprint) -> np.ndarray:
    return structuring_element(ctx, box_name=box_name, box=box, disk=disk, cross=cross, diamond=diamond, ball=ball,
                               line=line, angle=angle, footprint=footprint)


def median(ctx, size, disk, cross, diamond, ball, line, angle, footprint):
    f = _shape_args(ctx, "size", size, disk, cross, diamond, ball, line, angle, footprint)
    return RankOperator(f, int(np.count_nonzero(f)) // 2, "median")


def minimum(ctx, size, disk, cross, diamond, ball, line, angle, footprint):
    return RankOperator(_shape_args(ctx, "size", size, disk, cross, diamond, ball, line, angle, footprint), 0,
                        "minimum")


def maximum(ctx, size, disk, cross, diamond, ball, line, angle, footprint):
    f = _shape_args(ctx, "size", size, disk, cross, diamond, ball, line, angle, footprint)
    return RankOperator(f, int(np.count_nonzero(f)) - 1, "maximum")


def percentile(ctx, p, size, disk, cross, diamond, ball, line, angle, footprint):
    """scipy's percentile_filter: sample int(n p / 100) of the n in order (the largest for 100; -p is 100 - p)."""
    f = _shape_args(ctx, "size", size, disk, cross, diamond, ball, line, angle, footprint)
    n = int(np.count_nonzero(f))
    q = p + 100.0 if p < 0 else p
    if not (np.isfinite(q) and 0 <= q <= 100):
        raise UsageError(f"p must be from -100 to 100 (percent), not {p:g}", subject=ctx.spec)
    return RankOperator(f, n - 1 if q == 100 else int(n * q / 100.0), f"percentile {p:g}")


def rank(ctx, r, size, disk, cross, diamond, ball, line, angle, footprint):
    """scipy's rank_filter: sample r (from 0) of the n in order; a negative r counts from the largest."""
    f = _shape_args(ctx, "size", size, disk, cross, diamond, ball, line, angle, footprint)
    n = int(np.count_nonzero(f))
    if not -n <= r < n:
        raise UsageError(f"r must be from {-n} to {n - 1} for a window of {n} samples, not {r}", subject=ctx.spec)
    order = r + n if r < 0 else r
    return RankOperator(f, order, "minimum" if order == 0 else "maximum" if order == n - 1 else f"rank {r}")


def morphology(operation: str):
    def build(ctx, square, disk, cross, diamond, ball, line, angle, footprint):
        return MorphologyOperator(operation, _shape_args(ctx, "square", square, disk, cross, diamond, ball, line,
                                                         angle, footprint))

    build.__name__ = operation
    return build


def pool(kind: str):
    def build(ctx, size, stride, ceil, count_pad=True):
        if any(n < 1 for n in size) or (stride is not None and any(s < 1 for s in stride)):
            raise UsageError("size and stride must be at least 1", subject=ctx.spec)
        return PoolOperator(kind, tuple(size), None if stride is None else tuple(stride), ceil, count_pad)

    build.__name__ = f"{kind}pool"
    return build
