"""The resolved kernel: correlation weights (or a rank, morphology or pooling operator), how responses
combine, how results are shown."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import KernelMismatch, UsageError
from ..io.samples import RANGE_MODES

COMBINES = ("single", "magnitude", "max")
MAX_WEIGHTS = 1 << 25  # 256 MB of float64: beyond this a kernel is a mistake, not a filter
# Weights up to this size keep every sum of squares (norms, SVDs, the cost model) finite.
MAX_MAGNITUDE = 1e150


@dataclass(frozen=True, eq=False)
class Kernel:
    """One ``-k`` spec, resolved into weights for an input of a known dimension.

    Every array in ``weights`` is a *correlation* kernel: it is laid over the
    samples as written (``convolve=True`` flips it).  A kernel with several
    weights (a gradient magnitude, Kirsch's eight compass masks) runs each one
    and combines the responses with ``combine``.

    Attributes
    ----------
    spec : str
        What the user typed.
    name : str
        Canonical name: ``"sobel-x"``, ``"gaussian"``, ``"file:edge.txt"``, ``"inline"``.
    weights : tuple of numpy.ndarray
        One or more float64 kernels, each with the input's spatial ndim.
    combine : {"single", "magnitude", "max"}
        ``magnitude`` is the square root of the sum of the squared responses,
        ``max`` their pointwise maximum.
    range_default : {"clip", "abs", "offset", "rescale"}
        How integer outputs show the result unless ``--range`` says otherwise.
    description : str
        One line for ``kernels show`` and ``filter --explain``.
    operator : RankOperator, MorphologyOperator or PoolOperator, optional
        A kernel that is not a weighted sum (see :mod:`.operators`): it runs
        instead of a correlation, and ``weights`` holds its footprint (1 on
        its taps, 0 elsewhere), which gives the window's shape.
    causal : bool
        The window ends at its output sample (an impulse response, whose
        first sample is time zero): ``same`` padding becomes the engine's
        ``causal`` (everything before), so nothing precedes the sound.
    routing : convcli.kernels.impulse.Routing, optional
        A multichannel impulse response: which input channel each of its
        channels filters and into which output channel (``weights`` then
        holds its first channel, for the facts).
    notes : tuple of str
        What resolving changed that the user should hear (a response resampled).
    """

    spec: str
    name: str
    weights: tuple[np.ndarray, ...]
    combine: str = "single"
    range_default: str = "clip"
    description: str = ""
    operator: object = None
    causal: bool = False
    routing: object = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, not {self.combine!r}")
        if self.range_default not in RANGE_MODES:
            raise ValueError(f"range_default must be one of {RANGE_MODES}, not {self.range_default!r}")
        if not self.weights:
            raise ValueError("a kernel needs at least one weight array")
        if self.combine == "single" and len(self.weights) != 1:
            raise ValueError("combine='single' takes exactly one weight array")
        frozen = []
        for w in self.weights:
            w = np.array(w, dtype=np.float64)  # a private copy: the kernel is immutable
            w.setflags(write=False)
            frozen.append(w)
        object.__setattr__(self, "weights", tuple(frozen))

    @property
    def ndim(self) -> int:
        """Spatial dimension of the weights (1 audio, 2 image, 3 volume)."""
        return self.weights[0].ndim

    @property
    def shape(self) -> tuple[int, ...]:
        return self.weights[0].shape

    def apply(self, x, *, convolve: bool = False, **engine_kwargs) -> np.ndarray:
        """Filter ``x`` with every weight array and combine the responses (or run the operator).

        Parameters
        ----------
        x : array_like
            The samples; the last ``self.ndim`` axes (not counting
            ``channel_axis``) are spatial.
        convolve : bool
            Flip the weights (mathematical convolution) instead of correlating.
        **engine_kwargs
            Passed on to :func:`convcli.engine.correlate` (stride, padding,
            pad_mode, dilation, channel_axis, method, precision, overwrite_x;
            the last only for a single weight array).  ``method`` may also be
            a sequence with one method per weight array.

        Returns
        -------
        numpy.ndarray
            float32, or float64 for float64 input (the engine's rule); an
            operator's own type (a rank filter keeps the input's).
        """
        if engine_kwargs.get("pad_mode", "") is None:
            engine_kwargs["pad_mode"] = self.border
        if self.operator is not None:
            x = np.asarray(x)
            return self.operator.execute(self.plan(x.shape, x.dtype, convolve=convolve, **engine_kwargs), x)
        from .. import engine

        run = engine.convolve if convolve else engine.correlate
        engine_kwargs = self.window_args(dict(engine_kwargs), None)
        engine_kwargs.setdefault("spatial_ndim", self.ndim)
        if self.routing is not None:
            return self._routed(run, np.asarray(x), engine_kwargs)
        if len(self.weights) > 1:  # every response reads the same samples
            engine_kwargs.pop("overwrite_x", None)
        method = engine_kwargs.pop("method", "auto")
        methods = (method,) * len(self.weights) if isinstance(method, str) else tuple(method)
        return self.combined((run(x, w, method=m, **engine_kwargs) for w, m in zip(self.weights, methods)), x)

    def combined(self, responses, x=None) -> np.ndarray:
        """The responses of the weight arrays, in order, combined by ``combine`` (the first one's memory reused).

        With the input ``x`` given, a response of the engine's own (writable,
        not sharing memory with ``x``) is squared in place; without it every
        response is left as it is (a caller's responses may be views of data
        it still needs).
        """
        responses = iter(responses)
        if self.combine == "single":
            return next(responses)
        if self.combine == "max":
            out = next(responses)
            for r in responses:
                np.maximum(out, r, out=out)
            return out
        # Squared in place where the engine handed over an array of its own: a new array per square costs
        # more than the arithmetic (a Sobel magnitude of a 24 MP photo: 0.19 s against 0.09).
        out = _squared(next(responses), x)
        for r in responses:
            out += _squared(r, x)
        return np.sqrt(out, out=out)

    def plan(self, x_shape, x_dtype, *, convolve: bool = False, **engine_kwargs):
        """The operator's plan for an input of ``x_shape`` (output shape, padding, algorithm), computing nothing."""
        if self.operator is None:
            raise ValueError("plan() is an operator's: a weighted kernel is planned by convcli.engine.make_plan")
        if engine_kwargs.get("pad_mode", "") is None:
            engine_kwargs["pad_mode"] = self.border
        return self.operator.plan(x_shape, x_dtype, convolve=convolve, **engine_kwargs)

    def window_args(self, args: dict, spatial_shape) -> dict:
        """The engine's geometry keywords as this kernel lays its windows.

        A pool takes its own stride and padding; a causal kernel (an impulse
        response) turns ``same`` padding into ``causal``; a ``pad_mode`` of
        None becomes the kernel's own :attr:`border`.
        """
        if "pad_mode" in args and args["pad_mode"] is None:
            args = dict(args, pad_mode=self.border)
        if self.operator is not None:
            return self.operator.window_args(args, spatial_shape)
        padding = args.get("padding", "same")
        if self.causal and isinstance(padding, str) and padding.strip().lower() == "same":
            return dict(args, padding="causal")
        return args

    @property
    def border(self) -> str:
        """The border mode when none is given: reflect, or zeros for a causal kernel.

        An impulse response filters a sound in time: before its first sample
        and after its last there is silence, not a mirror image of it (whose
        reverberation would be heard at both ends).
        """
        return "zeros" if self.causal else "reflect"

    def _routed(self, run, x: np.ndarray, engine_kwargs: dict) -> np.ndarray:
        """A multichannel impulse response on ``x`` (1-D, or frames x channels): its passes summed."""
        routing = self.routing
        channels = 1 if x.ndim == 1 else x.shape[-1]
        if channels != routing.inputs_count:
            raise UsageError(f"this impulse response ({routing.layout}) takes {routing.inputs_count} channels, "
                             f"the input has {channels}", subject=self.spec)
        columns = x[:, None] if x.ndim == 1 else x
        args = dict(engine_kwargs, channel_axis=-1, spatial_ndim=1)
        args.pop("overwrite_x", None)
        out = None
        for i, (inputs, _) in enumerate(routing.passes):
            part = run(np.ascontiguousarray(columns[:, list(inputs)]), routing.pass_weights(i), **args)
            out = part if out is None else np.add(out, part, out=out)
        return out

    def describe(self) -> dict:
        """Facts about the weights: shape, sum, separability, rank, symmetry, value range.

        For a kernel with several weight arrays the per-array facts are those
        of the first array, and ``kernels`` counts them.  An operator's facts
        are its own (what it computes, its taps, its scipy or PyTorch twin).
        """
        w = self.weights[0]
        facts = {} if self.routing is None else {"routing": self.routing.describe()}
        if self.causal:
            facts["causal"] = True
        if self.operator is not None:
            return {"spec": self.spec, "name": self.name, "description": self.description, "ndim": w.ndim,
                    "shape": list(w.shape), "kernels": 1, "combine": self.combine,
                    "range_default": self.range_default, "kind": self.operator.kind, **self.operator.facts()}
        ranks = [tensor_rank(k) for k in self.weights]
        rank = ranks[0]
        if all(r is not None for r in ranks):
            separable = all(r == (1,) * k.ndim for r, k in zip(ranks, self.weights))
        else:  # too large for an SVD: the engine's test, linear in the size
            from ..engine import rank1_factors

            separable = all(k.ndim == 1 or rank1_factors(k) is not None for k in self.weights)
        return {
            "spec": self.spec,
            "name": self.name,
            "description": self.description,
            "ndim": w.ndim,
            "shape": list(w.shape),
            "kernels": len(self.weights),
            "combine": self.combine,
            "range_default": self.range_default,
            "sum": [float(k.sum()) for k in self.weights] if len(self.weights) > 1 else float(w.sum()),
            "min": float(min(k.min() for k in self.weights)),
            "max": float(max(k.max() for k in self.weights)),
            "separable": separable,
            "rank": None if rank is None else rank[0] if len(rank) <= 2 else list(rank),
            "symmetry": symmetry(w),
            **facts,
        }


def tensor_rank(w: np.ndarray) -> tuple[int, ...] | None:
    """Rank of each unfolding of ``w`` (the multilinear rank); all 1 means separable.

    A 2D kernel's two unfoldings share one rank (its matrix rank).  The
    tolerance is relative to the largest singular value, so an outer product
    of floats still counts as rank 1.  None for a kernel whose SVDs would
    cost more than the engine allows a plan (seconds to minutes, in one
    uninterruptible call).
    """
    from ..engine import SVD_MAX_WORK, svd_work

    if not np.any(w):
        return (0,) * max(w.ndim, 1)
    unfoldings = [(w.shape[axis], w.size // w.shape[axis]) for axis in range(w.ndim)]
    if sum(svd_work(shape) for shape in unfoldings) > SVD_MAX_WORK:
        return None
    ranks = []
    for axis in range(w.ndim):
        m = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
        s = np.linalg.svd(m, compute_uv=False)
        ranks.append(int(np.sum(s > s[0] * 1e-10)))
    return tuple(ranks)


def symmetry(w: np.ndarray) -> str:
    """``"symmetric"`` or ``"antisymmetric"`` under a flip of every axis, else ``"none"``."""
    flipped = np.flip(w)
    tol = 1e-12 * max(float(np.abs(w).max(initial=0.0)), 1e-300)
    if np.allclose(w, flipped, rtol=0, atol=tol):
        return "symmetric"
    if np.allclose(w, -flipped, rtol=0, atol=tol):
        return "antisymmetric"
    return "none"


def is_zero_sum(w: np.ndarray) -> bool:
    """True when the weights cancel: the sum is negligible against their size."""
    return abs(float(w.sum())) <= 1e-9 * float(np.abs(w).sum())


def check_weights(w: np.ndarray, *, subject: str) -> np.ndarray:
    """Refuse empty, oversized or non-finite weights, naming the first bad position.

    Weights beyond ``MAX_MAGNITUDE`` are refused too: finite as they are,
    their sums of squares overflow to infinity in every norm and SVD.
    """
    if w.size == 0 or 0 in w.shape:
        raise UsageError(f"the kernel is empty (shape {w.shape})", subject=subject)
    if w.size > MAX_WEIGHTS:
        raise UsageError(f"the kernel has {w.size:,} weights, more than {MAX_WEIGHTS:,}", subject=subject)
    bad = ~np.isfinite(w)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise UsageError(
            f"the kernel holds {float(w[where]):g} at index {list(where)}; weights must be finite numbers",
            subject=subject,
        )
    huge = np.abs(w) > MAX_MAGNITUDE
    if huge.any():
        where = tuple(int(i) for i in np.argwhere(huge)[0])
        raise UsageError(
            f"the kernel holds {float(w[where]):g} at index {list(where)}; weights beyond "
            f"{MAX_MAGNITUDE:g} overflow the arithmetic (scale the kernel down)",
            subject=subject,
        )
    return w


def fit_ndim(w: np.ndarray, ndim: int, *, subject: str) -> np.ndarray:
    """Give ``w`` the input's spatial ndim by dropping leading length-1 axes, or refuse.

    A kernel is never given extra axes: a 2D kernel on a volume would be a
    guess (which plane?), so it is an error with the shape in the message.
    """
    while w.ndim > ndim and w.shape[0] == 1:
        w = w[0]
    if w.ndim == ndim:
        return w
    kind = {1: "a 1D signal", 2: "an image (2 spatial axes)", 3: "a volume (3 spatial axes)"}.get(
        ndim, f"an input with {ndim} spatial axes"
    )
    # A kernel of more than 3 axes fits no input: a broken file, not a mismatch with this one.
    mismatch = KernelMismatch if w.ndim <= 3 else UsageError
    raise mismatch(
        f"the kernel has shape {tuple(w.shape)} ({w.ndim}D) but the input is {kind}; "
        f"give a {ndim}D kernel",
        subject=subject,
    )


def normalized(w: np.ndarray, *, subject: str) -> np.ndarray:
    """Divide by the sum, refusing a zero-sum kernel instead of dividing by zero."""
    if is_zero_sum(w):
        raise UsageError(
            "--normalize divides by the kernel's sum, but its weights sum to 0 "
            "(an edge or derivative kernel); drop --normalize and use --range offset to see both signs",
            subject=subject,
        )
    return w / w.sum()


def _squared(response, x):
    """``response ** 2``, in place when ``x`` is given and the response is writable and does not share its memory."""
    if (x is not None and isinstance(response, np.ndarray) and response.flags.writeable
            and not (isinstance(x, np.ndarray) and np.may_share_memory(response, x))):
        return np.square(response, out=response)
    return np.square(response)
