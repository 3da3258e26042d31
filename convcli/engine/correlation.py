"""``correlate`` and ``convolve``: one worker, two faces."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError
from . import strategies
from .borders import BorderMode, pad, parse_pad_mode
from .geometry import AxisPlan, plan_axes


@dataclass(frozen=True)
class Plan:
    """Everything decided before any sample is touched: layout, geometry, method."""

    spatial_ndim: int
    channel_axis: int | None  # normalised to a non-negative index, or None
    batch_shape: tuple[int, ...]
    channels: int
    per_channel: bool
    axes: tuple[AxisPlan, ...]
    border: BorderMode
    border_value: float
    dtype: np.dtype
    choice: strategies.Choice
    method: str

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the result, in the layout of the input."""
        spatial = [p.out for p in self.axes]
        shape = list(self.batch_shape) + spatial
        if self.channel_axis is not None:
            shape.insert(self.channel_axis, self.channels)
        return tuple(shape)

    def padding(self) -> tuple[tuple[int, int], ...]:
        return tuple((p.before, p.after) for p in self.axes)


def correlate(
    x,
    kernel,
    *,
    stride=1,
    padding="same",
    pad_mode="reflect",
    dilation=1,
    channel_axis=None,
    method="auto",
    precision=None,
    spatial_ndim=None,
):
    """Cross-correlate ``x`` with ``kernel``: the kernel laid over the samples as written.

    Parameters
    ----------
    x : array_like
        The signal.  Its spatial axes are the last ``spatial_ndim`` axes that
        are not ``channel_axis``; other leading axes are batch axes, filtered
        with the same kernel.
    kernel : array_like
        The weights, one axis per spatial axis; with ``channel_axis`` set, a
        leading axis of length C gives every channel its own weights
        (depthwise).
    stride, dilation : int or sequence of int
        One value for all spatial axes, or one per axis.
    padding : {"same", "valid", "full"} or int or sequence of int
        ``same`` follows TensorFlow (output ``ceil(n / stride)``), the others
        PyTorch's output-size formula.
    pad_mode : str
        Border mode: zeros, constant:V, reflect, symmetric, replicate,
        circular, or an alias (see ``convcli.engine.BORDER_MODES``).
    channel_axis : int, optional
        An axis of ``x`` whose channels are filtered independently.
    method : {"auto", "direct", "separable", "fft"}
        The strategy; all agree to float tolerance.
    precision : {None, "float32", "float64"}
        The compute and output type; by default float64 for float64 input,
        float32 for everything else.
    spatial_ndim : int, optional
        How many axes are spatial; needed only when a depthwise kernel with
        batch axes would otherwise be ambiguous.

    Returns
    -------
    numpy.ndarray
        The result, laid out like ``x`` with spatial lengths from the geometry.

    Examples
    --------
    >>> correlate(np.array([0.0, 1, 2, 3]), np.array([1.0, -1.0]), padding="valid")
    array([-1., -1., -1.], dtype=float32)
    """
    return _run(x, kernel, False, stride, padding, pad_mode, dilation, channel_axis, method, precision, spatial_ndim)


def convolve(
    x,
    kernel,
    *,
    stride=1,
    padding="same",
    pad_mode="reflect",
    dilation=1,
    channel_axis=None,
    method="auto",
    precision=None,
    spatial_ndim=None,
):
    """Convolve ``x`` with ``kernel``: correlation with the kernel flipped on every spatial axis.

    Takes the same parameters as :func:`correlate`.
    """
    return _run(x, kernel, True, stride, padding, pad_mode, dilation, channel_axis, method, precision, spatial_ndim)


def _run(x, kernel, flip, stride, padding, pad_mode, dilation, channel_axis, method, precision, spatial_ndim):
    x = _as_samples(x)
    kernel = _as_kernel(kernel)
    plan = make_plan(
        x.shape, kernel, stride=stride, padding=padding, pad_mode=pad_mode, dilation=dilation,
        channel_axis=channel_axis, method=method, precision=precision, spatial_ndim=spatial_ndim,
        x_dtype=x.dtype, finite=None,
    )
    if plan.method == "fft" and method == "auto" and not np.isfinite(x).all():
        plan = make_plan(
            x.shape, kernel, stride=stride, padding=padding, pad_mode=pad_mode, dilation=dilation,
            channel_axis=channel_axis, method=method, precision=precision, spatial_ndim=spatial_ndim,
            x_dtype=x.dtype, finite=False,
        )
    return execute(plan, x, kernel, flip=flip)


def make_plan(
    x_shape, kernel, *, stride=1, padding="same", pad_mode="reflect", dilation=1, channel_axis=None,
    method="auto", precision=None, spatial_ndim=None, x_dtype=np.float32, finite=None,
) -> Plan:
    """Decide layout, geometry and method for correlating an array of ``x_shape`` with ``kernel``."""
    kernel = _as_kernel(kernel)
    x_shape = tuple(int(n) for n in x_shape)
    axis = _normalise_axis(channel_axis, len(x_shape))
    channels = x_shape[axis] if axis is not None else 1
    per_channel, nd = _kernel_layout(x_shape, kernel, axis, spatial_ndim)
    rest = [n for i, n in enumerate(x_shape) if i != axis]
    spatial_shape, batch_shape = tuple(rest[len(rest) - nd:]), tuple(rest[: len(rest) - nd])
    taps = kernel.shape[1:] if per_channel else kernel.shape
    axes = plan_axes(spatial_shape, taps, stride=stride, padding=padding, dilation=dilation)
    border, value = parse_pad_mode(pad_mode)
    dtype = _compute_dtype(x_dtype, precision)
    if method not in strategies.METHODS:
        raise ParameterError(f"must be one of {', '.join(strategies.METHODS)}, got {method!r}", subject="method")
    lanes = int(np.prod(batch_shape, dtype=np.int64)) * channels
    canonical = _canonical_kernel(kernel, per_channel)
    choice = strategies.choose_method(lanes, canonical, axes, finite=finite is not False)
    chosen = choice.method if method == "auto" else method
    if chosen == "separable" and not choice.separable:
        if nd == 1:
            chosen = "direct"  # a 1-D kernel is trivially one pass
        else:
            raise ParameterError(
                "the kernel is not separable (not rank 1); use method direct, fft or auto", subject="method"
            )
    return Plan(nd, axis, batch_shape, channels, per_channel, axes, border, value, dtype, choice, chosen)


def execute(plan: Plan, x: np.ndarray, kernel: np.ndarray, *, flip: bool = False) -> np.ndarray:
    """Run a plan made by :func:`make_plan` on the samples ``x``."""
    nd = plan.spatial_ndim
    kernel = _canonical_kernel(_as_kernel(kernel), plan.per_channel)
    if flip:
        kernel = kernel[(slice(None),) + (slice(None, None, -1),) * nd]
    kernel = kernel.astype(plan.dtype)
    nb = len(plan.batch_shape)
    if plan.channel_axis is not None:
        x = np.moveaxis(x, plan.channel_axis, nb)
    else:
        x = x[(slice(None),) * nb + (None,)]
    lanes = x.reshape((-1, plan.channels) + x.shape[nb + 1:])
    lanes = lanes.astype(plan.dtype, copy=False)
    xp = pad(lanes, plan.padding(), plan.border, plan.border_value)
    if plan.method == "fft":
        out = strategies.fft(xp, kernel, plan.axes)
    elif plan.method == "separable":
        out = strategies.separable(xp, strategies.channel_factors(kernel.astype(np.float64)), plan.axes)
    else:
        out = strategies.direct(np.ascontiguousarray(xp), kernel, plan.axes)
    out = out.reshape(plan.batch_shape + out.shape[1:])
    if plan.channel_axis is not None:
        out = np.moveaxis(out, nb, plan.channel_axis)
    else:
        out = out[(slice(None),) * nb + (0,)]
    return np.ascontiguousarray(out, dtype=plan.dtype)


# --------------------------------------------------------------------------- validation
def _as_samples(x) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise ParameterError(f"must hold real numbers, got dtype {x.dtype}", subject="x")
    if x.size == 0:
        raise ParameterError(f"is empty (shape {x.shape})", subject="x")
    return x


def _as_kernel(kernel) -> np.ndarray:
    kernel = np.asarray(kernel)
    if kernel.dtype.kind not in "biuf":
        raise ParameterError(f"must hold real numbers, got dtype {kernel.dtype}", subject="kernel")
    if kernel.ndim == 0 or kernel.size == 0:
        raise ParameterError(f"is empty (shape {kernel.shape}); give at least one weight per axis", subject="kernel")
    if not np.isfinite(kernel).all():
        raise ParameterError("holds NaN or infinite weights", subject="kernel")
    return kernel


def _normalise_axis(axis, ndim: int) -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ParameterError(f"must be an axis of the input (-{ndim}..{ndim - 1}), got {axis!r}", subject="channel_axis")
    return int(axis) % ndim


def _kernel_layout(x_shape, kernel, axis, spatial_ndim) -> tuple[bool, int]:
    """Decide (per_channel, spatial ndim) from the shapes; refuse what does not fit."""
    available = len(x_shape) - (axis is not None)
    channels = x_shape[axis] if axis is not None else None
    could_share = kernel.ndim <= available
    could_split = axis is not None and kernel.ndim >= 2 and kernel.shape[0] == channels and kernel.ndim - 1 <= available
    if spatial_ndim is not None:
        if could_split and kernel.ndim == spatial_ndim + 1:
            return True, spatial_ndim
        if could_share and kernel.ndim == spatial_ndim:
            return False, spatial_ndim
        raise ParameterError(
            f"a kernel of shape {kernel.shape} does not fit {spatial_ndim} spatial axes of an input of shape "
            f"{tuple(x_shape)}", subject="kernel",
        )
    if could_split and not could_share:
        return True, kernel.ndim - 1
    if could_share and (not could_split or kernel.ndim == available):
        # A kernel covering every non-channel axis is read as shared by all channels.
        return False, kernel.ndim
    if could_share:
        raise ParameterError(
            f"shape {kernel.shape} could be per-channel or shared over {kernel.ndim} axes; pass spatial_ndim",
            subject="kernel",
        )
    raise ParameterError(
        f"has {kernel.ndim} axes but the input of shape {tuple(x_shape)} has only {available} "
        "spatial axes", subject="kernel",
    )


def _canonical_kernel(kernel: np.ndarray, per_channel: bool) -> np.ndarray:
    return kernel if per_channel else kernel[None]


def _compute_dtype(x_dtype, precision) -> np.dtype:
    if precision is None:
        return np.dtype(np.float64 if np.dtype(x_dtype) == np.float64 else np.float32)
    if precision in ("float32", "float64"):
        return np.dtype(precision)
    raise ParameterError(f"must be float32 or float64, got {precision!r}", subject="precision")
