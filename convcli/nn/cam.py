"""Class-activation maps: where in the photo the network saw its top class.

The last feature maps (1280 x 7 x 7) weighted by the top class's fully
connected weights give one 7x7 map whose mean is the class's logit (less its
bias).  It is stretched to 0..1, upsampled over the square the network saw,
coloured blue (nothing) to red (strongest) and blended with the photo; the
parts of the photo outside that square are dimmed, since the network never
saw them.
"""
from __future__ import annotations

import numpy as np

from .preprocess import Photo

BLEND = 0.5  # weight of the heat colours over the photo inside the crop
DIM = 0.35  # brightness left to the parts of the photo the network did not see
# The longest side of the picture drawn.  The map has 7x7 cells: a 24-megapixel
# copy says nothing more and cost 13 s and 2.2 GB (the classification: 1.75 s).
MAX_SIDE = 1600

# A "jet"-like ramp: dark blue, blue, cyan, yellow, red, dark red.
_RAMP_STOPS = np.array([0.0, 0.125, 0.375, 0.625, 0.875, 1.0])
_RAMP_COLOURS = np.array(
    [[0, 0, 128], [0, 0, 255], [0, 255, 255], [255, 255, 0], [255, 0, 0], [128, 0, 0]], dtype=np.float64
)


def normalise(cam: np.ndarray) -> np.ndarray:
    """Stretch a map linearly onto 0..1 (all zeros if it is flat)."""
    cam = np.asarray(cam, dtype=np.float64)
    low, high = cam.min(), cam.max()
    if not np.isfinite(low) or not np.isfinite(high) or high <= low:
        return np.zeros_like(cam)
    return (cam - low) / (high - low)


def heat_colours(values: np.ndarray) -> np.ndarray:
    """Colour values in 0..1 with the blue-to-red ramp: ``(..., 3)`` float RGB in 0..255."""
    v = np.clip(values, 0.0, 1.0)
    return np.stack([np.interp(v, _RAMP_STOPS, _RAMP_COLOURS[:, c]) for c in range(3)], axis=-1)


def overlay(photo: Photo, cam: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """The photo with the map laid over the crop the network saw: ``(H, W, 3)`` uint8.

    A photo longer than ``max_side`` on a side is drawn on a reduced copy
    (its shape then is the photo's scaled to fit, the crop box with it).
    """
    from PIL import Image

    photo = _bounded(photo, max_side)
    left, top, right, bottom = photo.box
    small = Image.fromarray(normalise(cam).astype(np.float32))
    heat = np.asarray(small.resize((right - left, bottom - top), Image.Resampling.BILINEAR), dtype=np.float32)
    out = photo.rgb.astype(np.float32) * np.float32(DIM)
    seen = photo.rgb[top:bottom, left:right].astype(np.float32)
    out[top:bottom, left:right] = (1 - BLEND) * seen + BLEND * heat_colours(heat)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _bounded(photo: Photo, max_side: int) -> Photo:
    """``photo`` itself if it fits ``max_side``, else a reduced copy with its crop box scaled alike."""
    from PIL import Image

    height, width = photo.rgb.shape[:2]
    if max(height, width) <= max_side:
        return photo
    scale = max_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # reducing_gap: Pillow first shrinks by whole factors (cheap), then resamples the rest.
    rgb = np.asarray(Image.fromarray(photo.rgb).resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0))
    left, top, right, bottom = photo.box
    box = tuple(int(round(v * scale)) for v in (left, top, right, bottom))
    return Photo(rgb, (box[0], box[1], max(box[2], box[0] + 1), max(box[3], box[1] + 1)))
