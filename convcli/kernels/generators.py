"""Parametrised kernel families: the kernels computed from parameters rather than read from a file.

Each family declares its parameters (with defaults, shown by ``kernels
list``), the input dimensions it makes sense for, and how its results are
shown.  Fixed-weight kernels (sobel-x, laplacian, kirsch, ...) are data files
in the ``kernels/`` library instead; the families that are built from them
(the gradient magnitudes, ``sharpen``) read them from there.  The rank,
morphology and pooling families build an operator (:mod:`.operators`)
instead of weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import reduce
from typing import Callable

import numpy as np

from ..errors import UsageError
from . import operators
from .kernel import MAX_WEIGHTS, Kernel
from .spec import NamedSpec, length_in_samples, parse_float, parse_frequency, parse_int

REQUIRED = object()
AXIS_LETTERS = {1: ("x",), 2: ("y", "x"), 3: ("z", "y", "x")}
NDIM_NAMES = {1: "1D (audio/signal)", 2: "2D (image)", 3: "3D (volume)"}


@dataclass(frozen=True)
class Param:
    """One parameter of a family.

    ``kind`` is ``length`` (samples, or a time/distance with a unit),
    ``float``, ``int``, ``freq`` (Hz, ``2k``), ``bool`` (true/false) or
    ``str``.  A ``per_axis`` parameter takes one value for every axis, or
    one value per axis.  An optional parameter without a default
    (``None``) is shown as ``name=auto``, or as ``name=placeholder`` (``disk=R``).
    """

    name: str
    kind: str
    default: object = REQUIRED
    per_axis: bool = False
    help: str = ""
    placeholder: str = ""

    def shown(self) -> str:
        if self.default is REQUIRED:
            return f"{self.name}=?"
        if self.default is None:
            return f"{self.name}={self.placeholder or 'auto'}"
        return f"{self.name}={self.default}"


@dataclass(frozen=True)
class Context:
    spec: str
    ndim: int
    sample_rate: float | None
    spacing: tuple[float, ...] | None


@dataclass(frozen=True)
class Family:
    """A parametrised kernel: parameters in, weight arrays out."""

    name: str
    build: Callable[..., list[np.ndarray]]
    description: str
    params: tuple[Param, ...] = ()
    dims: tuple[int, ...] = (1, 2, 3)
    range_default: str = "clip"
    combine: str = "single"
    aliases: tuple[str, ...] = ()
    variadic: bool = False  # the first parameter takes every positional value: gaussian:2,2,0.5

    def signature(self) -> str:
        return ",".join(p.shown() for p in self.params)

    def resolve(self, spec: str, parsed: NamedSpec, *, ndim: int, sample_rate, spacing) -> Kernel:
        if ndim not in self.dims:
            allowed = " or ".join(NDIM_NAMES[d] for d in self.dims)
            raise UsageError(
                f"{self.name} is for {allowed} inputs; this input is {NDIM_NAMES.get(ndim, f'{ndim}D')}",
                subject=spec,
            )
        ctx = Context(spec, ndim, sample_rate, spacing)
        args = self._bind(parsed, ctx)
        weights = self.build(ctx, **args)
        if not isinstance(weights, list):  # an operator: its footprint stands for the window
            return Kernel(spec, self.name, (weights.footprint.astype(np.float64),), range_default=self.range_default,
                          description=self.description, operator=weights)
        combine = self.combine if len(weights) > 1 or self.combine != "single" else "single"
        return Kernel(spec, self.name, tuple(weights), combine=combine, range_default=self.range_default,
                      description=self.description)

    def _bind(self, parsed: NamedSpec, ctx: Context) -> dict:
        raw: dict[str, list[str]] = {}
        positional = list(parsed.positional)
        if positional:
            if not self.params:
                raise UsageError(f"{self.name} takes no parameters", subject=ctx.spec)
            if self.variadic:
                raw[self.params[0].name] = positional
            else:
                if len(positional) > len(self.params):
                    raise UsageError(
                        f"{self.name} takes at most {len(self.params)} values in order "
                        f"({', '.join(p.name for p in self.params)}), {len(positional)} were given",
                        subject=ctx.spec,
                    )
                for p, value in zip(self.params, positional):
                    raw[p.name] = [value]
        by_name = {p.name: p for p in self.params}
        for key, values in parsed.keywords.items():
            if key not in by_name:
                known = ", ".join(by_name) or "none"
                raise UsageError(f"{self.name} has no parameter {key!r} (its parameters: {known})",
                                 subject=ctx.spec)
            if key in raw:
                raise UsageError(f"{key} is given twice", subject=ctx.spec)
            raw[key] = values
        args = {}
        for p in self.params:
            if p.name in raw:
                args[p.name] = _convert(p, raw[p.name], ctx)
            elif p.default is REQUIRED:
                raise UsageError(f"{self.name} needs {p.name}= ({p.help})", subject=ctx.spec)
            elif p.default is None:
                args[p.name] = None
            else:
                args[p.name] = _convert(p, str(p.default).split(","), ctx)
        return args


def _convert(p: Param, values: list[str], ctx: Context):
    if p.per_axis:
        if len(values) not in (1, ctx.ndim):
            raise UsageError(
                f"{p.name} takes one value, or one per axis ({ctx.ndim} for this input), "
                f"not {len(values)}",
                subject=ctx.spec,
            )
        if len(values) == 1:
            values = values * ctx.ndim
        return tuple(_convert_one(p, v, ctx, axis) for axis, v in enumerate(values))
    if len(values) != 1:
        raise UsageError(f"{p.name} takes one value, not {len(values)} ({','.join(values)})", subject=ctx.spec)
    return _convert_one(p, values[0], ctx, 0)


def _convert_one(p: Param, text: str, ctx: Context, axis: int):
    if p.kind == "length":
        return length_in_samples(text, axis=axis, param=p.name, spec=ctx.spec,
                                 sample_rate=ctx.sample_rate, spacing=ctx.spacing)
    if p.kind == "float":
        return parse_float(text, param=p.name, spec=ctx.spec)
    if p.kind == "int":
        return parse_int(text, param=p.name, spec=ctx.spec)
    if p.kind == "freq":
        return parse_frequency(text, param=p.name, spec=ctx.spec)
    if p.kind == "bool":
        word = text.strip().lower()
        if word not in _BOOLEANS:
            raise UsageError(f"{p.name}={text}: write true or false", subject=ctx.spec)
        return _BOOLEANS[word]
    return text


_BOOLEANS = {**dict.fromkeys(("true", "yes", "on", "1"), True), **dict.fromkeys(("false", "no", "off", "0"), False)}


# ---------------------------------------------------------------- helpers


def outer(factors: list[np.ndarray]) -> np.ndarray:
    """The N-D kernel whose axis i is weighted by ``factors[i]`` (a separable kernel)."""
    return reduce(np.multiply.outer, factors)


def delta(shape: tuple[int, ...]) -> np.ndarray:
    """The identity kernel of ``shape`` (odd lengths): 1 at the centre."""
    d = np.zeros(shape)
    d[tuple(n // 2 for n in shape)] = 1.0
    return d


def embed(w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``w`` centred in zeros of a larger odd ``shape``."""
    out = np.zeros(shape)
    out[tuple(slice((n - m) // 2, (n - m) // 2 + m) for n, m in zip(shape, w.shape))] = w
    return out


def gaussian_1d(sigma: float, radius: int, order: int = 0) -> np.ndarray:
    """scipy.ndimage's sampled Gaussian (order 0) or its second derivative (order 2), as correlation weights.

    The order-0 kernel is normalised to sum 1; the order-2 kernel is
    (x^2/sigma^4 - 1/sigma^2) times it, the polynomial scipy derives.
    """
    if sigma == 0:
        return np.ones(1) if order == 0 else np.zeros(1)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    sigma2 = sigma * sigma
    phi = np.exp(-0.5 / sigma2 * x ** 2)
    phi /= phi.sum()
    if order == 0:
        return phi
    return (x ** 2 / sigma2 ** 2 - 1 / sigma2) * phi


def _radius(sigma: float, truncate: float) -> int:
    return int(truncate * float(sigma) + 0.5)


def check_size(ctx: Context, shape, axis_by_axis: str = "") -> None:
    """Refuse a kernel too large to build before allocating it.

    ``axis_by_axis`` is an example chain of 1D passes for separable kernels.
    """
    total = float(np.prod([float(n) for n in shape]))
    if total > MAX_WEIGHTS:
        hint = f"; run it one axis at a time, e.g. {axis_by_axis}" if axis_by_axis and len(shape) > 1 else ""
        raise UsageError(
            f"the kernel would have shape {'x'.join(str(int(n)) for n in shape)} ({total:.3g} weights, "
            f"more than {MAX_WEIGHTS}){hint}",
            subject=ctx.spec,
        )


def _check_sigmas(ctx: Context, name: str, sigmas, *, positive: bool = False) -> None:
    for s in sigmas:
        if s < 0 or (positive and s == 0) or not np.isfinite(s):
            need = "positive" if positive else "zero or positive"
            raise UsageError(f"{name} must be {need}, not {s:g}", subject=ctx.spec)


def _check_truncate(ctx: Context, truncate: float) -> None:
    if not (truncate > 0 and np.isfinite(truncate)):
        raise UsageError(f"truncate must be positive, not {truncate:g}", subject=ctx.spec)


# ---------------------------------------------------------------- smoothing


def _box(ctx: Context, size) -> list[np.ndarray]:
    sizes = []
    for n in size:
        k = int(round(n))
        if k < 1:
            raise UsageError(f"size must be at least 1 sample, not {n:g}", subject=ctx.spec)
        sizes.append(k)
    check_size(ctx, sizes, "-k box:size=N,1,1 -k box:size=1,N,1 ...")
    return [np.full(sizes, 1.0 / np.prod(sizes))]


def binomial_1d(radius: int) -> np.ndarray:
    """Row 2R of Pascal's triangle over 4^R: [1, 2, 1]/4 for R = 1."""
    from scipy.special import comb

    n = 2 * radius
    return comb(n, np.arange(n + 1), exact=False) / 2.0 ** n


def _binomial(ctx: Context, radius) -> list[np.ndarray]:
    if any(r < 0 for r in radius):
        raise UsageError("radius must be 0 or more", subject=ctx.spec)
    check_size(ctx, [2 * r + 1 for r in radius])
    return [outer([binomial_1d(r) for r in radius])]


def _check_gaussian_size(ctx: Context, sigma, truncate: float, radius=None) -> None:
    radii = radius or [_radius(s, truncate) if s > 0 else 0 for s in sigma]
    check_size(ctx, [2 * r + 1 for r in radii], "-k gaussian:sigma=S,0,0 -k gaussian:sigma=0,S,0 ...")


def gaussian_nd(sigma, truncate: float, radius=None) -> np.ndarray:
    radii = radius or [_radius(s, truncate) for s in sigma]
    return outer([gaussian_1d(s, r) for s, r in zip(sigma, radii)])


def _gaussian(ctx: Context, sigma, truncate, radius) -> list[np.ndarray]:
    _check_sigmas(ctx, "sigma", sigma)
    _check_truncate(ctx, truncate)
    if radius is not None and any(r < 0 for r in radius):
        raise UsageError("radius must be 0 or more", subject=ctx.spec)
    _check_gaussian_size(ctx, sigma, truncate, radius)
    return [gaussian_nd(sigma, truncate, radius)]


def log_nd(sigma, truncate: float) -> np.ndarray:
    """scipy.ndimage.gaussian_laplace's kernel: the sum over axes of the second
    derivative along that axis, smoothed by the Gaussian along the others."""
    radii = [_radius(s, truncate) for s in sigma]
    smooth = [gaussian_1d(s, r) for s, r in zip(sigma, radii)]
    second = [gaussian_1d(s, r, order=2) for s, r in zip(sigma, radii)]
    return sum(outer(smooth[:a] + [second[a]] + smooth[a + 1:]) for a in range(len(sigma)))


def _log(ctx: Context, sigma, truncate) -> list[np.ndarray]:
    _check_sigmas(ctx, "sigma", sigma, positive=True)
    _check_truncate(ctx, truncate)
    _check_gaussian_size(ctx, sigma, truncate)
    return [log_nd(sigma, truncate)]


def _dog(ctx: Context, sigma1, sigma2, truncate) -> list[np.ndarray]:
    if sigma2 is None:
        sigma2 = tuple(1.6 * s for s in sigma1)  # Marr-Hildreth's ratio, close to a LoG
    _check_sigmas(ctx, "sigma1", sigma1, positive=True)
    _check_sigmas(ctx, "sigma2", sigma2, positive=True)
    _check_truncate(ctx, truncate)
    _check_gaussian_size(ctx, [max(a, b) for a, b in zip(sigma1, sigma2)], truncate)
    g1, g2 = gaussian_nd(sigma1, truncate), gaussian_nd(sigma2, truncate)
    shape = tuple(max(a, b) for a, b in zip(g1.shape, g2.shape))
    return [embed(g1, shape) - embed(g2, shape)]


# ---------------------------------------------------------------- built from library kernels


def library_weights(name: str, ndim: int, spec: str) -> list[np.ndarray]:
    from . import files, library

    entry = library.builtin_entries().get(name)
    if entry is None:  # the library ships these; a missing one is a broken install
        raise UsageError(f"the kernel library has no {name}.txt (reinstall convcli)", subject=spec)
    return files.read_definition(entry, subject=str(entry), name=name).weights_for(ndim, subject=spec)


def _gradient_magnitude(base: str):
    def build(ctx: Context) -> list[np.ndarray]:
        return [library_weights(f"{base}-{axis}", ctx.ndim, ctx.spec)[0] for axis in AXIS_LETTERS[ctx.ndim]]

    return build


def _sharpen(ctx: Context, amount) -> list[np.ndarray]:
    lap = library_weights("laplacian", ctx.ndim, ctx.spec)[0]
    return [delta(lap.shape) - amount * lap]


def _unsharp(ctx: Context, sigma, amount, truncate) -> list[np.ndarray]:
    _check_sigmas(ctx, "sigma", sigma)
    _check_truncate(ctx, truncate)
    _check_gaussian_size(ctx, sigma, truncate)
    g = gaussian_nd(sigma, truncate)
    return [(1 + amount) * delta(g.shape) - amount * g]


def _motion(ctx: Context, length, angle) -> list[np.ndarray]:
    """A line of ``length`` pixels through the centre at ``angle`` degrees
    (0 = along x, counter-clockwise as seen with rows going down the screen),
    each pixel weighted by how close its centre lies to the line (1 - distance,
    a one-pixel-wide antialiased line), normalised to sum 1."""
    if not (length >= 1 and np.isfinite(length)):
        raise UsageError(f"length must be at least 1 pixel, not {length:g}", subject=ctx.spec)
    half = (length - 1) / 2
    check_size(ctx, [2 * np.ceil(half) + 1] * 2)
    theta = np.deg2rad(angle)
    ux, uy = np.cos(theta), -np.sin(theta)  # rows grow downwards
    r = int(np.ceil(half - 1e-9))
    y, x = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float64)
    t = np.clip(x * ux + y * uy, -half, half)
    dist = np.hypot(x - t * ux, y - t * uy)
    w = np.clip(1 - dist, 0, None)
    w[np.abs(w) < 1e-12] = 0.0
    return [w / w.sum()]


# ---------------------------------------------------------------- audio designs


def _window(ctx: Context, window: str):
    name, _, arg = window.partition("(")
    if not arg:
        return name
    try:
        return (name, float(arg.rstrip(")")))
    except ValueError:
        raise UsageError(f"window={window}: write a window parameter as name(number), e.g. kaiser(8)",
                         subject=ctx.spec) from None


def _firwin(ctx: Context, cutoff, taps: int, window: str, pass_zero) -> list[np.ndarray]:
    if not ctx.sample_rate:
        raise UsageError("a frequency filter needs the input's sample rate, and this input has none "
                         "(audio files have one, .npy arrays do not; 'kernels show' takes --rate HZ)",
                         subject=ctx.spec)
    nyquist = ctx.sample_rate / 2
    for f in np.atleast_1d(cutoff):
        if not 0 < f < nyquist:
            raise UsageError(f"{f:g} Hz is outside (0, {nyquist:g}) Hz, the range of a {ctx.sample_rate:g} Hz "
                             "signal", subject=ctx.spec)
    if taps < 1:
        raise UsageError(f"taps must be at least 1, not {taps}", subject=ctx.spec)
    check_size(ctx, [taps])
    if pass_zero is not True and taps % 2 == 0:
        raise UsageError(f"taps={taps}: a filter that passes the Nyquist frequency needs an odd number of taps",
                         subject=ctx.spec)
    h = firwin(taps, cutoff, symmetric_window(ctx, window, taps), pass_zero=pass_zero, fs=ctx.sample_rate)
    if not np.all(np.isfinite(h)):  # e.g. hann over 2 taps: zero everywhere, nothing to normalise
        raise UsageError(f"taps={taps}: the {window} window leaves no gain to normalise; use more taps",
                         subject=ctx.spec)
    return [h]


def firwin(taps: int, cutoff, window: np.ndarray, *, pass_zero: bool, fs: float) -> np.ndarray:
    """scipy.signal.firwin's windowed-sinc design (``scale=True``), in numpy, for a window already made.

    ``cutoff`` is one frequency or increasing band edges in Hz, inside
    (0, fs/2); ``pass_zero`` says whether the band at 0 Hz passes.  The
    arithmetic is scipy's, step for step, so the taps agree to rounding
    (held to 1e-12 by the tests); importing scipy.signal to compute them
    costs about 1.2 s here (scipy 1.17), longer than filtering 3 minutes
    of stereo.
    """
    edges = np.atleast_1d(np.asarray(cutoff, dtype=np.float64)) / float(0.5 * fs)
    pass_nyquist = (edges.size % 2 == 0) == pass_zero
    bands = np.concatenate((np.zeros(int(pass_zero)), edges, np.ones(int(pass_nyquist)))).reshape(-1, 2)
    m = np.arange(0, taps, dtype=np.float64) - 0.5 * (taps - 1)
    h = 0
    for left, right in bands:
        h += right * np.sinc(right * m)
        h -= left * np.sinc(left * m)
    h *= window
    # Unit gain at the centre of the first pass band (0 Hz, Nyquist, or its middle).
    left, right = bands[0]
    centre = 0.0 if left == 0 else 1.0 if right == 1 else 0.5 * (left + right)
    with np.errstate(invalid="ignore", divide="ignore"):  # a window zero at every tap: NaN, refused by the caller
        h /= np.sum(h * np.cos(np.pi * m * centre))
    return h


# scipy.signal.get_window's names (and aliases) of the windows computed here:
# the cosine-sum windows by scipy's own formula, Bartlett, boxcar and Kaiser.
_COSINE_SUMS = {"hamming": (0.54, 0.46), "hann": (0.5, 0.5), "blackman": (0.42, 0.50, 0.08)}
_WINDOW_NAMES = {
    **dict.fromkeys(("hamming", "hamm", "ham"), "hamming"), **dict.fromkeys(("hann", "han"), "hann"),
    **dict.fromkeys(("blackman", "black", "blk"), "blackman"),
    **dict.fromkeys(("bartlett", "bart", "brt"), "bartlett"),
    **dict.fromkeys(("boxcar", "box", "ones", "rect", "rectangular"), "boxcar"),
    **dict.fromkeys(("kaiser", "ksr"), "kaiser"),
}


def symmetric_window(ctx: Context, window: str, taps: int) -> np.ndarray:
    """``scipy.signal.get_window(window, taps, fftbins=False)`` for ``name`` or ``name(number)``.

    Hamming, Hann, Blackman, Bartlett, boxcar and Kaiser (and their scipy
    aliases) are computed here by scipy's formulas; scipy.signal is imported
    only for the rarer windows, and its refusal becomes a usage error.
    """
    parsed = _window(ctx, window)
    name, args = (parsed, ()) if isinstance(parsed, str) else (parsed[0], tuple(parsed[1:]))
    known = _WINDOW_NAMES.get(name)
    if known is not None and len(args) == (1 if known == "kaiser" else 0):
        return _numpy_window(known, args, taps)
    from scipy import signal

    try:
        return signal.get_window(parsed, taps, fftbins=False)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"window={window}: {exc}", subject=ctx.spec) from None


def _numpy_window(name: str, args: tuple, taps: int) -> np.ndarray:
    if taps <= 1 or name == "boxcar":
        return np.ones(taps)
    if name in _COSINE_SUMS:
        fac = np.linspace(-np.pi, np.pi, taps, dtype=np.float64)
        w = np.zeros(taps, dtype=np.float64)
        for k, a in enumerate(_COSINE_SUMS[name]):
            w += a * np.cos(k * fac)
        return w
    n = np.arange(0, taps, dtype=np.float64)
    if name == "bartlett":
        return np.where(n <= (taps - 1) / 2.0, 2.0 * n / (taps - 1), 2.0 - 2.0 * n / (taps - 1))
    alpha = (taps - 1) / 2.0  # kaiser
    beta = float(args[0])
    return np.i0(beta * np.sqrt(1 - ((n - alpha) / alpha) ** 2.0)) / np.i0(beta)


def _lowpass(ctx: Context, cutoff, taps, window):
    return _firwin(ctx, cutoff, taps, window, True)


def _highpass(ctx: Context, cutoff, taps, window):
    return _firwin(ctx, cutoff, taps, window, False)


def _bandpass(ctx: Context, low, high, taps, window):
    if low >= high:
        raise UsageError(f"low ({low:g} Hz) must be below high ({high:g} Hz)", subject=ctx.spec)
    return _firwin(ctx, [low, high], taps, window, False)


# ---------------------------------------------------------------- the table

_SIGMA = Param("sigma", "length", 1, per_axis=True, help="standard deviation: samples, or 5ms / 1.5mm")
_TRUNCATE = Param("truncate", "float", 4.0, help="radius = int(truncate * sigma + 0.5)")
_TAPS = Param("taps", "int", 101, help="filter length")
_WINDOW = Param("window", "str", "hamming", help="scipy.signal window name, e.g. hann or kaiser(8)")

_FAMILY_LIST = [
    Family("box", _box, "Mean over N samples per axis (moving average)",
           (Param("size", "length", 3, per_axis=True, help="window length per axis"),),
           aliases=("blur", "mean"), variadic=True),
    Family("binomial", _binomial, "Binomial smoothing, Pascal's triangle row 2R ([1,2,1]/4 for R=1)",
           (Param("radius", "int", 1, per_axis=True, help="radius R"),), variadic=True),
    Family("gaussian", _gaussian, "Gaussian blur, scipy.ndimage.gaussian_filter's kernel",
           (_SIGMA, _TRUNCATE, Param("radius", "int", None, per_axis=True, help="radius per axis, overrides truncate")),
           variadic=True),
    Family("log", _log, "Laplacian of Gaussian (scipy.ndimage.gaussian_laplace)", (_SIGMA, _TRUNCATE),
           range_default="offset", variadic=True),
    Family("dog", _dog, "Difference of Gaussians G(sigma1) - G(sigma2)",
           (Param("sigma1", "length", 1, per_axis=True, help="the narrow Gaussian"),
            Param("sigma2", "length", None, per_axis=True, help="the wide Gaussian, 1.6 x sigma1 by default"),
            _TRUNCATE),
           range_default="offset"),
    Family("sobel", _gradient_magnitude("sobel"), "Sobel gradient magnitude over all axes",
           combine="magnitude"),
    Family("prewitt", _gradient_magnitude("prewitt"), "Prewitt gradient magnitude over all axes",
           combine="magnitude"),
    Family("scharr", _gradient_magnitude("scharr"), "Scharr gradient magnitude over all axes",
           combine="magnitude"),
    Family("sharpen", _sharpen, "Sharpen: identity - amount x laplacian (5-point in 2D, 7-point in 3D)",
           (Param("amount", "float", 1.0, help="strength"),)),
    Family("unsharp", _unsharp, "Unsharp mask: identity + amount x (identity - gaussian)",
           (_SIGMA, Param("amount", "float", 1.0, help="strength"), _TRUNCATE)),
    Family("motion", _motion, "Motion blur along a line (2D)",
           (Param("length", "float", 9, help="line length in pixels"),
            Param("angle", "float", 0.0, help="degrees, 0 = along x, counter-clockwise")),
           dims=(2,)),
    Family("lowpass", _lowpass, "Windowed-sinc low-pass FIR (scipy.signal.firwin), audio",
           (Param("cutoff", "freq", help="cutoff frequency, e.g. 2k"), _TAPS, _WINDOW), dims=(1,)),
    Family("highpass", _highpass, "Windowed-sinc high-pass FIR (scipy.signal.firwin), audio",
           (Param("cutoff", "freq", help="cutoff frequency, e.g. 200hz"), _TAPS, _WINDOW), dims=(1,)),
    Family("bandpass", _bandpass, "Windowed-sinc band-pass FIR (scipy.signal.firwin), audio",
           (Param("low", "freq", help="lower band edge, e.g. 300"), Param("high", "freq", help="upper band edge, e.g. 3k"),
            _TAPS, _WINDOW), dims=(1,)),
]

# Rank, morphology and pooling: operators over the same window geometry.
_SHAPES = (
    Param("disk", "length", None, per_axis=True, help="a disk (ball in 3D) of radius R", placeholder="R"),
    Param("cross", "length", None, per_axis=True, help="the axes through the centre, R each way", placeholder="R"),
    Param("diamond", "length", None, per_axis=True, help="|x| + |y| <= R", placeholder="R"),
    Param("ball", "length", None, per_axis=True, help="a ball (disk in 2D) of radius R", placeholder="R"),
    Param("line", "float", None, help="a line of L samples through the centre (2D)", placeholder="L"),
    Param("angle", "float", None, help="the line's angle in degrees, 0 = along x, counter-clockwise",
          placeholder="DEG"),
    Param("footprint", "str", None, help="a kernel file of 0 and 1", placeholder="FILE"),
)
_SIZE = Param("size", "length", None, per_axis=True, help="window length per axis (3)", placeholder="3")
_SQUARE = Param("square", "length", None, per_axis=True, help="a box of N per axis (a cube in 3D), 3 by default",
                placeholder="3")
_POOL = (Param("size", "int", 2, per_axis=True, help="window per axis"),
         Param("stride", "int", None, per_axis=True, help="step between windows, the window by default",
               placeholder="size"),
         Param("ceil", "bool", False, help="PyTorch's ceil_mode: a last, partial window"))
_MORPHOLOGY = {
    "erode": ("Erosion: the minimum under a structuring element (scipy grey_erosion, OpenCV erode)", ()),
    "dilate": ("Dilation: the maximum under the reflected structuring element (scipy grey_dilation)", ()),
    "open": ("Opening: erode, then dilate; removes bright details smaller than the element", ("opening",)),
    "close": ("Closing: dilate, then erode; fills dark details smaller than the element", ("closing",)),
    "tophat": ("White top-hat: the input minus its opening (bright details)", ()),
    "blackhat": ("Black top-hat: the closing minus the input (dark details)", ()),
    "gradient": ("Morphological gradient: dilation minus erosion (edges)", ()),
}
_FAMILY_LIST += [
    Family("median", operators.median, "Median over a window or structuring element (declicking, salt and pepper)",
           (_SIZE, *_SHAPES)),
    Family("min", operators.minimum, "Minimum over a window or structuring element (scipy minimum_filter)",
           (_SIZE, *_SHAPES), aliases=("minimum",)),
    Family("max", operators.maximum, "Maximum over a window or structuring element (scipy maximum_filter)",
           (_SIZE, *_SHAPES), aliases=("maximum",)),
    Family("percentile", operators.percentile, "Percentile P of the window (scipy percentile_filter)",
           (Param("p", "float", help="percent, 0-100 (-P counts from the top)"), _SIZE, *_SHAPES)),
    Family("rank", operators.rank, "Sample R (from 0) of the window in order; -1 the largest (scipy rank_filter)",
           (Param("r", "int", help="0 the smallest, -1 the largest"), _SIZE, *_SHAPES)),
    *(Family(name, operators.morphology(name), description, (_SQUARE, *_SHAPES), aliases=aliases)
      for name, (description, aliases) in _MORPHOLOGY.items()),
    Family("maxpool", operators.pool("max"), "Max pooling, as torch.nn.functional.max_pool1d/2d/3d", _POOL),
    Family("avgpool", operators.pool("avg"), "Average pooling, as torch.nn.functional.avg_pool1d/2d/3d",
           (*_POOL, Param("count_pad", "bool", True, help="PyTorch's count_include_pad: padding counts in the mean"))),
]

FAMILIES: dict[str, Family] = {f.name: f for f in _FAMILY_LIST}
ALIASES: dict[str, str] = {alias: f.name for f in _FAMILY_LIST for alias in f.aliases}


def lookup(name: str) -> Family | None:
    """The family called ``name`` (or one of its aliases), or None."""
    return FAMILIES.get(ALIASES.get(name, name))
