"""Turn a ``-k`` spec into a :class:`Kernel` for an input of known dimension."""
from __future__ import annotations

import contextlib
import difflib
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import KernelFileError, KernelMismatch, ParameterError, UsageError, shown
from ..io.limits import Limits
from . import files, library
from .kernel import Kernel, check_weights, fit_ndim, normalized
from .spec import classify, parse_named


def resolve(
    spec: str,
    *,
    ndim: int,
    sample_rate: float | None = None,
    spacing: tuple[float, ...] | None = None,
    normalize: bool = False,
    channels: int | None = None,
    ir_norm: str = "energy",
    memory_budget: int | str | None = None,
) -> Kernel:
    """Resolve one kernel spec for an input with ``ndim`` spatial axes.

    Parameters
    ----------
    spec : str
        A name (``sobel-x``, ``gaussian:sigma=2``), a kernel file
        (``edge.txt``, ``k.npy``, ``ir:hall.wav``), or an inline matrix
        (``"[[0,1,0],[1,-4,1],[0,1,0]]"``, ``"3x3: 0,1,0 1,-4,1 0,1,0"``).
    ndim : int
        Spatial axes of the input: 1 audio, 2 image, 3 volume.
    sample_rate : float, optional
        Samples per second of audio; needed by frequencies and times (``5ms``).
    spacing : tuple of float, optional
        Sample spacing per spatial axis in millimetres; needed by ``1.5mm``.
    normalize : bool
        Divide the weights by their sum (refused for zero-sum kernels and
        for impulse responses, whose sum is not their loudness).
    channels : int, optional
        The input's channels, which an ``ir:`` response with several
        channels is laid onto (see :mod:`convcli.kernels.impulse`); None:
        as many as the response has.
    ir_norm : {"energy", "peak", "none"}
        The level an ``ir:`` response is given: unit energy (the default),
        its largest tap 1, or as recorded.
    memory_budget : int or str, optional
        Bytes the run may use (``--memory-budget``; None: half the available
        memory): a kernel file's size and every kernel's weights are held to
        what it allows (:class:`~convcli.kernels.files.KernelBudget`), a file
        before its weights are read.

    Raises
    ------
    convcli.errors.UsageError
        With ``subject`` the spec (or the kernel file) and the reason.

    Examples
    --------
    >>> resolve("[[1, 2, 1]]", ndim=2).weights[0].shape
    (1, 3)
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError("the kernel spec is empty", subject=repr(spec) if isinstance(spec, str) else "-k")
    if ndim not in (1, 2, 3):
        raise ParameterError(f"must be 1, 2 or 3 spatial axes, not {shown(ndim)}", subject="ndim")
    if spacing is not None:
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != ndim or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise ParameterError(f"needs {ndim} positive numbers, got {spacing}", subject="spacing")
    if sample_rate is not None and not (np.isfinite(sample_rate) and sample_rate > 0):
        raise ParameterError(f"must be a positive number, not {shown(sample_rate)}", subject="sample_rate")

    budget = files.KernelBudget.within(Limits(memory_budget=memory_budget).memory_budget)
    kernel = _resolve(spec, ndim=ndim, sample_rate=sample_rate, spacing=spacing, budget=budget, channels=channels,
                      ir_norm=ir_norm)
    _check_size(kernel, spec, budget)
    if normalize and kernel.causal:
        raise UsageError("divides by the kernel's sum, which is not an impulse response's loudness (a sum of -33 "
                         "would turn the sound upside down); impulse responses are levelled by --ir-norm (energy by "
                         "default)", subject="--normalize")
    if normalize and kernel.operator is None:  # a rank filter or a pool has no sum to divide by
        subject = _file_subject(spec) or spec
        kernel = Kernel(
            spec=kernel.spec,
            name=kernel.name,
            weights=tuple(normalized(w, subject=subject) for w in kernel.weights),
            combine=kernel.combine,
            range_default=kernel.range_default,
            description=kernel.description,
        )
    return kernel


def resolve_all(
    specs: Sequence[str],
    *,
    ndim: int,
    sample_rate: float | None = None,
    spacing: tuple[float, ...] | None = None,
    normalize: bool = False,
    memory_budget: int | str | None = None,
) -> list[Kernel]:
    """Resolve repeated ``-k`` specs, in the order they are applied."""
    if isinstance(specs, str):
        specs = [specs]
    if not specs:
        raise UsageError("no kernel given (use -k NAME, -k FILE or -k MATRIX)", subject="-k")
    return [
        resolve(s, ndim=ndim, sample_rate=sample_rate, spacing=spacing, normalize=normalize,
                memory_budget=memory_budget) for s in specs
    ]


def apply(
    x,
    spec,
    *,
    stride=1,
    padding="same",
    pad_mode=None,
    dilation=1,
    channel_axis=None,
    method="auto",
    precision=None,
    spatial_ndim=None,
    convolve: bool = False,
    sample_rate: float | None = None,
    spacing: tuple[float, ...] | None = None,
    normalize: bool = False,
):
    """Apply a kernel spec (a weighted kernel, a rank filter, morphology or a pool) to an array.

    ``convcli filter`` without the files: ``spec`` is what ``-k`` takes
    (``"gaussian:sigma=2"``, ``"median:5"``, ``"erode:disk=2"``,
    ``"maxpool:2"``, a kernel file, a matrix), or a list of them applied in
    order with the stride at the last, as ``-k`` repeated.  The keywords are
    :func:`convcli.correlate`'s; ``pad_mode`` None is each kernel's own
    border: reflect, or zeros for an impulse response.

    Parameters
    ----------
    x : array_like
        The samples.  The spatial axes are the last ``spatial_ndim`` axes
        that are not ``channel_axis``; by default every other axis, at most 3.
    spec : str or sequence of str
        The kernel, or kernels in order.
    sample_rate, spacing :
        Samples per second (for ``5ms``, frequencies) and the spacing of
        the spatial axes in mm (for ``1.5mm``).
    method : str
        A weighted kernel's strategy (see ``correlate``); a rank,
        morphology or pooling kernel takes ``direct`` (numpy) or ``opencv``
        and runs any other as ``auto``.

    Returns
    -------
    numpy.ndarray
        A weighted kernel's result is float32 (float64 for float64 input); a
        rank filter, erosion, dilation, opening, closing or max pool keeps
        the input's type; differences (tophat, gradient) and the average
        pool are float.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([0, 9, 0, 1, 2, 3, 2, 1], dtype=np.uint8)
    >>> apply(x, "median:3", pad_mode="replicate")
    array([0, 0, 1, 1, 2, 2, 2, 1], dtype=uint8)
    >>> apply(x, "maxpool:2")
    array([9, 1, 3, 2], dtype=uint8)
    """
    x = np.asarray(x)
    specs = [spec] if isinstance(spec, str) else list(spec)
    nd = spatial_ndim if spatial_ndim is not None else min(3, x.ndim - (channel_axis is not None))
    kernels = resolve_all(specs, ndim=nd, sample_rate=sample_rate, spacing=spacing, normalize=normalize)
    for i, kernel in enumerate(kernels):
        x = kernel.apply(x, convolve=convolve, stride=stride if i == len(kernels) - 1 else 1, padding=padding,
                         pad_mode=pad_mode, dilation=dilation, channel_axis=channel_axis, method=method,
                         precision=precision, spatial_ndim=nd)
    return x


def file_of(spec: str) -> str | None:
    """The file a spec reads (a kernel file, an ``ir:`` response), or None for names and inline matrices."""
    subject = _file_subject(spec)
    return None if subject is None else str(Path(subject).expanduser())


def _check_size(kernel: Kernel, spec: str, budget: files.KernelBudget) -> None:
    """Refuse a kernel with more weights than the budget allows: a file's as bad data, a typed spec's as usage."""
    subject = _file_subject(spec)
    if subject is None:
        budget.check_weights(sum(w.size for w in kernel.weights), spec)
        return
    with _file_errors():
        budget.check_weights(sum(w.size for w in kernel.weights), subject)


def _file_subject(spec: str) -> str | None:
    kind = classify(spec)
    if kind in ("file", "ir"):
        s = spec.strip()
        return s.split(":", 1)[1] if kind == "ir" or s.startswith("file:") else s
    return None


def _resolve(spec: str, *, ndim: int, sample_rate, spacing, budget: files.KernelBudget, channels=None,
             ir_norm="energy") -> Kernel:
    kind = classify(spec)
    s = spec.strip()
    if kind == "inline":
        w = fit_ndim(files.parse_inline(s, subject=spec), ndim, subject=spec)
        return Kernel(spec, "inline", (w,), description="inline matrix")
    if kind == "imagemagick":
        w = fit_ndim(files.parse_imagemagick(s, subject=spec), ndim, subject=spec)
        return Kernel(spec, "inline", (w,), description="inline matrix (ImageMagick syntax)")
    if kind == "ir" or (kind == "file" and Path(_file_subject(spec)).suffix.lower() in files.AUDIO_EXTS):
        return _impulse_response(spec, ndim=ndim, sample_rate=sample_rate, channels=channels, norm=ir_norm,
                                 budget=budget)
    if kind == "file":
        path = Path(_file_subject(spec)).expanduser()
        with _file_errors():
            defn = files.read_definition(path, subject=str(path), budget=budget)
            return _from_definition(spec, defn, ndim=ndim, subject=str(path))
    return _named(spec, ndim=ndim, sample_rate=sample_rate, spacing=spacing)


@contextlib.contextmanager
def _file_errors():
    """A kernel *file* that cannot serve is bad data (exit 1), like any other input file."""
    try:
        yield
    except (KernelFileError, KernelMismatch):  # a kernel that does not fit is the same mistake inline or in a file
        raise
    except UsageError as exc:
        raise KernelFileError(exc.message, subject=exc.subject) from None


def _impulse_response(spec: str, *, ndim: int, sample_rate, channels, norm: str,
                      budget: files.KernelBudget) -> Kernel:
    from . import impulse

    path = Path(_file_subject(spec)).expanduser()
    if ndim != 1:
        raise UsageError(
            f"an impulse response filters audio (1 spatial axis); this input has {ndim}", subject=str(path)
        )
    with _file_errors():
        return impulse.kernel(spec, path, sample_rate=sample_rate, channels=channels, norm=norm, budget=budget)


def _from_definition(spec: str, defn: files.Definition, *, ndim: int, subject: str) -> Kernel:
    weights = tuple(check_weights(w, subject=subject) for w in defn.weights_for(ndim, subject=subject))
    combine = defn.combine if len(weights) > 1 else "single"
    return Kernel(spec, defn.name, weights, combine=combine, range_default=defn.range_default,
                  description=defn.description)


def _named(spec: str, *, ndim: int, sample_rate, spacing) -> Kernel:
    from . import generators

    parsed = parse_named(spec)
    name = _known_spelling(parsed.name)
    parsed.name = name
    entry = library.find(name)
    if len(parsed.positional) == 1 and not parsed.keywords:
        # NAME:V picks the variant file NAME-V (laplacian:8 -> laplacian-8, sobel:x -> sobel-x)
        variant = library.find(_known_spelling(f"{name}-{parsed.positional[0]}"))
        if variant is not None:
            entry, name = variant, _known_spelling(f"{name}-{parsed.positional[0]}")
        elif entry is not None:
            raise UsageError(_no_parameters(name), subject=spec)
    elif entry is not None and parsed.has_params:
        raise UsageError(_no_parameters(name), subject=spec)
    if entry is not None:
        defn = files.read_definition(entry, subject=str(entry), name=name)
        return _from_definition(spec, defn, ndim=ndim, subject=spec)
    family = generators.lookup(name)
    if family is None:
        raise UsageError(_unknown_message(name), subject=spec)
    return family.resolve(spec, parsed, ndim=ndim, sample_rate=sample_rate, spacing=spacing)


def _known_spelling(name: str) -> str:
    """``Sobel`` -> ``sobel``: a name known only in another case means that one (names never differ by case alone)."""
    from . import generators

    if library.find(name) is not None or generators.lookup(name) is not None:
        return name
    lower = name.lower()
    if library.find(lower) is not None or generators.lookup(lower) is not None:
        return lower
    return name


def _no_parameters(name: str) -> str:
    """"takes no parameters", or the variants it does take (laplacian:4 when laplacian:8 exists)."""
    variants = sorted(other[len(name) + 1:] for other in library.entries() if other.startswith(name + "-"))
    if variants:
        return f"{name} takes one of {', '.join(f'{name}:{v}' for v in variants)}, or no parameter"
    return f"{name} takes no parameters"


def known_names() -> list[str]:
    """Every name a spec can start with: library files, families and their aliases."""
    from . import generators

    return sorted({*library.entries(), *generators.FAMILIES, *generators.ALIASES})


def _unknown_message(name: str) -> str:
    close = difflib.get_close_matches(name, known_names(), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"unknown kernel name{hint} (convcli kernels list shows them all)"
