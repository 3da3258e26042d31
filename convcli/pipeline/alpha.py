"""Transparency: how a chain of kernels treats an image's alpha channel (``--alpha``).

- ``auto`` (the default) premultiplies when every kernel of the chain
  smooths (all weights >= 0: box, gaussian, binomial, ..., an average pool),
  filters alpha like a colour when the kernels select samples (rank filters,
  erosion, dilation, opening, closing, a max pool), and fills otherwise
  (edges, gradient magnitudes, emboss, signed kernels of your own, the
  morphological top-hats and gradient);
- ``premultiply`` multiplies colour by alpha, filters both, then divides by
  the filtered alpha: transparent pixels never bleed their colour and edges
  soften.  A smoothing chain whose weights sum to ``s`` gives the alpha-weighted
  mean times ``s`` and the mean alpha, so it brightens as it does without alpha;
- fill (``auto`` with a kernel that does not smooth) keeps alpha as it was and
  filters the colour with the visible colour spread under the fully
  transparent pixels around it (:func:`fill_hidden`), so hidden colour never
  bleeds and transparency adds no false edge of its own;
- ``keep`` filters the colour as stored and moves alpha onto the output grid
  unchanged;
- ``channel`` filters alpha like a colour (the chain runs on all channels, so
  this module is not involved).

Under ``auto``, ``premultiply`` with a smoothing chain, and ``keep``, a pixel
whose kernel window holds only opaque pixels (only visible ones when
filling) gets exactly the value the same image without alpha gets: the
chain's result on the colour as stored is taken there.  Beyond a constant
border (``--pad-mode zeros``, ``constant:V``) the image counts as opaque, so
opaque images behave at their edges as images without alpha do too.
"""
from __future__ import annotations

import numpy as np

# What each mode does once the chain is known (see resolve_mode).
SMOOTH, LITERAL, FILL, KEEP, CHANNEL = "premultiply", "premultiply (not a smoothing chain)", "fill", "keep", "channel"


def has_alpha(signal) -> bool:
    """Whether the signal's last channel is alpha (and there is colour beside it)."""
    return bool(signal.meta.get("alpha")) and signal.channel_axis is not None and signal.data.shape[-1] >= 2


def full_scale(dtype) -> float:
    """The value of an opaque alpha sample: 255, 65535, or 1.0 for float samples."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "iu" else 1.0


def smoothing(kernels) -> bool:
    """Whether every kernel is a blur: one array of weights >= 0 with a positive sum (however scaled), or an average pool."""
    return all(_smooths(k) for k in kernels)


def _smooths(kernel) -> bool:
    if kernel.operator is not None:  # its weights are only its footprint
        return getattr(kernel.operator, "pool", None) == "avg"
    return kernel.combine == "single" and float(kernel.weights[0].min()) >= 0 and float(kernel.weights[0].sum()) > 0


# Morphology that subtracts one result from another: an edge detector, under which alpha stays as it was.
DIFFERENCES = ("tophat", "blackhat", "gradient")


def selects(kernels) -> bool:
    """Whether a kernel picks samples instead of weighing them (rank filters, erosion and its kin, a max pool)."""
    return any(k.operator is not None and not _smooths(k) and not _differs(k) for k in kernels)


def _differs(kernel) -> bool:
    return getattr(kernel.operator, "operation", None) in DIFFERENCES


def smoothing_or_selecting(kernels) -> bool:
    return all(_smooths(k) or (k.operator is not None and not _differs(k)) for k in kernels)


def resolve_mode(mode: str, kernels) -> str:
    """What ``--alpha mode`` does with this chain: premultiply, fill, keep or channel."""
    if mode == "auto":
        if selects(kernels) and smoothing_or_selecting(kernels):
            # A median, an erosion or a max pool picks samples: alpha goes with them (a dilated
            # logo grows its opacity), and opaque pixels still equal the image without alpha.
            return CHANNEL
        return SMOOTH if smoothing(kernels) else FILL
    if mode == "premultiply":
        return SMOOTH if smoothing(kernels) else LITERAL
    return mode


def note(mode: str, requested: str, alpha: np.ndarray, full: float) -> str | None:
    """A line for the user when the default changes alpha: a smoothing chain softens transparent edges."""
    if requested != "auto" or mode != SMOOTH or bool(np.all(alpha >= full)):
        return None
    return ("alpha was filtered with the colour (premultiplied), so transparent edges soften; "
            "--alpha keep leaves it as it was")


def filter_with_alpha(x: np.ndarray, mode: str, chain, full: float) -> np.ndarray:
    """Filter colour and alpha of ``x`` (alpha last) as ``mode`` (from :func:`resolve_mode`) says.

    ``chain`` runs the kernels (``run``), moves samples onto the output grid
    unchanged (``grid``) and counts, per output sample, the marked samples
    its window covers (``footprint``); see :class:`convcli.pipeline.chain.Chain`.
    """
    colour = np.ascontiguousarray(x[..., :-1])
    alpha = x[..., -1:]
    if mode == LITERAL:
        return _literal(colour, alpha, chain, full)
    if mode == KEEP or (mode == SMOOTH and np.all(alpha >= full)) or (mode == FILL and np.all(alpha > 0)):
        return _stack(chain.run(colour), chain.grid(alpha), chain.work)
    if mode == SMOOTH:
        colour_out, alpha_out = _premultiplied(colour, alpha, chain, full)
        touched = chain.footprint(alpha < full)
    else:
        colour_out = chain.run(fill_hidden(colour, alpha <= 0, chain))
        alpha_out = chain.grid(alpha)
        touched = chain.footprint(alpha <= 0)
    # Where the window held only opaque (visible) pixels, the no-alpha result itself: equal to the last bit.
    clean = touched < 0.5
    np.copyto(colour_out, chain.run(colour), where=clean)
    return clear_transparent(_stack(colour_out, alpha_out, chain.work), full)


def clear_transparent(x: np.ndarray, full: float) -> np.ndarray:
    """``x`` (alpha last) with the colour of each pixel that rounds to fully transparent set to 0 (it shows nothing)."""
    x[x[..., -1] < _half_step(full), :-1] = 0
    return x


def _premultiplied(colour, alpha, chain, full: float):
    """The alpha-weighted mean colour times the chain's gain, and the mean alpha (sample units)."""
    work = chain.work
    a = alpha.astype(work) / work.type(full)
    weighted = chain.run(colour.astype(work) * a)
    cover = chain.run(a, constant=1.0)  # beyond a constant border the image is opaque
    gain = work.type(chain.gain)
    colour_out = np.zeros_like(weighted)
    np.divide(weighted * gain, cover, out=colour_out, where=cover * work.type(full) / gain >= _half_step(full))
    return colour_out, cover * work.type(full / chain.gain)


def _literal(colour, alpha, chain, full: float) -> np.ndarray:
    """Premultiply for a chain that does not smooth: the definition, as asked for (alpha filtered too)."""
    work = chain.work
    a = alpha.astype(work) / work.type(full)
    filtered = chain.run(np.concatenate([colour.astype(work) * a, alpha.astype(work)], axis=-1))
    weight = filtered[..., -1:] / work.type(full)
    colour_out = np.zeros_like(filtered[..., :-1])
    np.divide(filtered[..., :-1], weight, out=colour_out, where=filtered[..., -1:] > _half_step(full))
    return _stack(colour_out, filtered[..., -1:], work)


def _half_step(full: float) -> float:
    """Below this an alpha sample rounds to fully transparent."""
    return 0.5 if full > 1 else 0.5 / 255


def _stack(colour, alpha, work) -> np.ndarray:
    return np.concatenate([colour.astype(work, copy=False), alpha.astype(work, copy=False)], axis=-1)


def fill_hidden(colour: np.ndarray, hidden: np.ndarray, chain) -> np.ndarray:
    """``colour`` (in the compute type) with the colour under ``hidden`` pixels replaced by their visible neighbours'.

    ``hidden`` has a trailing axis of one.  The visible colour spreads
    outward one ring of pixels per step, each hidden pixel of the ring taking
    the mean of its already coloured neighbours (along the axes the kernels
    run on; each image of a batch on its own), for as many steps as the chain
    reaches: every window around a visible pixel then holds colour from
    visible pixels only.  Farther hidden pixels are black (no visible output
    sees them), and the colour hidden under transparency is never read.
    """
    axes = chain.axes
    moved = axes.to_engine(colour)
    visible = ~axes.to_engine(hidden)
    shape = moved.shape[moved.ndim - 1 - axes.ndim:-1]
    # The hidden colour is never read: zeroed in the samples' own type (one cheap pass), then converted.
    filled = np.ascontiguousarray(moved * visible, dtype=chain.work).reshape((-1,) + shape + moved.shape[-1:])
    known = np.ascontiguousarray(visible[..., 0]).reshape((-1,) + shape)
    if known.any() and not known.all():
        _spread(filled, known, chain.reach())
    return axes.from_engine(filled.reshape(moved.shape))


def _spread(filled: np.ndarray, known: np.ndarray, steps: int) -> None:
    """Colour rings of unknown pixels around the known ones, ``steps`` times, in place.

    ``known`` is (images, *axes), ``filled`` the same with colour last.  Only
    the ring's pixels are visited, so the cost follows the edge of the
    transparent region, not the image.
    """
    import itertools

    shape = np.array(known.shape)
    offsets = [np.array((0,) + o) for o in itertools.product((-1, 0, 1), repeat=known.ndim - 1) if any(o)]
    grown = known.copy()
    for offset in offsets:  # every pixel next to a known one
        grown[_shifted(offset, known.shape)] |= known[_shifted(-offset, known.shape)]
    ring = np.argwhere(grown & ~known)
    for _ in range(steps):
        if not len(ring):
            return
        sums = np.zeros((len(ring), filled.shape[-1]), dtype=filled.dtype)
        counts = np.zeros(len(ring), dtype=filled.dtype)
        beyond = []
        for offset in offsets:
            near = ring + offset
            inside = np.flatnonzero(np.all((near >= 0) & (near < shape), axis=1))
            at = tuple(near[inside].T)
            have = known[at]
            sums[inside[have]] += filled[at][have]
            counts[inside[have]] += 1
            beyond.append(near[inside[~have]])
        where = tuple(ring.T)
        filled[where] = sums / counts[:, None]
        known[where] = True
        after = np.concatenate(beyond)
        flat = np.unique(np.ravel_multi_index(tuple(after.T), known.shape)) if len(after) else np.zeros(0, np.intp)
        ring = np.column_stack(np.unravel_index(flat, known.shape)) if len(flat) else np.zeros((0, known.ndim), int)
        ring = ring[~known[tuple(ring.T)]]


def _shifted(offset: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """The part of an array of ``shape`` that a shift by ``offset`` lands on."""
    return tuple(slice(max(o, 0), n + min(o, 0)) for o, n in zip(offset, shape))
