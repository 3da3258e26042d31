"""From a photo to the network's input, exactly as the classifier expects it.

The photo arrives as upright 8-bit RGB (:func:`convcli.io.photo.read_photo`
decodes a file that way); then:

1. Centre-crop a square of side ``int(min(W, H) * 224 / 256)`` whose corner
   is ``((W - side + 1) // 2, (H - side + 1) // 2)``.
2. Resize to 224x224 with Pillow's bicubic filter.
3. ``x = (pixel - 127) / 128``, laid out ``(3, 224, 224)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INPUT_SIZE = 224
CROP_FRACTION = 224 / 256


@dataclass
class Photo:
    """An upright 8-bit RGB picture ``(H, W, 3)`` and the square the network looks at."""

    rgb: np.ndarray
    box: tuple[int, int, int, int]  # left, top, right, bottom of the centre crop

    @classmethod
    def of(cls, rgb: np.ndarray) -> "Photo":
        """The photo of these samples with the reference's centre crop."""
        return cls(rgb, center_crop_box(rgb.shape[1], rgb.shape[0]))


def center_crop_box(width: int, height: int, fraction: float = CROP_FRACTION) -> tuple[int, int, int, int]:
    """The centred square the classifier sees: ``(left, top, right, bottom)``."""
    side = max(int(min(width, height) * fraction), 1)
    left = (width - side + 1) // 2
    top = (height - side + 1) // 2
    return left, top, left + side, top + side


def network_input(photo: Photo, size: int = INPUT_SIZE) -> np.ndarray:
    """The crop resized to ``size`` x ``size`` (bicubic) and scaled to ``(pixel - 127) / 128``: ``(3, size, size)``."""
    from PIL import Image

    crop = Image.fromarray(photo.rgb).crop(photo.box)
    resized = np.asarray(crop.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    return ((resized - 127.0) / 128.0).transpose(2, 0, 1).copy()
