"""Transparency: how a chain of kernels treats an image's alpha channel (``--alpha``).

- ``auto`` (the default) premultiplies when every kernel of the chain
  smooths (all weights >= 0: box, gaussian, binomial, ...) and fills
  otherwise (edges, gradient magnitudes, emboss, signed kernels of your own);
- ``premultiply`` multiplies colour by alpha, filters both, then divides by
  the filtered alpha: transparent pixels never bleed their colour and edges
  soften.  A smoothing chain whose weights sum to ``s`` gives the alpha-weighted
  mean times ``s`` and the mean alpha, so it brightens as it does without alpha;
- fill (``auto`` with a kernel that does not smooth) keeps alpha as it was and
  filters the colour with every fully transparent pixel taking the colour of
  the nearest visible one, so hidden colour never bleeds and transparency
  adds no false edge of its own;
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
    """Whether every kernel is one array of weights >= 0 with a positive sum (a blur, however scaled)."""
    return all(k.combine == "single" and float(k.weights[0].min()) >= 0 and float(k.weights[0].sum()) > 0
               for k in kernels)


def resolve_mode(mode: str, kernels) -> str:
    """What ``--alpha mode`` does with this chain: premultiply, fill, keep or channel."""
    if mode == "auto":
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
        colour_out = chain.run(fill_hidden(colour, alpha <= 0, chain.axes))
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


def fill_hidden(colour: np.ndarray, hidden: np.ndarray, axes) -> np.ndarray:
    """``colour`` with every ``hidden`` pixel (a trailing axis of one) given its nearest visible pixel's colour.

    Nearest in Euclidean distance over the axes the kernels run along, in
    each image of a batch (a frame, a slice) on its own; an image with no
    visible pixel becomes black.
    """
    from scipy import ndimage

    if not hidden.any():
        return colour
    moved = np.array(axes.to_engine(colour), order="C")  # a copy: the caller's colour is needed as it was
    mask = axes.to_engine(hidden)[..., 0]
    k = axes.ndim
    shape = moved.shape[len(moved.shape) - 1 - k:-1]
    images = moved.reshape((-1,) + shape + moved.shape[-1:])
    masks = mask.reshape((-1,) + shape)
    for image, marks in zip(images, masks):
        if marks.all():
            image[...] = 0
        elif marks.any():
            nearest = ndimage.distance_transform_edt(marks, return_distances=False, return_indices=True)
            image[...] = image[tuple(nearest)]
    return axes.from_engine(images.reshape(moved.shape))
